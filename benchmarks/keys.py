"""Cost of cache-key code digests and of building a pipeline, per task.

Run from the repository root::

    python -m benchmarks.keys            # 10,000-task fan-out, 1,000 and 10,000 functions
    python -m benchmarks.keys --quick    # small sizes, for the smoke test

What is measured (one process, ``time.perf_counter``; µs = microseconds):

* digests: :func:`asyncflow._digest.code_digest` over

  - a fan-out: ``functools.partial(fit, ticker=t, cfg={...})`` for ``n`` tickers, where
    ``fit`` calls two helpers and reads a constant of a module generated into a real
    temporary file and imported (the README's pattern);
  - ``n`` distinct functions generated into one such module, each calling a shared helper
    and reading a constant.

  "cold" is the first pass over a freshly imported module (every walk and bytecode digest
  computed), "warm" the second pass (cached walks checked against their bindings).
* build: registering the fan-out with ``pipeline.task(partial(...), name=...)`` and
  ``pipeline.validate()``, in µs per task; and the bytes per task the validated
  definition holds (tracemalloc, partials included) at ``memory_n`` tasks.

:func:`measure` and :func:`measure_build` return the rows as dicts, for
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import itertools
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncflow
from asyncflow._digest import code_digest

__all__ = ["main", "measure", "measure_build"]

_count = itertools.count()

FANOUT_MODULE = """
RATE = 0.1
WINDOWS = {"short": 3, "long": 12}

def scale(x, factor=2):
    return x * factor * RATE

def smooth(series, window):
    return [sum(series[i:i + window]) / window for i in range(len(series))]

def fit(ticker, cfg):
    series = [scale(x) for x in range(10)]
    return {"ticker": ticker, "fit": smooth(series, WINDOWS[cfg["window"]])}
"""

DISTINCT_HEAD = """
RATE = 0.1

def helper(x):
    return x * RATE
"""

DISTINCT_FUNCTION = """
def task_{i}(x):
    return helper(x) + {i}
"""


def _import(directory: Path, source: str) -> ModuleType:
    name = f"_keys_bench_{next(_count)}"
    (directory / f"{name}.py").write_text(source, encoding="utf-8")
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _passes(callables: Sequence[Callable[..., Any]]) -> tuple[float, float]:
    """Seconds for a first (cold) and a second (warm) pass of code_digest over ``callables``."""
    times = []
    for _ in range(2):
        gc.collect()
        start = time.perf_counter()
        for fn in callables:
            code_digest(fn)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def measure(sizes: Sequence[int] = (1_000, 10_000), fanout: int = 10_000) -> list[dict[str, Any]]:
    """Code-digest cost per task: one row per case.

    Args:
        sizes: numbers of distinct functions generated into one module.
        fanout: number of partials of one function.

    Returns:
        ``[{"case": str, "n": int, "cold_us_per_task": float, "warm_us_per_task": float,
        "loaded_modules": int}, ...]``, the fan-out first.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        try:
            mod = _import(Path(tmp), FANOUT_MODULE)
            tasks = [
                functools.partial(mod.fit, ticker=f"T{i}", cfg={"window": "short"}) for i in range(fanout)
            ]
            cold, warm = _passes(tasks)
            rows.append(_row("partial fan-out of one function", fanout, cold, warm))
            for n in sizes:
                body = "".join(DISTINCT_FUNCTION.format(i=i) for i in range(n))
                mod = _import(Path(tmp), DISTINCT_HEAD + body)
                cold, warm = _passes([getattr(mod, f"task_{i}") for i in range(n)])
                rows.append(_row("distinct functions in one module", n, cold, warm))
        finally:
            sys.path.remove(tmp)
    return rows


def _row(case: str, n: int, cold: float, warm: float) -> dict[str, Any]:
    return {
        "case": case,
        "n": n,
        "cold_us_per_task": cold / n * 1e6,
        "warm_us_per_task": warm / n * 1e6,
        "loaded_modules": len(sys.modules),
    }


def _fit(ticker: str, window: int = 3) -> dict[str, Any]:
    return {"ticker": ticker, "window": window}


def _build(n: int) -> asyncflow.Pipeline:
    """The README's fan-out: ``pipeline.task(functools.partial(fit, ticker=t), name=f"fit_{t}")``."""
    pipeline = asyncflow.Pipeline("keys-bench")
    for i in range(n):
        pipeline.task(functools.partial(_fit, ticker=f"T{i}"), name=f"fit_T{i}")
    pipeline.validate()
    return pipeline


def measure_build(n: int = 10_000, memory_n: int = 100_000) -> list[dict[str, Any]]:
    """Cost of registering and validating a ``partial`` fan-out of ``n`` tasks.

    Returns:
        ``[{"n": int, "build_us_per_task": float, "memory_n": int,
        "definition_bytes_per_task": float}]``: the time is the best of three builds;
        the bytes are what tracemalloc sees still allocated once a ``memory_n``-task
        pipeline is validated (its partials and names included), divided by ``memory_n``.
    """
    best = float("inf")
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        _build(n)
        best = min(best, time.perf_counter() - start)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pipeline = _build(memory_n)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del pipeline
    return [
        {
            "n": n,
            "build_us_per_task": best / n * 1e6,
            "memory_n": memory_n,
            "definition_bytes_per_task": (after - before) / memory_n,
        }
    ]


def table(rows: list[dict[str, Any]], builds: list[dict[str, Any]]) -> str:
    """The Markdown tables of :func:`measure` and :func:`measure_build` rows."""
    lines = [
        "| code digest | n | cold µs/task | warm µs/task | loaded modules |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['n']:,} | {r['cold_us_per_task']:.2f} | {r['warm_us_per_task']:.2f} "
            f"| {r['loaded_modules']:,} |"
        )
    lines += ["", "| build (partial fan-out) | n | µs/task | B/task at n |", "|---|---:|---:|---:|"]
    for b in builds:
        lines.append(
            f"| register + validate | {b['n']:,} | {b['build_us_per_task']:.2f} "
            f"| {b['definition_bytes_per_task']:.0f} at {b['memory_n']:,} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the tables; ``--quick`` uses small sizes. Returns the exit code (0)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keys", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, for smoke tests)")
    args = parser.parse_args(argv)
    if args.quick:
        rows, builds = measure(sizes=(50,), fanout=100), measure_build(n=100, memory_n=1_000)
    else:
        rows, builds = measure(), measure_build()
    print(textwrap.dedent(table(rows, builds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

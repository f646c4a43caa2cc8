"""Run-time fan-out against a static one: what a mapped instance costs over a declared task.

Run from the repository root::

    python -m benchmarks.mapping                  # 100,000 instances, both backends
    python -m benchmarks.mapping --n 10000        # smaller
    python -m benchmarks.mapping --quick          # 300 (smoke test)

Two pipelines with the same shape and the same no-op work, built and run in one process:

* ``static``: a root task returning ``0`` and ``n`` tasks declared one by one (a loop over
  ``pipeline.task``), each taking the root's result and returning its index;
* ``mapped``: a root task returning ``list(range(n))`` and one task mapped over it with
  ``asyncflow.each``, run as ``n`` instances that each return their item.

Both end in a task that takes every result (a list in the mapped pipeline, a fan-in of
``n`` parameters is not declarable, so the static one ends at the leaves). Rows, µs per
task (wall time / (n + 1)), medians of ``--reps`` interleaved repetitions:

* ``build``: declaring and validating the pipeline (the mapped one declares 2 tasks, so
  its row is the static one's cost a mapped pipeline does not pay);
* ``cold``: ``pipeline.run(workdir=fresh)`` with every default on (checkpoints through
  the file store's group commit, ``log=True``);
* ``warm``: the same working directory again: every task (instance) cached;
* ``in memory``: ``checkpoints=False, log=False``, the runner's own overhead.

The target (issue #10): a mapped instance costs at most 2x a static task, per row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

import asyncflow

from .defaults_on import fan_out, timed

__all__ = ["main", "mapped", "measure", "static", "table"]


def static(n: int) -> asyncflow.Pipeline:
    """A root and ``n`` statically declared leaves, each a closure returning its index
    (:func:`benchmarks.defaults_on.fan_out`, the fan-out the defaults-on table measures)."""
    return fan_out(n)


def mapped(n: int) -> asyncflow.Pipeline:
    """A root returning ``list(range(n))`` and one task mapped over it (``n`` instances)."""
    p = asyncflow.Pipeline("mapped")

    @p.task
    async def root() -> list[int]:
        return list(range(n))

    @p.task(inputs={"i": asyncflow.each("root")})
    async def leaf(i: int) -> int:
        return i

    p.validate()
    return p


def measure(backend: str, n: int, reps: int) -> list[dict[str, Any]]:
    """``[{"backend", "shape", "row", "n", "us_per_task"}]`` for both pipelines.

    Raises:
        AssertionError: a run did not do what its row says (all succeeded, or all cached).
    """
    times: dict[tuple[str, str], list[float]] = {}
    tasks = n + 1
    built: dict[str, asyncflow.Pipeline] = {}  # the last one built of each shape

    def add(shape: str, row: str, seconds: float) -> None:
        times.setdefault((shape, row), []).append(seconds)

    def run(p: asyncflow.Pipeline, **kwargs: Any) -> asyncflow.RunResult:
        return anyio.run(lambda: p.run(**kwargs), backend=backend)

    def checked(p: asyncflow.Pipeline, state: asyncflow.TaskState, **kwargs: Any) -> Callable[[], None]:
        def go() -> None:
            result = run(p, **kwargs)
            assert result.counts == {state: tasks}, result.counts

        return go

    for _ in range(reps):
        for shape, make in (("static", static), ("mapped", mapped)):
            start = time.perf_counter()
            p = built[shape] = make(n)
            add(shape, "build", time.perf_counter() - start)
            with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
                workdir = Path(tmp) / "work"
                add(shape, "cold", timed(checked(p, asyncflow.TaskState.SUCCEEDED, workdir=workdir)))
                add(shape, "warm", timed(checked(p, asyncflow.TaskState.CACHED, workdir=workdir)))
            add(
                shape,
                "in memory",
                timed(checked(p, asyncflow.TaskState.SUCCEEDED, checkpoints=False, log=False)),
            )
    return [
        {
            "backend": backend,
            "shape": shape,
            "row": row,
            "n": tasks,
            "us_per_task": statistics.median(ts) / tasks * 1e6,
        }
        for (shape, row), ts in times.items()
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table per backend: µs per task of each shape and the mapped/static ratio."""
    out = []
    for backend in sorted({r["backend"] for r in rows}):
        us = {(r["shape"], r["row"]): r["us_per_task"] for r in rows if r["backend"] == backend}
        n = next(r["n"] for r in rows if r["backend"] == backend)
        out.append(f"### mapped vs static fan-out, {backend}, {n:,} tasks\n")
        out.append("| row | static µs/task | mapped µs/task | mapped / static |")
        out.append("|---|---:|---:|---:|")
        for row in ("cold", "warm", "in memory", "build"):
            s, m = us[("static", row)], us[("mapped", row)]
            out.append(f"| {row} | {s:.1f} | {m:.1f} | {m / s:.2f}x |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the tables (and the raw rows as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mapping", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="instances / static tasks (default 100,000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, interleaved (default 3)")
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="n=300, 1 repetition")
    parser.add_argument("--json", type=Path, help="also write the raw rows to this file")
    args = parser.parse_args(argv)
    n, reps = (300, 1) if args.quick else (args.n, args.reps)
    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)
    rows = [row for backend in backends for row in measure(backend, n, reps)]
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

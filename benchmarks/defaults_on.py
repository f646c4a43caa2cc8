"""What a user pays with the defaults on: checkpoints, logging, building, cached reruns.

Run from the repository root::

    python -m benchmarks.defaults_on                 # 10,000 tasks, both backends
    python -m benchmarks.defaults_on --n 100000      # the 100,000-task fan-out
    python -m benchmarks.defaults_on --quick         # 300 tasks (smoke test)

One process per call, one fresh temporary working directory per cold run, medians of
``--reps`` interleaved repetitions. The pipeline is a fan-out: one root task and ``n``
leaves that each take the root's result and return their index (no-op work), defined
with closures as a ``.py`` file would. Rows (µs per task = wall time / tasks):

* ``cold``: ``pipeline.run(workdir=fresh)`` with every default on (checkpoints through
  the file store's group commit, ``log=True``); every checkpoint is durable before its
  task is reported succeeded;
* ``sequential fsync loop``: the reference the target is stated against: the same number
  of checkpoint-sized JSON files, each written, flushed, fsynced and renamed in turn;
* ``warm``: the same workdir again, every task cached;
* ``in memory``: ``checkpoints=False, log=False``; ``anyio task per node``: one anyio
  task per node in one task group (no dependency tracking) — the floor of scheduling;
* ``log=True, no sink`` / ``log=False``: in-memory runs, logging on and off (the library
  default has asyncflow disabled in loguru);
* ``CLI sinks``: in-memory run with the command line's sinks added (console at INFO to
  a null stream, ``run.log`` at DEBUG), the cost per task above ``log=False`` (the
  median of each rep's difference from its own ``log=False`` run, measured just
  before; so are the ``log=True`` ratio and the no-op listener's cost), and above
  ``no-op listener``: a ``log=False`` run with one listener that does nothing, i.e. the
  events alone (the CLI's run record and progress display make them anyway);
* ``build + run, random DAG``: declaring and validating a random DAG of as many no-op
  tasks (:func:`benchmarks.dags.build_pipeline`, ``after=`` edges) and running it in
  memory (``checkpoints=False``, logging at its default), end to end.

Ratios compare rows of the same backend measured in the same process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from loguru import logger

import asyncflow
from asyncflow._log_sinks import add_cli_sinks

from .dags import build_pipeline, make_dag

__all__ = ["fan_out", "main", "measure", "table", "timed"]


def fan_out(n: int) -> asyncflow.Pipeline:
    """A root and ``n`` leaves, each leaf a closure returning its index."""
    p = asyncflow.Pipeline("fan_out")

    @p.task
    async def root() -> int:
        return 0

    def leaf(i: int) -> Callable[[int], Coroutine[Any, Any, int]]:
        async def task(root: int) -> int:
            return i + root

        return task

    for i in range(n):
        p.task(leaf(i), name=f"t{i}")
    p.validate()
    return p


def fsync_loop(directory: Path, n: int) -> None:
    """Per task: write a checkpoint-sized JSON file to a temporary name, fsync, rename."""
    key = "0" * 64
    for i in range(n):
        target = directory / f"t{i}.json"
        tmp = directory / f".t{i}.json.{secrets.token_hex(4)}.tmp"
        text = f'{{"task": "t{i}", "key": "{key}", "at": {time.time()!r}, "result": {i}}}\n'
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)


async def _taskgroup(n: int) -> None:
    async def noop() -> int:
        return 0

    async with anyio.create_task_group() as tg:
        for _ in range(n + 1):
            tg.start_soon(noop)


def _ignore(event: asyncflow.Event) -> None:
    """A listener that does nothing: what building and dispatching the events costs."""


def _build_and_run(dag: Any, backend: str) -> None:
    pipeline = build_pipeline(dag, name=f"random_{secrets.token_hex(4)}")
    result = anyio.run(lambda: pipeline.run(checkpoints=False), backend=backend)
    assert result.ok


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes, after a garbage collection (so that one run's garbage is not
    the next one's cost)."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


PAIRED = ("log=True, no sink", "no-op listener", "CLI sinks")
"""The rows measured right after ``log=False`` in each rep, and read as their difference
from it, rep by rep (so that a slow minute of the machine moves both)."""


def measure(backend: str, n: int, reps: int) -> list[dict[str, Any]]:
    """The rows above for one backend: ``[{"backend", "row", "n", "median_s", "us_per_task"}]``.

    Raises:
        AssertionError: a run did not do what the row says (not all succeeded or cached).
    """
    p = fan_out(n)
    tasks = n + 1
    dag = make_dag("random", tasks)
    times: dict[str, list[float]] = {}

    def add(row: str, seconds: float) -> None:
        times.setdefault(row, []).append(seconds)

    def run(**kwargs: Any) -> asyncflow.RunResult:
        return anyio.run(lambda: p.run(**kwargs), backend=backend)

    def checkpointed(workdir: Path, state: asyncflow.TaskState) -> Callable[[], None]:
        def go() -> None:
            result = run(workdir=workdir)
            assert result.counts == {state: tasks}, result.counts

        return go

    for _ in range(reps):
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            workdir = Path(tmp) / "work"
            add("cold", timed(checkpointed(workdir, asyncflow.TaskState.SUCCEEDED)))
            add("warm", timed(checkpointed(workdir, asyncflow.TaskState.CACHED)))
            loop_dir = Path(tmp) / "loop"
            loop_dir.mkdir()
            add("sequential fsync loop", timed(lambda: fsync_loop(loop_dir, tasks)))  # noqa: B023
        add("in memory", timed(lambda: run(checkpoints=False, log=False)))
        add("anyio task per node", timed(lambda: anyio.run(_taskgroup, n, backend=backend)))
        add("build + run, random DAG", timed(lambda: _build_and_run(dag, backend)))
        # The logging rows back to back, so that each rep's differences are paired.
        add("log=False", timed(lambda: run(checkpoints=False, log=False)))
        add("log=True, no sink", timed(lambda: run(checkpoints=False, log=True)))
        add("no-op listener", timed(lambda: run(checkpoints=False, log=False, listeners=[_ignore])))
        with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
            stderr, sys.stderr = sys.stderr, null
            logger.enable("asyncflow")
            sinks = add_cli_sinks(level="INFO", log_file=Path(tmp) / "run.log")
            try:
                add("CLI sinks", timed(lambda: run(checkpoints=False, log=True)))
            finally:
                for sink in sinks:
                    logger.remove(sink)
                logger.disable("asyncflow")
                sys.stderr = stderr
    base = times["log=False"]
    return [
        {
            "backend": backend,
            "row": row,
            "n": tasks,
            "median_s": statistics.median(ts),
            "us_per_task": statistics.median(ts) / tasks * 1e6,
            # The median of each rep's difference from that rep's log=False run (µs/task).
            "over_log_false_us": (
                statistics.median(t - b for t, b in zip(ts, base, strict=True)) / tasks * 1e6
                if row in PAIRED
                else None
            ),
        }
        for row, ts in times.items()
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table per backend with the ratios the targets are stated in."""
    out = []
    for backend in sorted({r["backend"] for r in rows}):
        by = {r["row"]: r for r in rows if r["backend"] == backend}
        us = {k: v["us_per_task"] for k, v in by.items()}
        n = next(iter(by.values()))["n"]
        out.append(f"### defaults on, {backend}, {n:,} tasks\n")
        out.append("| what | µs/task | ratio |")
        out.append("|---|---:|---|")
        out.append(
            f"| cold, checkpoints on | {us['cold']:.1f} | "
            f"{us['sequential fsync loop'] / us['cold']:.2f}x faster than the fsync loop |"
        )
        out.append(
            f"| sequential fsync loop | {us['sequential fsync loop']:.1f} | baseline of the row above |"
        )
        out.append(
            f"| warm, all cached | {us['warm']:.1f} | {us['warm'] / us['in memory']:.1f}x the in-memory run |"
        )
        floor = us["anyio task per node"]
        out.append(f"| in memory | {us['in memory']:.1f} | {us['in memory'] / floor:.2f}x anyio |")
        out.append(f"| anyio task per node | {us['anyio task per node']:.1f} | scheduling floor |")
        # Paired differences; results saved before they were kept: differences of medians.
        over = {
            k: v["over_log_false_us"] if v.get("over_log_false_us") is not None else us[k] - us["log=False"]
            for k, v in by.items()
        }
        log_on = 1 + over["log=True, no sink"] / us["log=False"]
        out.append(f"| log=True, no sink | {us['log=True, no sink']:.1f} | {log_on:.2f}x log=False |")
        out.append(f"| log=False | {us['log=False']:.1f} | |")
        extra, events = over["CLI sinks"], over["no-op listener"]
        out.append(
            f"| CLI sinks (console + run.log) | {us['CLI sinks']:.1f} | +{extra:.1f} µs/task "
            f"(+{extra - events:.1f} over the no-op listener) |"
        )
        out.append(
            f"| no-op listener | {us['no-op listener']:.1f} | "
            f"+{events:.1f} µs/task: the events any listener costs |"
        )
        e2e = us["build + run, random DAG"]
        out.append(f"| build + run, random DAG (in memory) | {e2e:.1f} | end to end (target ≤ 15 µs) |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the tables (and the raw rows as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.defaults_on", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--n", type=int, default=10_000, help="leaves of the fan-out (default 10,000)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="300 tasks, 1 repetition")
    parser.add_argument("--json", action="store_true", help="also print the raw rows as JSON")
    args = parser.parse_args(argv)
    n, reps = (300, 1) if args.quick else (args.n, args.reps)
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    rows = [row for backend in backends for row in measure(backend, n, reps)]
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

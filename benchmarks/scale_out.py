"""Scale-out benchmark: one fan-out of CPU-bound tasks on each executor.

Run from the repository root (needs ``pip install -e '.[dask]'`` for the Dask rows)::

    python -m benchmarks.scale_out                      # 8 tasks of ~0.2 s, 3 repetitions
    python -m benchmarks.scale_out --tasks 16 --seconds 0.5 --workers 4 --reps 5

The pipeline: ``N`` independent tasks, each ``~--seconds`` of pure-Python arithmetic
(:func:`burn`, calibrated at start-up on this machine), and one task that adds their
results. The same task function runs, with no change but the run's ``executor``:

* ``event loop``: ``async def`` tasks that call it directly, blocking the loop (one
  process, one core: the baseline);
* ``threads``: plain ``def`` tasks on the default executor (worker threads, which share
  the GIL);
* ``processes``: plain ``def`` tasks on ``ProcessExecutor(max_workers=W)``;
* ``dask``: plain ``def`` tasks on ``DaskExecutor`` connected to a ``LocalCluster`` of
  ``W`` single-threaded worker processes, started once before the timed runs.

Each executor gets one untimed warm-up run (starting worker processes, importing modules
there), then ``--reps`` rounds run every executor once in turn (so that the machine's
noise hits them alike); the table reports the median wall time of a run (in seconds), the
speed-up over the event loop, and the efficiency (speed-up per worker).
Start-up costs are reported separately: the first (cold) run of the process pool and the
time to start the Dask cluster. Runs use ``checkpoints=False, log=False``. Everything runs
on asyncio (Dask's client needs it). Output: the table on stdout, and with ``--out FILE``
also as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

import asyncflow


def burn(iterations: int) -> int:
    """Pure-Python integer arithmetic, ``iterations`` rounds: holds the GIL throughout."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return total


async def burn_on_loop(iterations: int) -> int:
    """:func:`burn` called from a coroutine: it blocks the event loop while it runs."""
    return burn(iterations)


def add(values: list[int]) -> int:
    """The fan-in: the sum of every task's result."""
    return sum(values)


def calibrate(seconds: float) -> int:
    """The number of :func:`burn` rounds that take about ``seconds`` here (best of 3)."""
    probe = 200_000
    best = min(_timed(burn, probe) for _ in range(3))
    return max(1, round(probe * seconds / best))


def _timed(fn: Callable[[int], Any], arg: int) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def build(tasks: int, iterations: int, *, on_loop: bool) -> asyncflow.Pipeline:
    """The fan-out of ``tasks`` CPU tasks and their fan-in."""
    pipeline = asyncflow.Pipeline("scale_out")
    names = [f"burn{i}" for i in range(tasks)]
    fn = burn_on_loop if on_loop else burn
    for name in names:
        pipeline.task(functools.partial(fn, iterations=iterations), name=name)
    pipeline.task(add, name="add", inputs={"values": names})
    return pipeline


@dataclass(frozen=True)
class Row:
    """One executor's figures; times in seconds."""

    executor: str
    workers: int
    median_s: float
    runs_s: list[float]
    speedup: float = 0.0
    efficiency: float = 0.0


async def run_once(pipeline: asyncflow.Pipeline, executor: asyncflow.Executor | None, expected: int) -> float:
    """The wall time of one run, in seconds; checks its result."""
    start = time.perf_counter()
    result = await pipeline.run(executor=executor, checkpoints=False, log=False)
    elapsed = time.perf_counter() - start
    result.raise_for_failures()
    assert result.tasks["add"].result == expected, result.tasks["add"].result
    return elapsed


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate, warm every executor up, then time ``args.reps`` rounds, each running
    every executor once in turn, so that the machine's noise hits all of them alike."""
    iterations = calibrate(args.seconds)
    task_s = min(_timed(burn, iterations) for _ in range(3))
    expected = burn(iterations) * args.tasks
    on_loop = build(args.tasks, iterations, on_loop=True)
    plain = build(args.tasks, iterations, on_loop=False)
    startup: dict[str, float] = {}
    w = args.workers
    variants: list[tuple[str, int, asyncflow.Pipeline, asyncflow.Executor | None]] = [
        ("event loop (async def, blocking)", 1, on_loop, None),
        ("threads (default executor)", 1, plain, None),
        (f"processes (ProcessExecutor, {w} workers)", w, plain, asyncflow.ProcessExecutor(max_workers=w)),
    ]
    print(f"{args.tasks} tasks of {task_s:.3f} s ({iterations} rounds), {args.reps} rounds", file=sys.stderr)
    async with contextlib.AsyncExitStack() as stack:
        if not args.no_dask:
            address = await _start_dask(args, stack, startup)
            if address is not None:
                dask = asyncflow.DaskExecutor(address=address)
                variants.append((f"dask (LocalCluster, {w} workers)", w, plain, dask))
        for name, _, pipeline, executor in variants:
            cold = await run_once(pipeline, executor, expected)
            print(f"  warm-up {name}: {cold:.3f} s", file=sys.stderr)
            if executor is not None and executor.name == "processes":
                startup["processes: first run (starts the workers)"] = cold
        runs: list[list[float]] = [[] for _ in variants]
        for _ in range(args.reps):
            for times, (_, _, pipeline, executor) in zip(runs, variants, strict=True):
                times.append(await run_once(pipeline, executor, expected))
    base = statistics.median(runs[0])
    rows = []
    for times, (name, workers, _, _) in zip(runs, variants, strict=True):
        median = statistics.median(times)
        rows.append(Row(name, workers, median, times, base / median, base / median / workers))
        print(f"  {name}: median {median:.3f} s", file=sys.stderr)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "tasks": args.tasks,
        "task_s": task_s,
        "serial_s": task_s * args.tasks,
        "reps": args.reps,
        "rows": [asdict(r) for r in rows],
        "startup_s": startup,
    }


async def _start_dask(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack, startup: dict[str, float]
) -> str | None:
    """Start a LocalCluster of ``args.workers`` single-threaded worker processes, closed
    with ``stack``; its scheduler's address, or ``None`` without dask installed."""
    try:
        import distributed
    except ImportError:
        print("  dask: skipped (pip install 'asyncflow[dask]')", file=sys.stderr)
        return None
    start = time.perf_counter()
    cluster = await stack.enter_async_context(
        distributed.LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            asynchronous=True,
        )
    )
    startup[f"dask: start a LocalCluster of {args.workers} workers"] = time.perf_counter() - start
    return str(cluster.scheduler_address)


def render(report: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"{report['tasks']} CPU-bound tasks of {report['task_s']:.3f} s each "
        f"({report['serial_s']:.2f} s of work), median of {report['reps']} runs; {report['machine']}.",
        "",
        "| executor | workers | wall time (s) | speed-up | speed-up per worker |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['executor']} | {row['workers']} | {row['median_s']:.2f} | {row['speedup']:.2f}x "
            f"| {row['efficiency']:.2f} |"
        )
    if report["startup_s"]:
        lines += ["", "Start-up, not in the table: " + "; ".join(
            f"{what} {seconds:.2f} s" for what, seconds in report["startup_s"].items()
        ) + "."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the benchmark, print the table (and write ``--out``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_out", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tasks", type=int, default=8, help="CPU tasks in the fan-out (default 8)")
    parser.add_argument("--seconds", type=float, default=0.2, help="seconds of work per task (default 0.2)")
    parser.add_argument("--workers", type=int, default=2, help="processes / Dask workers (default 2)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per executor (default 3)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask rows")
    parser.add_argument("--out", type=Path, help="also write the raw figures to this JSON file")
    args = parser.parse_args(argv)
    report = anyio.run(bench, args)
    print(render(report))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""asyncflow's benchmark suite: runner overhead, parallel sleeps, checkpoints, import time.

Run from the repository root::

    python -m benchmarks.run                   # full suite, both backends (~8 minutes here)
    python -m benchmarks.run --quick           # smallest size, few repetitions (< 1 minute)
    python -m benchmarks.run --backend trio --sizes 1000 10000 --reps 3 --out /tmp/bench

What is measured (every number in one process, per anyio backend, baselines in the same
event loop right next to asyncflow, repetitions interleaved):

* overhead: no-op tasks (``async def noop(): return None``) on the DAG shapes of
  :mod:`benchmarks.dags`, run with ``pipeline.run(checkpoints=False, log=False)`` and again
  with one no-op event listener; baselines: one anyio task per node in one task group (no
  dependency tracking), one ``asyncio.create_task`` per node (asyncio only), and a
  sequential loop awaiting every node's coroutine in topological order. Peak memory per
  task is measured in a separate run under :mod:`tracemalloc`.
* sleeps: every task sleeps 20 ms; the wall time is compared with the critical path
  (depth x 20 ms) and with a measured chain of that many sleeps.
* checkpoints: no-op tasks with checkpoints on (fresh temporary workdir: every task writes
  a JSON file; then a rerun where every task is loaded from its checkpoint), against a
  plain synchronous write-flush-fsync-rename loop in the same process.
* peers: Dask's threaded scheduler, when ``dask`` is importable (Prefect is only detected).
* import: wall time of ``python -c "import asyncflow"`` and ``python -m asyncflow --help``
  in subprocesses, and the slowest imports from ``python -X importtime``.

Outputs in ``--out``: ``results.json`` (raw times), ``results.md`` (the tables, also
printed) and ``overhead.png`` (µs per task against DAG size; needs matplotlib).
All times are in seconds unless a name says ``us`` (microseconds) or ``ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

import asyncflow

from . import defaults_on, keys
from .dags import Dag, build_pipeline, make_dag, noop, task_name

Factory = Callable[[], Awaitable[Any]]
"""A zero-argument coroutine function: one run of a runner on one DAG."""

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = (1_000, 10_000, 100_000)
OVERHEAD_SHAPES = ("chain", "wide", "diamonds", "random")
SLEEP_SECONDS = 0.02
SLEEP_TASKS = 1_000
SLEEP_SHAPES = ("flat", "diamonds", "random")
CHECKPOINT_MAX_N = 1_000
PEER_MAX_N = 10_000
MEMORY_ALL_RUNNERS_SHAPE = "random"

AF, AF_LISTENER = "asyncflow", "asyncflow+listener"
TASKGROUP, CREATE_TASK, SEQUENTIAL = "anyio-task-per-node", "create_task-per-node", "sequential-loop"
BASELINES = (TASKGROUP, CREATE_TASK, SEQUENTIAL)
OTHERS = (AF_LISTENER, *BASELINES)
X, DASH, NONE = "\N{MULTIPLICATION SIGN}", "\N{EN DASH}", "\N{EM DASH}"
"""Characters of the Markdown tables: multiplication sign, en dash (ranges), em dash (no value)."""


@dataclass
class Settings:
    """What to run; built from the command line by :func:`parse_args`."""

    sizes: tuple[int, ...]
    backends: tuple[str, ...]
    out: Path
    quick: bool = False
    reps: int | None = None
    shapes: tuple[str, ...] = OVERHEAD_SHAPES
    seed: int = 0
    sleep_tasks: int = SLEEP_TASKS
    sleep_seconds: float = SLEEP_SECONDS
    kinds: tuple[str, ...] = ("overhead", "defaults", "keys", "sleeps", "checkpoints", "peers", "import")
    import_reps: int = 7
    from_json: Path | None = None

    def reps_for(self, n: int) -> int:
        """Timed repetitions for a DAG of ``n`` nodes (the median is reported)."""
        if self.reps is not None:
            return self.reps
        if self.quick:
            return 3
        return 7 if n <= 1_000 else 5 if n <= 10_000 else 3


# -- small helpers ------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the final tables."""
    print(message, file=sys.stderr, flush=True)


def summarize(times: Sequence[float], n: int) -> dict[str, Any]:
    """Median, min and max of ``times`` (seconds) and the median in µs per task."""
    median = statistics.median(times)
    return {
        "times_s": list(times),
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "us_per_task": median / n * 1e6,
    }


def check_result(result: Any, n: int, *, cached: bool = False) -> None:
    """Raise unless ``result`` is an asyncflow run in which all ``n`` tasks succeeded (or were cached)."""
    if not isinstance(result, asyncflow.RunResult):
        return
    want = asyncflow.TaskState.CACHED if cached else asyncflow.TaskState.SUCCEEDED
    if len(result.tasks) != n or result.counts.get(want, 0) != n:
        raise RuntimeError(f"benchmark run did not complete as expected: {result.counts}")


# -- runners ------------------------------------------------------------------------------


def asyncflow_factory(
    pipeline: asyncflow.Pipeline, workdir: Path, *, listener: bool = False, checkpoints: bool = False
) -> Factory:
    """One ``pipeline.run(log=False)`` in ``workdir``, with or without one no-op listener."""
    listeners = [lambda event: None] if listener else []

    async def run() -> asyncflow.RunResult:
        return await pipeline.run(workdir=workdir, checkpoints=checkpoints, log=False, listeners=listeners)

    return run


def taskgroup_factory(fn: Callable[[], Coroutine[Any, Any, Any]], n: int) -> Factory:
    """Baseline: one anyio task per node in one task group, no dependency tracking."""

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(fn)

    return run


def create_task_factory(fn: Callable[[], Coroutine[Any, Any, Any]], n: int) -> Factory:
    """Baseline (asyncio only): ``asyncio.create_task`` per node, then await them all."""

    async def run() -> None:
        tasks = [asyncio.create_task(fn()) for _ in range(n)]
        for t in tasks:
            await t

    return run


def sequential_factory(fn: Callable[[], Awaitable[Any]], dag: Dag) -> Factory:
    """Baseline: await each node's coroutine in topological order, keeping its result."""

    async def run() -> list[Any]:
        results: list[Any] = [None] * dag.n
        for i in range(dag.n):
            results[i] = await fn()
        return results

    return run


def overhead_runners(
    pipeline: asyncflow.Pipeline, dag: Dag, backend: str, workdir: Path
) -> dict[str, Factory]:
    """asyncflow, asyncflow with a listener, and the baselines that apply to ``backend``."""
    runners = {
        AF: asyncflow_factory(pipeline, workdir),
        AF_LISTENER: asyncflow_factory(pipeline, workdir, listener=True),
        TASKGROUP: taskgroup_factory(noop, dag.n),
        SEQUENTIAL: sequential_factory(noop, dag),
    }
    if backend == "asyncio":
        runners[CREATE_TASK] = create_task_factory(noop, dag.n)
    return runners


# -- measuring ----------------------------------------------------------------------------


def time_runners(
    backend: str, runners: dict[str, Factory], reps: int, n: int, *, warmup: bool
) -> dict[str, list[float]]:
    """Wall times in seconds of each runner, ``reps`` times, interleaved, in one event loop.

    A full garbage collection runs before every timed run (not timed); the collector
    stays enabled during the run. Each asyncflow result is checked after its timing.
    """

    async def main() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {name: [] for name in runners}
        if warmup:
            for factory in runners.values():
                check_result(await factory(), n)
        for _ in range(reps):
            for name, factory in runners.items():
                gc.collect()
                t0 = time.perf_counter()
                result = await factory()
                times[name].append(time.perf_counter() - t0)
                check_result(result, n)
                del result
        return times

    return anyio.run(main, backend=backend)


def peak_memory(backend: str, factory: Factory) -> int:
    """Peak bytes that one run allocates (tracemalloc) above what was allocated before it.

    The returned result is still alive at the peak, so asyncflow's ``RunResult`` counts.
    """

    async def main() -> int:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            result = await factory()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        del result
        return peak - before

    return anyio.run(main, backend=backend)


def timed_build(
    dag: Dag, fn: Callable[[], Awaitable[Any]] = noop, **kwargs: Any
) -> tuple[asyncflow.Pipeline, float]:
    """Build (register and validate) the pipeline of ``dag``; returns it and the seconds it took."""
    t0 = time.perf_counter()
    pipeline = build_pipeline(dag, fn, **kwargs)
    return pipeline, time.perf_counter() - t0


def build_memory(dag: Dag) -> int:
    """Bytes a validated pipeline of ``dag`` keeps allocated (tracemalloc), per whole pipeline."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pipeline = build_pipeline(dag)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del pipeline
    return after - before


# -- the benchmark kinds ------------------------------------------------------------------


def bench_overhead(settings: Settings, workdir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """No-op tasks on every shape and size: times, µs per task, peak memory. Returns (overhead, build)."""
    rows: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    for n in settings.sizes:
        for shape in settings.shapes:
            dag = make_dag(shape, n, seed=settings.seed)
            pipeline, build_s = timed_build(dag)
            build = {
                "shape": shape,
                "n": n,
                "edges": dag.edges,
                "build_s": build_s,
                "build_us_per_task": build_s / n * 1e6,
            }
            if shape == MEMORY_ALL_RUNNERS_SHAPE:
                build["definition_bytes_per_task"] = build_memory(dag) / n
            builds.append(build)
            depth = dag.depth()
            for backend in settings.backends:
                runners = overhead_runners(pipeline, dag, backend, workdir)
                times = time_runners(backend, runners, settings.reps_for(n), n, warmup=n <= 10_000)
                for name, ts in times.items():
                    row: dict[str, Any] = {
                        "backend": backend,
                        "shape": shape,
                        "n": n,
                        "edges": dag.edges,
                        "depth": depth,
                        "runner": name,
                    }
                    row.update(summarize(ts, n))
                    if name == AF or (shape == MEMORY_ALL_RUNNERS_SHAPE and name != AF_LISTENER):
                        peak = peak_memory(backend, runners[name])
                        row["peak_bytes"] = peak
                        row["peak_bytes_per_task"] = peak / n
                    rows.append(row)
                af = next(r for r in rows[::-1] if r["runner"] == AF)
                log(
                    f"[overhead] {backend:7} {shape:8} n={n:<6} asyncflow {af['us_per_task']:6.2f} µs/task, "
                    + ", ".join(
                        f"{r['runner']} {r['us_per_task']:.2f}" for r in rows[-len(times) :] if r is not af
                    )
                )
            del pipeline
    return rows, builds


def make_sleep_task(seconds: float) -> Callable[[], Coroutine[Any, Any, None]]:
    """A no-argument coroutine function that sleeps ``seconds``."""

    async def sleep_task() -> None:
        await anyio.sleep(seconds)

    return sleep_task


def critical_chain_factory(sleep_task: Callable[[], Awaitable[None]], depth: int) -> Factory:
    """The floor for a DAG of ``depth`` levels of sleeps: ``depth`` sleeps one after another."""

    async def run() -> None:
        for _ in range(depth):
            await sleep_task()

    return run


def bench_sleeps(settings: Settings, workdir: Path) -> list[dict[str, Any]]:
    """Tasks that each sleep (20 ms): wall time against the critical path, per shape and backend."""
    rows: list[dict[str, Any]] = []
    n = settings.sleep_tasks
    sleep_task = make_sleep_task(settings.sleep_seconds)
    reps = settings.reps if settings.reps is not None else 2 if settings.quick else 5
    for shape in SLEEP_SHAPES:
        dag = make_dag(shape, n, seed=settings.seed)
        pipeline = build_pipeline(dag, sleep_task)
        depth = dag.depth()
        for backend in settings.backends:
            runners: dict[str, Factory] = {
                AF: asyncflow_factory(pipeline, workdir),
                AF_LISTENER: asyncflow_factory(pipeline, workdir, listener=True),
                "critical-chain": critical_chain_factory(sleep_task, depth),
            }
            if shape == "flat":
                runners[TASKGROUP] = taskgroup_factory(sleep_task, n)
                if backend == "asyncio":
                    runners[CREATE_TASK] = create_task_factory(sleep_task, n)
            times = time_runners(backend, runners, reps, n, warmup=True)
            chain = statistics.median(times["critical-chain"])
            for name, ts in times.items():
                row: dict[str, Any] = {
                    "backend": backend,
                    "shape": shape,
                    "n": n,
                    "depth": depth,
                    "runner": name,
                }
                row.update(summarize(ts, n))
                row["critical_path_s"] = depth * settings.sleep_seconds
                row["wall_over_critical"] = row["median_s"] / row["critical_path_s"]
                row["wall_over_chain"] = row["median_s"] / chain
                rows.append(row)
            af = next(r for r in rows[::-1] if r["runner"] == AF)
            log(
                f"[sleeps]   {backend:7} {shape:8} n={n} depth={depth}: "
                f"asyncflow {af['median_s'] * 1e3:.1f} ms = {af['wall_over_critical']:.3f}x critical path"
            )
    return rows


def sync_checkpoint_loop(directory: Path, n: int) -> None:
    """The plain synchronous reference: per task, write a checkpoint-sized JSON file to a
    temporary name, flush, fsync, ``os.replace`` it over ``t<i>.json``."""
    key = "0" * 64
    for i in range(n):
        name = task_name(i)
        target = directory / f"{name}.json"
        tmp = directory / f".{name}.json.{secrets.token_hex(4)}.tmp"
        text = f'{{"task": "{name}", "cache_key": "{key}", "saved_at": {time.time()!r}, "result": null}}\n'
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)


def bench_checkpoints(settings: Settings, workdir: Path) -> list[dict[str, Any]]:
    """No-op tasks with checkpoints on (cold: all written; warm: all loaded) against the sync loop."""
    rows: list[dict[str, Any]] = []
    sizes = [n for n in settings.sizes if n <= CHECKPOINT_MAX_N] or [min(settings.sizes)]
    if settings.quick:
        sizes = sizes[:1]
    for n in sizes:
        dag = make_dag("random", n, seed=settings.seed)
        pipeline = build_pipeline(dag, checkpoint=True)
        reps = settings.reps if settings.reps is not None else 2 if settings.quick else 3
        for backend in settings.backends:
            times = checkpoint_times(backend, pipeline, n, reps, workdir)
            sync = statistics.median(times["sync write-fsync-rename loop"])
            for name, ts in times.items():
                row: dict[str, Any] = {"backend": backend, "shape": "random", "n": n, "runner": name}
                row.update(summarize(ts, n))
                row["over_sync_loop"] = row["median_s"] / sync
                rows.append(row)
            log(
                f"[ckpt]     {backend:7} n={n}: "
                + ", ".join(f"{r['runner']} {r['us_per_task']:.0f} µs/task" for r in rows[-len(times) :])
            )
    return rows


def checkpoint_times(
    backend: str, pipeline: asyncflow.Pipeline, n: int, reps: int, workdir: Path
) -> dict[str, list[float]]:
    """Seconds per repetition of: a cold checkpointed run (fresh directory), a warm rerun
    (everything cached), a run without checkpoints, and :func:`sync_checkpoint_loop`."""
    names = (
        "asyncflow cold (writes)",
        "asyncflow warm (all cached)",
        "asyncflow, checkpoints off",
        "sync write-fsync-rename loop",
    )
    times: dict[str, list[float]] = {name: [] for name in names}

    async def main() -> None:
        for rep in range(reps):
            cold = Path(tempfile.mkdtemp(dir=workdir, prefix=f"ckpt-{backend}-{rep}-"))
            gc.collect()
            t0 = time.perf_counter()
            result = await pipeline.run(workdir=cold, checkpoints=True, log=False)
            times[names[0]].append(time.perf_counter() - t0)
            check_result(result, n)
            gc.collect()
            t0 = time.perf_counter()
            result = await pipeline.run(workdir=cold, checkpoints=True, log=False)
            times[names[1]].append(time.perf_counter() - t0)
            check_result(result, n, cached=True)
            shutil.rmtree(cold)
            gc.collect()
            t0 = time.perf_counter()
            result = await pipeline.run(workdir=workdir, checkpoints=False, log=False)
            times[names[2]].append(time.perf_counter() - t0)
            check_result(result, n)
            plain = Path(tempfile.mkdtemp(dir=workdir, prefix=f"sync-{backend}-{rep}-"))
            gc.collect()
            t0 = time.perf_counter()
            sync_checkpoint_loop(plain, n)
            times[names[3]].append(time.perf_counter() - t0)
            shutil.rmtree(plain)

    anyio.run(main, backend=backend)
    return times


def noop_sync(*upstream: Any) -> None:
    """The no-op for peers that call plain functions with their upstream results."""
    return None


def bench_peers(settings: Settings) -> list[dict[str, Any]]:
    """Dask's threaded scheduler on the same DAGs (no-op functions), if dask is importable."""
    rows: list[dict[str, Any]] = []
    if importlib.util.find_spec("prefect") is None:
        rows.append({"peer": "prefect", "status": "skipped: not installed"})
    else:
        rows.append({"peer": "prefect", "status": "skipped: installed, but this suite has no Prefect runner"})
    if importlib.util.find_spec("dask") is None:
        rows.append({"peer": "dask", "status": "skipped: not installed"})
        return rows
    from dask.threaded import get

    for n in [n for n in settings.sizes if n <= PEER_MAX_N]:
        for shape in settings.shapes:
            dag = make_dag(shape, n, seed=settings.seed)
            graph = {task_name(i): (noop_sync, *map(task_name, ups)) for i, ups in enumerate(dag.upstream)}
            keys = [task_name(i) for i in range(n)]
            get(graph, keys)  # warm-up
            times = []
            for _ in range(settings.reps_for(n)):
                gc.collect()
                t0 = time.perf_counter()
                get(graph, keys)
                times.append(time.perf_counter() - t0)
            row: dict[str, Any] = {
                "peer": "dask",
                "version": importlib.metadata.version("dask"),
                "status": "ok",
                "scheduler": "threaded",
                "shape": shape,
                "n": n,
            }
            row.update(summarize(times, n))
            rows.append(row)
            log(f"[peers]    dask threaded {shape:8} n={n}: {row['us_per_task']:.1f} µs/task")
    return rows


def command_times(argv: Sequence[str], reps: int) -> dict[str, Any]:
    """Wall seconds of running ``argv`` in a subprocess, ``reps`` times (after one warm-up)."""
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, cwd=REPO, check=False)
        times.append(time.perf_counter() - t0)
    return {
        "argv": list(argv),
        "returncode": proc.returncode,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
    }


def slowest_imports(top: int = 8) -> list[dict[str, Any]]:
    """Where ``import asyncflow`` spends its time: ``python -X importtime`` self times (µs in the
    output, ms here) summed per top-level package (``anyio``, ``loguru``, ``asyncio``, ...)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import asyncflow"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    per_package: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            root = m.group(2).split(".")[0]
            per_package[root] = per_package.get(root, 0) + int(m.group(1))
    ranked = sorted(per_package.items(), key=lambda kv: -kv[1])[:top]
    return [{"package": name, "self_ms": us / 1e3} for name, us in ranked]


def bench_import(settings: Settings) -> dict[str, Any]:
    """Start-up cost: bare interpreter, ``import asyncflow``, ``python -m asyncflow --help``."""
    reps = settings.import_reps
    py = sys.executable
    result: dict[str, Any] = {
        "python -c pass": command_times([py, "-c", "pass"], reps),
        "python -c 'import asyncflow'": command_times([py, "-c", "import asyncflow"], reps),
        "python -m asyncflow --help": command_times([py, "-m", "asyncflow", "--help"], reps),
        "slowest_imports": slowest_imports(),
    }
    log(
        "[import]   "
        + ", ".join(f"{k}: {v['median_s'] * 1e3:.0f} ms" for k, v in result.items() if k != "slowest_imports")
    )
    return result


# -- reporting ----------------------------------------------------------------------------


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or an em dash for a missing one."""
    return NONE if x is None else f"{x:.{digits}f}"


def find(rows: Iterable[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    """The first row whose fields equal ``where``."""
    return next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None)


def overhead_table(rows: list[dict[str, Any]], backend: str) -> str:
    """One row per shape and size: µs per task of every runner, ratios, peak memory per task."""
    out = []
    cells = sorted(
        {(r["shape"], r["n"]) for r in rows if r["backend"] == backend},
        key=lambda c: (OVERHEAD_SHAPES.index(c[0]) if c[0] in OVERHEAD_SHAPES else 99, c[1]),
    )
    for shape, n in cells:
        by = {name: find(rows, backend=backend, shape=shape, n=n, runner=name) for name in (AF, *OTHERS)}
        af = by[AF]
        assert af is not None
        us = {name: fmt(r["us_per_task"]) if r else NONE for name, r in by.items()}
        ratio = {name: fmt(af["median_s"] / r["median_s"]) if r else NONE for name, r in by.items()}
        mem = {name: fmt(r.get("peak_bytes_per_task"), 0) if r else NONE for name, r in by.items()}
        span = f"{fmt(af['min_s'] / n * 1e6)}{DASH}{fmt(af['max_s'] / n * 1e6)}"
        times = [f"**{us[AF]}** ({span})", *(us[name] for name in OTHERS)]
        ratios = [ratio[TASKGROUP], ratio[CREATE_TASK], ratio[SEQUENTIAL]]
        out.append([shape, n, *times, *ratios, mem[AF], mem[TASKGROUP]])
    headers = [
        "shape", "n", f"asyncflow µs/task (min{DASH}max)", "+1 listener", "anyio task/node",
        "create_task/node", "sequential", "÷ task/node", "÷ create_task", "÷ sequential",
        "peak B/task", "peak B/task (task/node)",
    ]  # fmt: skip
    return md_table(headers, out)


def sleep_table(rows: list[dict[str, Any]], backend: str) -> str:
    """Wall time of 20 ms sleeps against the critical path."""
    out = [
        [
            r["shape"],
            r["n"],
            r["depth"],
            fmt(r["critical_path_s"] * 1e3, 0),
            r["runner"],
            f"{fmt(r['median_s'] * 1e3, 1)} ({fmt(r['min_s'] * 1e3, 1)}{DASH}{fmt(r['max_s'] * 1e3, 1)})",
            f"**{fmt(r['wall_over_critical'], 3)}**",
            fmt(r["wall_over_chain"], 3),
        ]
        for r in rows
        if r["backend"] == backend
    ]
    return md_table(
        [
            "shape",
            "n",
            "depth",
            "critical path ms",
            "runner",
            f"wall ms (min{DASH}max)",
            "wall / critical path",
            "wall / measured chain",
        ],
        out,
    )


def checkpoint_table(rows: list[dict[str, Any]], backend: str) -> str:
    """Checkpointed no-op runs against the synchronous loop."""
    out = [
        [
            r["n"],
            r["runner"],
            f"{fmt(r['median_s'] * 1e3, 1)} ({fmt(r['min_s'] * 1e3, 1)}{DASH}{fmt(r['max_s'] * 1e3, 1)})",
            fmt(r["us_per_task"], 1),
            fmt(r["over_sync_loop"]),
        ]
        for r in rows
        if r["backend"] == backend
    ]
    return md_table(["n", "runner", f"wall ms (min{DASH}max)", "µs/task", "÷ sync loop"], out)


def build_table(rows: list[dict[str, Any]]) -> str:
    """Cost of defining the pipelines (register every task, validate)."""
    out = [
        [
            r["shape"],
            r["n"],
            r["edges"],
            fmt(r["build_us_per_task"], 1),
            fmt(r.get("definition_bytes_per_task"), 0),
        ]
        for r in rows
    ]
    return md_table(["shape", "n", "edges", "build µs/task", "pipeline B/task"], out)


def peer_table(rows: list[dict[str, Any]], overhead: list[dict[str, Any]]) -> str:
    """Peers' µs per task next to asyncflow's (asyncio backend when measured)."""
    out = []
    for r in rows:
        if r.get("status") != "ok":
            out.append([r["peer"], NONE, NONE, r["status"], NONE])
            continue
        af = find(overhead, backend="asyncio", shape=r["shape"], n=r["n"], runner=AF) or find(
            overhead, shape=r["shape"], n=r["n"], runner=AF
        )
        out.append(
            [
                f"{r['peer']} {r['version']} ({r['scheduler']})",
                r["shape"],
                r["n"],
                fmt(r["us_per_task"], 1),
                fmt(af["median_s"] / r["median_s"], 3) if af else NONE,
            ]
        )
    return md_table(["peer", "shape", "n", "µs/task", "asyncflow ÷ peer"], out)


def import_table(data: dict[str, Any]) -> str:
    """Start-up times, and the slowest top-level imports."""
    base = data["python -c pass"]["median_s"]
    out = [
        [f"`{k}`", fmt(v["median_s"] * 1e3, 0), fmt((v["median_s"] - base) * 1e3, 0), v["returncode"]]
        for k, v in data.items()
        if k != "slowest_imports"
    ]
    slow = ", ".join(f"{s['package']} {s['self_ms']:.0f} ms" for s in data["slowest_imports"])
    return md_table(["command", "wall ms (median)", "minus bare interpreter ms", "exit code"], out) + (
        "\n\nImport time by package (`python -X importtime -c 'import asyncflow'`, "
        f"self times summed per top-level package): {slow}"
    )


def target_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the issue's targets per backend: target, measured value, whether it holds."""
    checks: list[dict[str, Any]] = []
    over, sleeps = results["overhead"], results["sleeps"]
    ms = results["meta"]["sleep_seconds"] * 1e3

    def add(backend: str, target: str, value: float, holds: bool, shown: str) -> None:
        checks.append({"backend": backend, "target": target, "value": value, "holds": holds, "shown": shown})

    for backend in results["meta"]["backends"]:
        sizes = sorted({r["n"] for r in over if r["backend"] == backend and r["shape"] == "random"})
        for n in sizes:
            af = find(over, backend=backend, shape="random", n=n, runner=AF)
            tg = find(over, backend=backend, shape="random", n=n, runner=TASKGROUP)
            if n >= 10_000 and af:
                add(
                    backend,
                    f"random {n}: ≤ 10 µs per no-op task",
                    af["us_per_task"],
                    af["us_per_task"] <= 10,
                    f"{af['us_per_task']:.2f} µs",
                )
            if n >= 10_000 and af and tg:
                ratio = af["median_s"] / tg["median_s"]
                add(
                    backend,
                    f"random {n}: ≤ 0.5{X} anyio task per node",
                    ratio,
                    ratio <= 0.5,
                    f"{ratio:.2f}{X}",
                )
        if len(sizes) >= 2:
            lo = find(over, backend=backend, shape="random", n=sizes[0], runner=AF)
            hi = find(over, backend=backend, shape="random", n=sizes[-1], runner=AF)
            assert lo and hi
            ratio = hi["us_per_task"] / lo["us_per_task"]
            add(
                backend,
                f"random {sizes[-1]} within 1.5{X} of {sizes[0]} per task",
                ratio,
                ratio <= 1.5,
                f"{ratio:.2f}{X}",
            )
        worst = None
        for r in over:
            if r["backend"] == backend and r["shape"] == "chain" and r["runner"] == AF:
                seq = find(over, backend=backend, shape="chain", n=r["n"], runner=SEQUENTIAL)
                if seq:
                    ratio = r["median_s"] / seq["median_s"]
                    worst = max(worst or 0.0, ratio)
        if worst is not None:
            add(
                backend,
                f"chain: ≤ 3{X} the sequential loop per task (worst size)",
                worst,
                worst <= 3,
                f"{worst:.1f}{X}",
            )
        for r in sleeps:
            if r["backend"] == backend and r["runner"] == AF:
                add(
                    backend,
                    f"{r['shape']} {r['n']} {X} {ms:g} ms sleeps: ≤ 1.1{X} critical path",
                    r["wall_over_critical"],
                    r["wall_over_critical"] <= 1.1,
                    f"{r['wall_over_critical']:.3f}{X}",
                )
        big = find(over, backend=backend, shape="random", n=max(sizes), runner=AF) if sizes else None
        if big and "peak_bytes_per_task" in big:
            b = big["peak_bytes_per_task"]
            add(backend, f"random {big['n']}: peak memory ≤ 2 KiB per task", b, b <= 2048, f"{b:.0f} B")
    imp = results.get("import")
    if imp:
        t = imp["python -m asyncflow --help"]["median_s"]
        ok = imp["python -m asyncflow --help"]["returncode"] == 0
        add(
            NONE,
            "`python -m asyncflow --help` < 0.3 s",
            t,
            ok and t < 0.3,
            f"{t * 1e3:.0f} ms" + ("" if ok else " (failed)"),
        )
    return checks


def report(results: dict[str, Any]) -> str:
    """All tables as Markdown."""
    parts = [f"# asyncflow benchmark results\n\n{describe_meta(results['meta'])}"]
    checks = target_checks(results)
    parts.append(
        "## Targets\n\n"
        + md_table(
            ["backend", "target", "measured", "holds"],
            [[c["backend"], c["target"], c["shown"], "yes" if c["holds"] else "**no**"] for c in checks],
        )
    )
    backends = results["meta"]["backends"]
    ms = results["meta"]["sleep_seconds"] * 1e3
    if results["overhead"]:
        parts += [
            f"## No-op overhead, {backend}\n\nMedian µs per task (wall time / tasks); "
            "÷ columns: asyncflow's time divided by that baseline's; peak B/task: tracemalloc peak of "
            "one run above the memory in use before it.\n\n" + overhead_table(results["overhead"], backend)
            for backend in backends
        ]
    if results.get("defaults"):
        parts.append(
            "## Defaults on (checkpoints, logging, cached reruns)\n\n"
            "See benchmarks/defaults_on.py; ratios within one backend and one process.\n\n"
            + defaults_on.table(results["defaults"])
        )
    if results.get("keys"):
        parts.append(
            "## Cache keys and building\n\n"
            + keys.table(results["keys"]["digests"], results["keys"]["build"])
        )
    if results["sleeps"]:
        parts += [f"## {ms:g} ms sleeps, {b}\n\n" + sleep_table(results["sleeps"], b) for b in backends]
    if results["checkpoints"]:
        parts += [f"## Checkpoints, {b}\n\n" + checkpoint_table(results["checkpoints"], b) for b in backends]
    if results["build"]:
        parts.append("## Building the pipelines\n\n" + build_table(results["build"]))
    if results["peers"]:
        parts.append("## Peers (no-op functions)\n\n" + peer_table(results["peers"], results["overhead"]))
    if results["import"]:
        parts.append("## Start-up\n\n" + import_table(results["import"]))
    return "\n\n".join(parts) + "\n"


def describe_meta(meta: dict[str, Any]) -> str:
    """One paragraph: machine, versions, command."""
    return (
        f"Python {meta['python']} on {meta['platform']}, {meta['cpus']} CPUs; anyio {meta['anyio']}, "
        f"trio {meta.get('trio') or '—'}, asyncflow {meta['asyncflow']} (commit {meta['commit']}); "
        f"`{meta['command']}`; {meta['seconds']:.0f} s in all; 1-minute load average "
        f"{meta['load_average_at_start'][0]:.2f} at the start, "
        f"{meta['load_average_at_end'][0]:.2f} at the end."
    )


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """µs per task against DAG size, one panel per backend and shape; ``None`` without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        log("[plot]     matplotlib is not installed; no plot")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    over = results["overhead"]
    if not over:
        return None
    backends = results["meta"]["backends"]
    shapes = [s for s in OVERHEAD_SHAPES if any(r["shape"] == s for r in over)]
    fig, axes = plt.subplots(
        len(backends), len(shapes), figsize=(4 * len(shapes), 3.4 * len(backends)), squeeze=False, sharey=True
    )
    for row, backend in enumerate(backends):
        for col, shape in enumerate(shapes):
            ax = axes[row][col]
            for runner, color in zip((AF, *OTHERS), ("C0", "C1", "C2", "C3", "C4"), strict=True):
                pts = sorted(
                    (r["n"], r["us_per_task"])
                    for r in over
                    if r["backend"] == backend and r["shape"] == shape and r["runner"] == runner
                )
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        marker="o",
                        label=runner,
                        color=color,
                        linewidth=2.5 if runner == AF else 1.2,
                    )
            dask_pts = sorted(
                (r["n"], r["us_per_task"])
                for r in results["peers"]
                if r.get("status") == "ok" and r["shape"] == shape
            )
            if dask_pts:
                ax.plot(
                    *zip(*dask_pts, strict=True),
                    marker="s",
                    linestyle="--",
                    label="dask threaded (plain functions, no event loop)",
                    color="grey",
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{shape}, {backend}")
            ax.grid(True, which="both", alpha=0.3)
            if row == len(backends) - 1:
                ax.set_xlabel("tasks")
            if col == 0:
                ax.set_ylabel("µs per no-op task")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest size, 3 repetitions (< 1 minute)")
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: benchmarks/results, or benchmarks/results-quick with --quick)",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help=f"DAG sizes in tasks (default: {' '.join(map(str, DEFAULT_SIZES))}; --quick: the smallest)",
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions per measurement (default: by size)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random DAGs")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="FILE",
        help="measure nothing: redo the tables and plot of a results.json into --out",
    )
    parser.add_argument(
        "--sleep-ms", type=float, default=SLEEP_SECONDS * 1e3, help="sleep of each task in the sleep runs"
    )
    kinds = Settings.kinds
    parser.add_argument(
        "--kinds", nargs="+", choices=kinds, default=kinds, help="what to measure (default: everything)"
    )
    args = parser.parse_args(argv)
    sizes = tuple(sorted(args.sizes)) if args.sizes else DEFAULT_SIZES[:1] if args.quick else DEFAULT_SIZES
    if min(sizes) < 3 or (args.reps is not None and args.reps < 1):
        parser.error("sizes must be at least 3 and --reps at least 1")
    out = args.out or REPO / "benchmarks" / ("results-quick" if args.quick else "results")
    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)
    return Settings(
        sizes=sizes,
        backends=backends,
        out=out,
        quick=args.quick,
        reps=args.reps,
        seed=args.seed,
        sleep_tasks=min(SLEEP_TASKS, max(sizes)),
        sleep_seconds=args.sleep_ms / 1e3,
        kinds=tuple(k for k in kinds if k in args.kinds),
        import_reps=args.reps or (3 if args.quick else 7),
        from_json=args.from_json,
    )


def git(*args: str) -> str:
    """The output of ``git ARGS`` in the repository, or ``""`` without git or a repository."""
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def meta(settings: Settings, argv: Sequence[str] | None) -> dict[str, Any]:
    """Versions, machine and command line of this run."""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "asyncflow"):
        commit += " + uncommitted changes in asyncflow/"
    trio_version = None
    if importlib.util.find_spec("trio") is not None:
        import trio

        trio_version = trio.__version__
    args = " ".join(sys.argv[1:] if argv is None else argv)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "anyio": importlib.metadata.version("anyio"),
        "trio": trio_version,
        "asyncflow": asyncflow.__version__,
        "commit": commit,
        "command": f"python -m benchmarks.run {args}".strip(),
        "backends": list(settings.backends),
        "sizes": list(settings.sizes),
        "seed": settings.seed,
        "sleep_seconds": settings.sleep_seconds,
        "kinds": list(settings.kinds),
        "load_average_at_start": os.getloadavg(),
    }


def measure(settings: Settings, argv: Sequence[str] | None) -> dict[str, Any]:
    """Run every kind of measurement in ``settings.kinds``; the raw results."""
    started = time.perf_counter()
    results: dict[str, Any] = {"meta": meta(settings, argv)}
    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as tmp:
        workdir = Path(tmp)
        kinds: dict[str, Callable[[], Any]] = {
            "overhead": lambda: bench_overhead(settings, workdir),
            "sleeps": lambda: bench_sleeps(settings, workdir),
            "checkpoints": lambda: bench_checkpoints(settings, workdir),
            "peers": lambda: bench_peers(settings),
            "import": lambda: bench_import(settings),
            "defaults": lambda: [
                row
                for backend in settings.backends
                for row in defaults_on.measure(
                    backend, 300 if settings.quick else 10_000, 1 if settings.quick else settings.reps or 3
                )
            ],
            "keys": lambda: {
                "digests": keys.measure(sizes=(50,), fanout=100) if settings.quick else keys.measure(),
                "build": keys.measure_build(n=100, memory_n=1_000)
                if settings.quick
                else keys.measure_build(),
            },
        }
        for kind in settings.kinds:
            t0 = time.perf_counter()
            results[kind] = kinds[kind]()
            stages[kind] = time.perf_counter() - t0
    results["overhead"], results["build"] = results.get("overhead", ([], []))
    for kind in ("sleeps", "checkpoints", "peers", "defaults"):
        results.setdefault(kind, [])
    results.setdefault("keys", None)
    results.setdefault("import", None)
    results["meta"]["stage_seconds"] = stages
    results["meta"]["seconds"] = time.perf_counter() - started
    results["meta"]["load_average_at_end"] = os.getloadavg()
    results["targets"] = target_checks(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Measure (or load ``--from-json``), write ``results.json``, ``results.md`` and
    ``overhead.png`` into ``--out``, and print the tables."""
    settings = parse_args(argv)
    if settings.from_json is not None:
        results = json.loads(settings.from_json.read_text(encoding="utf-8"))
        results["targets"] = target_checks(results)
    else:
        results = measure(settings, argv)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = report(results)
    (settings.out / "results.md").write_text(text, encoding="utf-8")
    png = plot(results, settings.out / "overhead.png")
    print(text)
    log(f"wrote {settings.out / 'results.json'}, {settings.out / 'results.md'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

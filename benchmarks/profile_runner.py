"""Profile asyncflow's runner on no-op tasks: where does the per-task time go?

Run from the repository root::

    python -m benchmarks.profile_runner                       # random DAG, 10k tasks, both backends
    python -m benchmarks.profile_runner --shape chain --size 100000 --backend trio
    python -m benchmarks.profile_runner --tool pyinstrument   # needs pyinstrument

With cProfile (the default) it prints the functions with the most own time (``tottime``)
and writes ``profile-<backend>-<shape>-<size>.pstats`` into ``--out`` for
``python -m pstats`` or snakeviz. Timings under cProfile are inflated several times; read
them as proportions. The pipeline is built and run once untimed before the profiled runs.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

import asyncflow

from .dags import SHAPES, build_pipeline, make_dag


async def run_many(pipeline: asyncflow.Pipeline, workdir: Path, runs: int) -> float:
    """Run ``pipeline`` ``runs`` times without checkpoints, logs or listeners; seconds in all."""
    t0 = time.perf_counter()
    for _ in range(runs):
        result = await pipeline.run(workdir=workdir, checkpoints=False, log=False)
        if not result.ok:
            raise RuntimeError(f"profiled run failed: {result.counts}")
    return time.perf_counter() - t0


def profile_cprofile(pipeline: asyncflow.Pipeline, backend: str, runs: int, workdir: Path, out: Path) -> str:
    """Profile ``runs`` runs with cProfile; returns the report, writes the ``.pstats`` file to ``out``."""
    anyio.run(run_many, pipeline, workdir, 1, backend=backend)  # warm-up
    profiler = cProfile.Profile()
    gc.collect()

    async def main() -> float:
        profiler.enable()
        try:
            return await run_many(pipeline, workdir, runs)
        finally:
            profiler.disable()

    seconds = anyio.run(main, backend=backend)
    profiler.dump_stats(out)
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats("tottime")
    stats.print_stats(25)
    header = f"{runs} run(s) under cProfile: {seconds:.2f} s ({seconds / runs:.3f} s per run)\n"
    return header + buffer.getvalue()


def profile_pyinstrument(pipeline: asyncflow.Pipeline, backend: str, runs: int, workdir: Path) -> str:
    """Profile ``runs`` runs with pyinstrument's sampling profiler; returns its text report."""
    from pyinstrument import Profiler

    anyio.run(run_many, pipeline, workdir, 1, backend=backend)  # warm-up
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    gc.collect()
    with profiler:
        anyio.run(run_many, pipeline, workdir, runs, backend=backend)
    return str(profiler.output_text(unicode=True, color=False, show_all=False))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, profile each backend, print the reports."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_runner", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    parser.add_argument("--shape", choices=SHAPES, default="random")
    parser.add_argument("--size", type=int, default=10_000, help="tasks in the DAG (default: 10000)")
    parser.add_argument("--runs", type=int, default=5, help="profiled runs (default: 5)")
    parser.add_argument("--tool", choices=["cprofile", "pyinstrument"], default="cprofile")
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()), help="where .pstats files go"
    )
    args = parser.parse_args(argv)
    pipeline = build_pipeline(make_dag(args.shape, args.size))
    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="asyncflow-profile-") as tmp:
        for backend in backends:
            print(f"===== {backend}: {args.shape} DAG, {args.size} no-op tasks, {args.tool} =====")
            if args.tool == "cprofile":
                out = args.out / f"profile-{backend}-{args.shape}-{args.size}.pstats"
                print(profile_cprofile(pipeline, backend, args.runs, Path(tmp), out))
                print(f"(stats written to {out})\n")
            else:
                print(profile_pyinstrument(pipeline, backend, args.runs, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A large result checkpointed with pickle: time and peak memory against ``pickle.dump``.

Run from the repository root::

    python -m benchmarks.large_result              # 200 MB (a NumPy array if NumPy is there, else bytes)
    python -m benchmarks.large_result --mb 20      # smaller

In one process, alternating, ``--reps`` times each (medians):

* ``pickle.dump``: the baseline, ``pickle.dump(value, f)`` to a file, then ``fsync``;
* ``FileStore.save``: ``asyncflow.FileStore(dir).save(task, key, value, serializer=PICKLE)``
  (serialize, digest, write to a temporary file, fsync, rename, journal line, fsync),
  on asyncio.

Peak memory is tracemalloc's peak above what was allocated before the call, in multiples
of the value's size (NumPy and bytes allocations are traced): 0 means the write held no
copy of the data, 1 one extra copy.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

import asyncflow

__all__ = ["main", "measure"]


def make_value(mb: int) -> Any:
    """``mb`` megabytes of data: a float64 NumPy array when NumPy is installed, else bytes."""
    try:
        import numpy
    except ImportError:
        return os.urandom(mb * 1_000_000)
    return numpy.random.default_rng(0).random(mb * 1_000_000 // 8)


def _peak(fn: Callable[[], Any]) -> tuple[float, int]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return seconds, peak


def measure(mb: int = 200, reps: int = 3) -> list[dict[str, Any]]:
    """``[{"how", "mb", "median_s", "peak_copies"}]`` for the baseline and the store."""
    value = make_value(mb)
    size = len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) if mb <= 50 else mb * 1_000_000
    rows: dict[str, list[tuple[float, int]]] = {"pickle.dump + fsync": [], "FileStore.save (pickle)": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for rep in range(reps):
            path = Path(tmp) / f"dump{rep}.pkl"

            def dump(path: Path = path) -> None:
                with open(path, "wb") as f:
                    pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
                    f.flush()
                    os.fsync(f.fileno())

            rows["pickle.dump + fsync"].append(_peak(dump))
            store = asyncflow.FileStore(Path(tmp) / f"store{rep}")

            def save(store: asyncflow.FileStore = store) -> None:
                anyio.run(lambda: store.save("big", "k", value, serializer=asyncflow.PICKLE))

            rows["FileStore.save (pickle)"].append(_peak(save))
    return [
        {
            "how": how,
            "mb": mb,
            "median_s": statistics.median(s for s, _ in samples),
            "peak_copies": statistics.median(p for _, p in samples) / size,
        }
        for how, samples in rows.items()
    ]


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.large_result", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mb", type=int, default=200, help="size of the result in MB (default 200)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    args = parser.parse_args(argv)
    rows = measure(args.mb, args.reps)
    base = rows[0]["median_s"]
    print(f"| {args.mb} MB result | seconds | x pickle.dump | peak extra copies |")
    print("|---|---:|---:|---:|")
    for row in rows:
        ratio = row["median_s"] / base
        print(f"| {row['how']} | {row['median_s']:.3f} | {ratio:.2f} | {row['peak_copies']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

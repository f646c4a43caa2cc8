"""Smoke test of benchmarks/keys.py (code digests and building), so that it cannot rot.

Runs ``python -m benchmarks.keys --quick`` in a subprocess and the ``measure`` functions the
suite's ``run.py`` can call, on tiny sizes. It never asserts anything about speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import keys  # noqa: E402


def test_quick_keys_benchmark_prints_both_tables() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.keys", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| partial fan-out of one function | 100 |" in proc.stdout
    assert "| distinct functions in one module | 50 |" in proc.stdout
    assert "| register + validate | 100 |" in proc.stdout


def test_measure_functions_return_one_row_per_case() -> None:
    rows = keys.measure(sizes=(5, 10), fanout=20)
    assert [(r["case"], r["n"]) for r in rows] == [
        ("partial fan-out of one function", 20),
        ("distinct functions in one module", 5),
        ("distinct functions in one module", 10),
    ]
    assert all(r["cold_us_per_task"] > 0 and r["warm_us_per_task"] > 0 for r in rows)
    (build,) = keys.measure_build(n=20, memory_n=50)
    assert build["build_us_per_task"] > 0 and build["definition_bytes_per_task"] > 0

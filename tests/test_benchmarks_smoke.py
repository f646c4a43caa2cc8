"""Smoke test of the benchmark suite (benchmarks/), so that its scripts cannot rot.

Runs ``python -m benchmarks.run --quick`` on tiny DAGs in a subprocess and checks that every
kind of measurement produced its records and tables. It never asserts anything about speed.
Also checks the DAG generator's invariants, which every benchmark number relies on.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import run  # noqa: E402
from benchmarks.dags import SHAPES, build_pipeline, make_dag  # noqa: E402


@pytest.mark.parametrize("shape", SHAPES)
def test_dag_shapes_are_seeded_topological_dags(shape: str) -> None:
    """Every node's upstream nodes come before it, without repeats, and a seed fixes the DAG."""
    dag = make_dag(shape, 60, seed=3)
    assert dag.n == len(dag.upstream) == 60
    for i, ups in enumerate(dag.upstream):
        assert all(0 <= u < i for u in ups)
        assert len(set(ups)) == len(ups)
    assert make_dag(shape, 60, seed=3) == dag
    assert 1 <= dag.depth() <= 60


def test_dag_shapes_have_their_documented_structure() -> None:
    """Spot checks of each shape's edges and depth."""
    assert make_dag("chain", 10).depth() == 10
    wide = make_dag("wide", 10)
    assert wide.upstream[-1] == tuple(range(1, 9)) and wide.depth() == 3
    diamonds = make_dag("diamonds", 200)
    assert all(len(ups) == 2 for ups in diamonds.upstream[20:]) and diamonds.depth() == 10
    assert make_dag("flat", 10).edges == 0
    assert all(1 <= len(ups) <= 3 for ups in make_dag("random", 100).upstream[1:])


def test_build_pipeline_uses_the_dag_edges() -> None:
    """The pipeline has one task per node whose graph mirrors the DAG."""
    dag = make_dag("random", 50, seed=1)
    pipeline = build_pipeline(dag)
    graph = pipeline.validate()
    assert [sorted(node.upstream) for node in graph.nodes] == [sorted(ups) for ups in dag.upstream]


def test_quick_benchmark_run_writes_every_table(tmp_path: Path) -> None:
    """``--quick`` on 200-task DAGs with one repetition runs every kind of measurement."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--sizes", "200", "--reps", "1",
         "--sleep-ms", "2", "--backend", "both", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert {r["backend"] for r in results["overhead"]} == {"asyncio", "trio"}
    runners = {r["runner"] for r in results["overhead"]}
    assert {"asyncflow", "asyncflow+listener", "anyio-task-per-node", "create_task-per-node"} <= runners
    assert all(r["us_per_task"] > 0 for r in results["overhead"])
    assert results["sleeps"] and results["checkpoints"] and results["peers"] and results["targets"]
    assert results["import"]["python -c 'import asyncflow'"]["returncode"] == 0
    report = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "## No-op overhead, asyncio" in report and "## No-op overhead, trio" in report
    rows = {(r["backend"], r["row"]) for r in results["defaults"]}
    assert ("trio", "cold") in rows and ("asyncio", "sequential fsync loop") in rows
    assert ("trio", "build + run, random DAG") in rows and "| build + run, random DAG (in memory) |" in report
    assert "### defaults on, asyncio" in report and "| cold, checkpoints on |" in report
    assert results["keys"]["digests"] and "| code digest |" in report
    assert report in proc.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "overhead.png").stat().st_size > 0

    again = tmp_path / "again"
    assert run.main(["--from-json", str(tmp_path / "results.json"), "--out", str(again)]) == 0
    assert (again / "results.md").read_text(encoding="utf-8") == report


def test_large_result_benchmark_measures_both_ways_and_the_store_streams() -> None:
    """``benchmarks.large_result`` on 2 MB: both rows, and the pickle store holds no copy of
    the bytes (only the reloaded value: about one extra copy, never two)."""
    from benchmarks import large_result

    rows = {row["how"]: row for row in large_result.measure(mb=2, reps=1)}
    assert set(rows) == {"pickle.dump + fsync", "FileStore.save (pickle)"}
    assert all(row["median_s"] > 0 for row in rows.values())
    assert rows["FileStore.save (pickle)"]["peak_copies"] < 1.9


def test_mapping_benchmark_compares_both_shapes_on_every_row() -> None:
    """``benchmarks.mapping`` on 50 tasks: a row per shape and measurement, and its table."""
    from benchmarks import mapping

    rows = mapping.measure("asyncio", 50, 1)
    assert {(r["shape"], r["row"]) for r in rows} == {
        (shape, row) for shape in ("static", "mapped") for row in ("build", "cold", "warm", "in memory")
    }
    assert all(r["n"] == 51 and r["us_per_task"] > 0 for r in rows)
    assert "| in memory |" in mapping.table(rows) and "mapped / static" in mapping.table(rows)

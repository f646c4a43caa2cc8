"""The command line's inspection verbs and partial runs, end to end in a subprocess.

``--list``, ``--graph``, ``--dry-run``, ``--only``/``--from``/``--until``, ``--json`` and
``--log-json`` on the prices pipeline (12 tasks: ingest, clean_* and fit_* per ticker,
report), plus a small pipeline file for failures and output discipline.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from journal import saved

ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT / "pipelines" / "data" / "stocks.csv"
TICKERS = ("AAPL", "AMZN", "GOOG", "IBM", "MSFT")
TASKS = ["ingest"] + [f"{step}_{t}" for t in TICKERS for step in ("clean", "fit")] + ["report"]
STATES = {"succeeded", "failed", "skipped", "cached", "cancelled"}


def asyncflow(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asyncflow ARGS`` and capture its output (60 s limit)."""
    return subprocess.run(
        [sys.executable, "-m", "asyncflow", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def table(stdout: str, values: set[str] | None = None) -> dict[str, list[str]]:
    """``{first cell: other cells}`` for the rows of a table whose 2nd cell is in ``values``."""
    rows = {}
    for line in stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2 and cells[0] in TASKS and (values is None or cells[1] in values):
            rows[cells[0]] = cells[1:]
    return rows


def states(stdout: str) -> dict[str, str]:
    return {task: cells[0] for task, cells in table(stdout, STATES).items()}


def plan(stdout: str) -> dict[str, tuple[str, str]]:
    """``{task: (action, reason)}`` from a ``--dry-run`` table."""
    rows = table(stdout, {"run", "cached", "fail", "skip", "missing"})
    return {task: (cells[0], cells[1] if len(cells) > 1 else "") for task, cells in rows.items()}


@pytest.fixture
def csv_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "stocks.csv"
    shutil.copyfile(CSV, copy)
    return copy


# -- --list and --graph --------------------------------------------------------------------------


def test_list_shows_each_task_with_upstream_and_options_and_runs_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    out = asyncflow("pipelines.prices", "--list", "--workdir", workdir)
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert list(rows) == TASKS  # definition order
    assert rows["ingest"][:5] == ["-", "2", "-", "yes", "-"]  # upstream, retries, timeout, checkpoint, tags
    assert rows["fit_IBM"][0] == "clean_IBM"
    assert rows["report"][0] == ", ".join(f"fit_{t}" for t in TICKERS)
    assert rows["clean_IBM"][5].startswith("Parse dates and prices of one ticker")
    assert not workdir.exists()

    listing = json.loads(asyncflow("pipelines.prices", "--list", "--json").stdout)
    assert [t["task"] for t in listing["tasks"]] == TASKS
    assert listing["tasks"][0] | {"description": ""} == {
        "task": "ingest",
        "upstream": [],
        "after": [],
        "retries": 2,
        "retry_delay_s": 0.2,
        "timeout_s": None,
        "checkpoint": True,
        "tags": [],
        "description": "",
    }


def test_graph_mermaid_prints_a_flowchart_of_every_edge(tmp_path: Path) -> None:
    out = asyncflow("pipelines.prices", "--graph", "mermaid", "--workdir", tmp_path / "work")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    ids = dict(re.findall(r'^\s+(t\d+)\["(\w+)"\]$', out.stdout, re.M))
    assert sorted(ids.values()) == sorted(TASKS)
    edges = {(ids[a], ids[b]) for a, b in re.findall(r"^\s+(t\d+) --> (t\d+)$", out.stdout, re.M)}
    assert len(edges) == 15
    assert {("ingest", "clean_IBM"), ("clean_IBM", "fit_IBM"), ("fit_IBM", "report")} <= edges
    assert not (tmp_path / "work").exists()


def test_graph_dot_prints_a_digraph_of_every_edge() -> None:
    out = asyncflow("pipelines.prices", "--graph", "dot")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('digraph "prices" {\n') and out.stdout.rstrip().endswith("}")
    edges = set(re.findall(r'^\s+"(\w+)" -> "(\w+)";$', out.stdout, re.M))
    assert len(edges) == 15 and ("clean_AAPL", "fit_AAPL") in edges


def test_graph_rejects_an_unknown_format() -> None:
    out = asyncflow("pipelines.prices", "--graph", "svg")
    assert out.returncode == 2 and "invalid choice: 'svg'" in out.stderr


# -- --dry-run ------------------------------------------------------------------------------------


def test_dry_run_says_what_would_run_and_why(tmp_path: Path, csv_copy: Path) -> None:
    workdir = tmp_path / "work"
    args = ("pipelines.prices", "--workdir", workdir, "--param", f"csv={csv_copy}")

    fresh = asyncflow(*args, "--dry-run")
    assert fresh.returncode == 0, fresh.stderr
    assert plan(fresh.stdout) == dict.fromkeys(TASKS, ("run", "no checkpoint"))
    assert "12 would run (nothing was run)" in fresh.stdout
    assert not (workdir / "checkpoints").exists()

    assert asyncflow(*args).returncode == 0
    after_run = asyncflow(*args, "--dry-run")
    assert plan(after_run.stdout) == dict.fromkeys(TASKS, ("cached", "checkpoint matches"))

    lines = csv_copy.read_text().splitlines()
    lines[1] = lines[1].replace("39.81", "40.81")  # MSFT, Jan 2000: same path, new content
    csv_copy.write_text("\n".join(lines) + "\n")
    edited = plan(asyncflow(*args, "--dry-run").stdout)
    assert edited["ingest"] == ("run", "input changed (its cache_key_fn value)")
    for ticker in TICKERS:
        # Their keys fold in ingest's result, known only once it ran (early cutoff).
        assert edited[f"clean_{ticker}"] == (
            "run",
            "upstream ingest will run; cached if its result is unchanged",
        )
        maybe = f"upstream clean_{ticker} will run; cached if its result is unchanged"
        assert edited[f"fit_{ticker}"] == ("run", maybe)
    assert edited["report"][1].startswith("upstream fit_AAPL")

    forced = asyncflow(*args, "--dry-run", "--no-skip")
    assert plan(forced.stdout) == dict.fromkeys(TASKS, ("run", "forced (--no-skip)"))

    as_json = json.loads(asyncflow(*args, "--dry-run", "--json").stdout)
    assert as_json["tasks"]["ingest"]["action"] == "run"
    assert as_json["tasks"]["ingest"]["reason"] == "input changed (its cache_key_fn value)"
    assert as_json["tasks"]["ingest"]["cache_key"] != as_json["tasks"]["ingest"]["stored_key"]
    rerun = asyncflow(*args)  # the real run decides the "maybe"s: only MSFT's fit changes
    ran = {task for task, state in states(rerun.stdout).items() if state == "succeeded"}
    assert ran == {"ingest", "fit_MSFT", "report"} | {f"clean_{t}" for t in TICKERS}
    assert plan(asyncflow(*args, "--dry-run").stdout) == dict.fromkeys(
        TASKS, ("cached", "checkpoint matches")
    )


def test_dry_run_of_a_selection_names_missing_checkpoints(tmp_path: Path) -> None:
    out = asyncflow("pipelines.prices", "--workdir", tmp_path / "work", "--dry-run", "--only", "fit_IBM")
    assert out.returncode == 2
    assert plan(out.stdout) == {
        "ingest": ("missing", "no checkpoint, and a selected task needs its result"),
        "clean_IBM": ("missing", "no checkpoint, and a selected task needs its result"),
        "fit_IBM": ("run", "no checkpoint"),
    }
    assert "'ingest', 'clean_IBM', which have no checkpoint" in out.stderr


# -- --only, --from, --until ----------------------------------------------------------------------


def test_partial_runs_run_the_selection_and_load_its_upstream(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    until = asyncflow("pipelines.prices", "--workdir", workdir, "--until", "clean_IBM")
    assert until.returncode == 0, until.stderr
    assert states(until.stdout) == {"ingest": "succeeded", "clean_IBM": "succeeded"}
    assert sorted(saved(workdir, "prices")) == ["clean_IBM", "ingest"]

    only = asyncflow("pipelines.prices", "--workdir", workdir, "--only", "fit_IBM")
    assert only.returncode == 0, only.stderr
    assert states(only.stdout) == {"ingest": "cached", "clean_IBM": "cached", "fit_IBM": "succeeded"}

    assert asyncflow("pipelines.prices", "--workdir", workdir).returncode == 0
    start = asyncflow("pipelines.prices", "--workdir", workdir, "--from", "clean_MSFT", "--no-skip")
    assert start.returncode == 0, start.stderr
    ran = {task for task, state in states(start.stdout).items() if state == "succeeded"}
    assert ran == {"clean_MSFT", "fit_MSFT", "report"}
    assert set(states(start.stdout)) == set(TASKS) - {"clean_MSFT", "fit_MSFT"} | ran


def test_unknown_task_names_exit_2_with_a_suggestion(tmp_path: Path) -> None:
    for option in ("--only", "--from", "--until"):
        out = asyncflow("pipelines.prices", "--workdir", tmp_path / "work", option, "fit_IMB")
        assert out.returncode == 2
        assert out.stderr.strip() == (
            f"asyncflow: error: {option}: there is no task named 'fit_IMB'; did you mean 'fit_IBM'?"
        )
        assert out.stdout == ""
    assert not (tmp_path / "work").exists()


def test_missing_checkpoints_exit_2_naming_them_before_anything_runs(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    out = asyncflow("pipelines.prices", "--workdir", workdir, "--from", "fit_IBM")
    assert out.returncode == 2
    assert "asyncflow: error: the selected tasks need the results of" in out.stderr
    for name in ["ingest", "clean_AAPL", "fit_AAPL", "clean_IBM"]:
        assert repr(name) in out.stderr
    assert not (workdir / "checkpoints").exists()


# -- --json and --log-json -------------------------------------------------------------------------

DEMO = """
import asyncflow

pipeline = asyncflow.Pipeline("demo")


@pipeline.task
async def numbers() -> list[int]:
    print("a task printing to stdout")
    return [1, 2, 3]


@pipeline.task(checkpoint=False)
def opaque(numbers: list[int]) -> object:
    return object()


@pipeline.task
async def broken(numbers: list[int]) -> int:
    raise ValueError("bad input")


@pipeline.task
async def after_broken(broken: int) -> int:
    return broken
"""


def test_json_prints_only_the_run_summary_on_stdout(tmp_path: Path) -> None:
    demo = tmp_path / "demo.py"
    demo.write_text(textwrap.dedent(DEMO))
    out = asyncflow(demo, "--workdir", tmp_path / "work", "--json")
    assert out.returncode == 1
    summary: dict[str, Any] = json.loads(out.stdout)  # nothing else on stdout
    assert "a task printing to stdout" in out.stderr
    assert summary["pipeline"] == "demo" and summary["ok"] is False
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", summary["run_id"])
    assert summary["duration_s"] > 0
    tasks = summary["tasks"]
    assert list(tasks) == ["numbers", "opaque", "broken", "after_broken"]
    numbers = tasks["numbers"]
    assert numbers["state"] == "succeeded" and numbers["attempts"] == 1 and numbers["result"] == [1, 2, 3]
    assert numbers["started_at"] <= numbers["finished_at"] and numbers["duration_s"] >= 0
    assert re.fullmatch(r"[0-9a-f]{64}", numbers["cache_key"])
    assert tasks["opaque"]["state"] == "succeeded" and "result" not in tasks["opaque"]  # not JSON
    assert tasks["broken"]["error"] == {"type": "ValueError", "message": "bad input"}
    assert tasks["after_broken"]["state"] == "skipped"
    assert tasks["after_broken"]["reason"] == "upstream task 'broken' failed"
    assert tasks["after_broken"]["started_at"] is None


def test_json_summary_of_the_prices_pipeline(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    first = asyncflow("pipelines.prices", "--workdir", workdir, "--json")
    assert first.returncode == 0, first.stderr
    second = json.loads(asyncflow("pipelines.prices", "--workdir", workdir, "--json").stdout)
    assert second["ok"] is True and list(second["tasks"]) == TASKS
    assert {t["state"] for t in second["tasks"].values()} == {"cached"}
    assert second["tasks"]["report"]["result"].endswith("prices_report.md")
    assert second["counts"] == {"cached": 12}


def test_log_json_writes_one_json_record_per_stderr_line(tmp_path: Path) -> None:
    out = asyncflow("pipelines.prices", "--workdir", tmp_path / "work", "--log-json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line)["record"] for line in out.stderr.splitlines() if line.strip()]
    assert len(records) >= 12
    run_ids = {r["extra"]["run_id"] for r in records}
    assert len(run_ids) == 1 and run_ids.pop() in out.stdout
    assert {r["extra"]["task"] for r in records} >= {"-", "ingest", "report"}
    assert any(r["extra"]["task"] == "ingest" and "succeeded" in r["message"] for r in records)

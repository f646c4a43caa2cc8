"""The command line's inspection verbs and partial runs, end to end in a subprocess.

``--list``, ``--graph``, ``--dry-run``, ``--only``/``--from``/``--until``, ``--json`` and
``--log-json`` on the prices pipeline (4 tasks: ingest, clean and fit mapped over the
tickers it finds, report; 12 when the 10 instances are counted), plus a small pipeline
file for failures and output discipline.
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
TASKS = ["ingest", "clean", "fit", "report"]
MAPPED = {"clean": "ingest", "fit": "clean"}  # mapped task: what it is mapped over
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
        name = cells[0].removesuffix("[*]")  # a run summary's row of a mapped task
        if len(cells) >= 2 and name in TASKS and (values is None or cells[1] in values):
            rows[name] = cells[1:]
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
    assert list(rows) == TASKS  # definition order, a mapped task once
    assert rows["ingest"][:5] == ["-", "2", "-", "yes", "-"]  # upstream, retries, timeout, checkpoint, tags
    assert rows["clean"][0] == "ingest (each)" and rows["fit"][0] == "clean (each)"
    assert rows["report"][0] == "fit"
    assert rows["clean"][5].startswith("mapped over ingest; One ticker's item")
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
    assert {t["task"]: t.get("mapped_over") for t in listing["tasks"]} == {
        "ingest": None,
        "clean": ["ingest"],
        "fit": ["clean"],
        "report": None,
    }


def test_graph_mermaid_prints_a_flowchart_of_every_edge(tmp_path: Path) -> None:
    out = asyncflow("pipelines.prices", "--graph", "mermaid", "--workdir", tmp_path / "work")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    ids = dict(re.findall(r'^\s+(t\d+)\["(\w+)"\]$', out.stdout, re.M))
    ids |= dict(re.findall(r'^\s+(t\d+)\[\["(\w+)\[\*\] mapped over \w+"\]\]$', out.stdout, re.M))
    assert sorted(ids.values()) == sorted(TASKS)
    each = {(ids[a], ids[b]) for a, b in re.findall(r"^\s+(t\d+) -->\|each\| (t\d+)$", out.stdout, re.M)}
    plain = {(ids[a], ids[b]) for a, b in re.findall(r"^\s+(t\d+) --> (t\d+)$", out.stdout, re.M)}
    assert each == {("ingest", "clean"), ("clean", "fit")} and plain == {("fit", "report")}
    assert not (tmp_path / "work").exists()


def test_graph_dot_prints_a_digraph_of_every_edge() -> None:
    out = asyncflow("pipelines.prices", "--graph", "dot")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('digraph "prices" {\n') and out.stdout.rstrip().endswith("}")
    edges = set(re.findall(r'^\s+"(\w+)" -> "(\w+)"( \[label="each"\])?;$', out.stdout, re.M))
    assert edges == {
        ("ingest", "clean", ' [label="each"]'),
        ("clean", "fit", ' [label="each"]'),
        ("fit", "report", ""),
    }
    assert '"clean" [label="clean[*] mapped over ingest", peripheries=2];' in out.stdout


def test_graph_rejects_an_unknown_format() -> None:
    out = asyncflow("pipelines.prices", "--graph", "svg")
    assert out.returncode == 2 and "invalid choice: 'svg'" in out.stderr


# -- --dry-run ------------------------------------------------------------------------------------


def test_dry_run_says_what_would_run_and_why(tmp_path: Path, csv_copy: Path) -> None:
    workdir = tmp_path / "work"
    args = ("pipelines.prices", "--workdir", workdir, "--param", f"csv={csv_copy}")
    unknown = {name: ("run", f"mapped over {over} (known when it runs)") for name, over in MAPPED.items()}

    fresh = asyncflow(*args, "--dry-run")
    assert fresh.returncode == 0, fresh.stderr
    assert (
        plan(fresh.stdout)
        == {"ingest": ("run", "no checkpoint"), "report": ("run", "no checkpoint")} | unknown
    )
    assert "4 would run (nothing was run)" in fresh.stdout
    assert not (workdir / "checkpoints").exists()

    assert asyncflow(*args).returncode == 0
    after_run = plan(asyncflow(*args, "--dry-run").stdout)
    assert after_run == {
        "ingest": ("cached", "checkpoint matches"),
        "clean": ("cached", "mapped over ingest: 5 instances: 5 cached"),
        "fit": ("cached", "mapped over clean: 5 instances: 5 cached"),
        "report": ("cached", "checkpoint matches"),
    }

    lines = csv_copy.read_text().splitlines()
    lines[1] = lines[1].replace("39.81", "40.81")  # MSFT, Jan 2000: same path, new content
    csv_copy.write_text("\n".join(lines) + "\n")
    edited = plan(asyncflow(*args, "--dry-run").stdout)
    # The instances depend on ingest's items, known only once it ran.
    assert (
        edited
        == {
            "ingest": ("run", "input changed (its cache_key_fn value)"),
            "report": ("run", "upstream fit will run; cached if its result is unchanged"),
        }
        | unknown
    )

    forced = plan(asyncflow(*args, "--dry-run", "--no-skip").stdout)
    assert forced["ingest"] == forced["report"] == ("run", "forced (--no-skip)")

    as_json = json.loads(asyncflow(*args, "--dry-run", "--json").stdout)
    assert as_json["tasks"]["ingest"]["action"] == "run"
    assert as_json["tasks"]["ingest"]["reason"] == "input changed (its cache_key_fn value)"
    assert as_json["tasks"]["ingest"]["cache_key"] != as_json["tasks"]["ingest"]["stored_key"]
    rerun = asyncflow(*args)  # the real run: only MSFT's clean and fit instances run
    assert rerun.returncode == 0, rerun.stderr
    assert "ok: 4 succeeded, 8 cached in" in rerun.stdout
    assert plan(asyncflow(*args, "--dry-run").stdout) == after_run


def test_dry_run_of_a_selection_names_missing_checkpoints(tmp_path: Path) -> None:
    out = asyncflow("pipelines.prices", "--workdir", tmp_path / "work", "--dry-run", "--only", "fit")
    assert out.returncode == 2
    assert plan(out.stdout) == {
        "ingest": ("missing", "no checkpoint, and a selected task needs its result"),
        "clean": ("run", "mapped over ingest (known when it runs)"),
        "fit": ("run", "mapped over clean (known when it runs)"),
    }
    assert "'ingest', which have no checkpoint" in out.stderr


# -- --only, --from, --until ----------------------------------------------------------------------


def test_partial_runs_run_the_selection_and_load_its_upstream(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    until = asyncflow("pipelines.prices", "--workdir", workdir, "--until", "clean")
    assert until.returncode == 0, until.stderr
    assert states(until.stdout) == {"ingest": "succeeded", "clean": "succeeded"}
    assert "ok: 6 succeeded in" in until.stdout
    assert sorted(n.split("[")[0] for n in saved(workdir, "prices")) == ["clean"] * 5 + ["ingest"]

    only = asyncflow("pipelines.prices", "--workdir", workdir, "--only", "fit")
    assert only.returncode == 0, only.stderr
    # ingest is loaded; clean, a mapped task, is expanded and its instances are cached.
    assert states(only.stdout) == {"ingest": "cached", "clean": "cached", "fit": "succeeded"}
    assert "ok: 5 succeeded, 6 cached in" in only.stdout

    assert asyncflow("pipelines.prices", "--workdir", workdir).returncode == 0
    # --no-skip forces the selection only: clean's instances above it are looked up.
    planned = plan(
        asyncflow("pipelines.prices", "--workdir", workdir, "--from", "fit", "--no-skip", "--dry-run").stdout
    )
    assert planned["clean"] == ("cached", "mapped over ingest: 5 instances: 5 cached")
    start = asyncflow("pipelines.prices", "--workdir", workdir, "--from", "fit", "--no-skip")
    assert start.returncode == 0, start.stderr
    assert states(start.stdout) == {
        "ingest": "cached",
        "clean": "cached",
        "fit": "succeeded",
        "report": "succeeded",
    }


def test_unknown_task_names_exit_2_with_a_suggestion(tmp_path: Path) -> None:
    for option in ("--only", "--from", "--until"):
        out = asyncflow("pipelines.prices", "--workdir", tmp_path / "work", option, "fot")
        assert out.returncode == 2
        assert out.stderr.strip() == (
            f"asyncflow: error: {option}: there is no task named 'fot'; did you mean 'fit'?"
        )
        assert out.stdout == ""
    assert not (tmp_path / "work").exists()


def test_missing_checkpoints_exit_2_naming_them_before_anything_runs(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    out = asyncflow("pipelines.prices", "--workdir", workdir, "--from", "report")
    assert out.returncode == 2
    assert "asyncflow: error: the selected tasks need the results of 'ingest', which have no checkpoint" in (
        out.stderr
    )
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
    instances = [f"{task}[{k}]" for task in ("clean", "fit") for k in range(5)]
    assert second["ok"] is True and list(second["tasks"]) == TASKS + instances
    assert {t["state"] for t in second["tasks"].values()} == {"cached"}
    assert second["tasks"]["fit[4]"]["parent"] == "fit" and second["tasks"]["fit[4]"]["index"] == 4
    assert second["tasks"]["clean"]["mapped"]["items"] == 5
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

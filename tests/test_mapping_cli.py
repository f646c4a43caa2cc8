"""The command line's views of mapped tasks (asyncflow.each), end to end in a subprocess.

The run summary (one ``fetch[*]`` row with counts, failed instances by index and item),
``--json``, ``--list``, ``--graph``, ``--dry-run`` and ``--only`` on a small pipeline file:
``urls`` (from ``--param items=a,b,c``) -> ``fetch`` (mapped) -> ``parse`` (mapped over
fetch) -> ``summary`` (the list).
"""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
from pathlib import Path

import pytest
from test_cli_verbs import asyncflow

from asyncflow import RunResult, TaskRun, TaskState
from asyncflow._render import render_summary

PIPELINE = """
import asyncflow

pipeline = asyncflow.Pipeline("mapcli", params={"items": "a,b,c"})


@pipeline.task
async def urls(params) -> list[str]:
    return params["items"].split(",") if params["items"] else []


@pipeline.task(inputs={"url": asyncflow.each("urls")}, retries=1, retry_delay=0)
async def fetch(url: str) -> dict:
    \"\"\"Fetch one page.\"\"\"
    if url.startswith("bad"):
        raise ConnectionError(f"cannot fetch {url}")
    return {"url": url + SUFFIX}


@pipeline.task(inputs={"page": asyncflow.each("fetch")})
def parse(page: dict) -> str:
    return page["url"].upper()


@pipeline.task
async def summary(parse: list[str]) -> str:
    return "+".join(parse)
"""


def write(path: Path, suffix: str = "") -> Path:
    path.write_text(textwrap.dedent(PIPELINE) + f"\nSUFFIX = {suffix!r}\n")
    return path


@pytest.fixture
def module(tmp_path: Path) -> Path:
    return write(tmp_path / "mapcli.py")


def table(stdout: str) -> dict[str, list[str]]:
    """``{first cell: other cells}`` for the rows of the first table in ``stdout``."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    rows = {}
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def summary(stdout: str) -> dict[str, tuple[str, str, str]]:
    """``{task: (state, attempts, note)}`` from a run's summary table (durations vary)."""
    rows = table(stdout).items()
    return {name: (cells[0], cells[1], cells[3] if len(cells) > 3 else "") for name, cells in rows}


def test_a_mapped_task_is_one_row_with_counts_and_its_failed_instances_listed(
    tmp_path: Path, module: Path
) -> None:
    workdir = tmp_path / "work"
    out = asyncflow(module, "--workdir", workdir, "--param", "items=a,b,bad,c")
    assert out.returncode == 1
    assert summary(out.stdout) == {
        "urls": ("succeeded", "1", ""),
        "fetch[*]": ("failed", "5", "4 items: 3 succeeded, 1 failed"),  # fetch[2] tried twice
        "parse[*]": ("skipped", "3", "4 items: 3 succeeded, 1 skipped"),
        "summary": ("skipped", "0", "upstream task 'parse' was skipped"),
    }
    assert "fetch[0]" not in out.stdout and "parse[1]" not in out.stdout
    after_table = out.stdout.split("\n\n")[1].splitlines()
    assert after_table == [
        "failed instances of fetch (1 of 4):",
        "  fetch[2] (item 'bad'): ConnectionError: cannot fetch bad",
    ]
    assert re.search(r"^run \S+ FAILED: 7 succeeded, 1 failed, 2 skipped in ", out.stdout, re.M)
    assert "asyncflow: task 'fetch[2]' failed: ConnectionError: cannot fetch bad" in out.stderr

    fixed = asyncflow(module, "--workdir", workdir, "--param", "items=a,b,good,c")
    assert fixed.returncode == 0, fixed.stderr
    assert summary(fixed.stdout) == {
        "urls": ("succeeded", "1", ""),
        "fetch[*]": ("succeeded", "1", "4 items: 1 succeeded, 3 cached"),
        "parse[*]": ("succeeded", "1", "4 items: 1 succeeded, 3 cached"),
        "summary": ("succeeded", "1", "A+B+GOOD+C"),
    }
    assert re.search(r"^run \S+ ok: 4 succeeded, 6 cached in ", fixed.stdout, re.M)
    assert "failed instances" not in fixed.stdout


def test_the_failed_instances_listed_are_capped(tmp_path: Path, module: Path) -> None:
    items = ",".join(f"bad{k}" for k in range(13))
    out = asyncflow(module, "--workdir", tmp_path / "work", "--param", f"items={items}")
    assert out.returncode == 1
    assert summary(out.stdout)["fetch[*]"] == ("failed", "26", "13 items: 13 failed")
    assert summary(out.stdout)["parse[*]"] == ("skipped", "0", "13 items: 13 skipped")
    listed = out.stdout.split("\n\n")[1].splitlines()
    assert listed == [
        "failed instances of fetch (13 of 13):",
        *(f"  fetch[{k}] (item 'bad{k}'): ConnectionError: cannot fetch bad{k}" for k in range(10)),
        "  and 3 more",
    ]
    errors = [line for line in out.stderr.splitlines() if line.startswith("asyncflow: ")]
    assert errors == [
        "asyncflow: task 'fetch' failed: MappingError: 13 of 13 instances of task 'fetch' did not "
        "succeed: fetch[0], fetch[1], fetch[2], fetch[3], fetch[4], fetch[5], fetch[6], fetch[7], "
        "fetch[8], fetch[9] and 3 more",
        *(f"asyncflow: task 'fetch[{k}]' failed: ConnectionError: cannot fetch bad{k}" for k in range(10)),
        "asyncflow: and 3 more instances of 'fetch' failed (the log has them all)",
    ]


def test_json_carries_the_mapped_tasks_and_their_instances(tmp_path: Path, module: Path) -> None:
    out = asyncflow(module, "--workdir", tmp_path / "work", "--param", "items=a,bad", "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["counts"] == {"succeeded": 3, "skipped": 2, "failed": 1}
    tasks = doc["tasks"]
    assert list(tasks) == [
        "urls",
        "fetch",
        "parse",
        "summary",
        "fetch[0]",
        "fetch[1]",
        "parse[0]",
        "parse[1]",
    ]
    fetch = tasks["fetch"]
    assert fetch["state"] == "failed" and fetch["error"]["type"] == "MappingError"
    assert fetch["mapped"] == {
        "over": ["urls"],
        "items": 2,
        "counts": {"succeeded": 1, "failed": 1},
        "failed": [
            {
                "index": 1,
                "item": "bad",
                "task": "fetch[1]",
                "error": {"type": "ConnectionError", "message": "cannot fetch bad"},
            }
        ],
    }
    assert tasks["parse"]["mapped"] == {
        "over": ["fetch"],
        "items": 2,
        "counts": {"succeeded": 1, "skipped": 1},
        "failed": [],
    }
    assert "mapped" not in tasks["summary"] and "parent" not in tasks["summary"]
    assert tasks["fetch[0]"] | {"started_at": 0, "finished_at": 0, "duration_s": 0} == {
        "state": "succeeded",
        "attempts": 1,
        "started_at": 0,
        "finished_at": 0,
        "duration_s": 0,
        "error": None,
        "reason": None,
        "cache_key": tasks["fetch[0]"]["cache_key"],
        "result": {"url": "a"},
        "parent": "fetch",
        "index": 0,
        "item": "a",
    }
    assert tasks["parse[0]"]["item"] == {"url": "a"} and tasks["parse[0]"]["result"] == "A"
    assert tasks["fetch[1]"]["attempts"] == 2


def test_list_and_graph_show_a_mapped_task_once_marked_as_mapped(tmp_path: Path, module: Path) -> None:
    listing = asyncflow(module, "--list")
    assert listing.returncode == 0, listing.stderr
    rows = table(listing.stdout)
    assert list(rows) == ["urls", "fetch", "parse", "summary"]
    assert rows["fetch"] == ["urls (each)", "1", "-", "yes", "-", "mapped over urls; Fetch one page."]
    assert rows["parse"] == ["fetch (each)", "0", "-", "yes", "-", "mapped over fetch"]
    assert rows["summary"] == ["parse", "0", "-", "yes", "-"]

    as_json = json.loads(asyncflow(module, "--list", "--json").stdout)["tasks"]
    assert [(t["task"], t["upstream"], t["after"], t.get("mapped_over")) for t in as_json] == [
        ("urls", [], [], None),
        ("fetch", ["urls"], [], ["urls"]),
        ("parse", ["fetch"], [], ["fetch"]),
        ("summary", ["parse"], [], None),
    ]

    mermaid = asyncflow(module, "--graph", "mermaid")
    assert mermaid.stdout.splitlines() == [
        "flowchart LR",
        '    t0["urls"]',
        '    t1[["fetch[*] mapped over urls"]]',
        '    t2[["parse[*] mapped over fetch"]]',
        '    t3["summary"]',
        "    t0 -->|each| t1",
        "    t1 -->|each| t2",
        "    t2 --> t3",
    ]
    dot = asyncflow(module, "--graph", "dot")
    assert dot.stdout.splitlines() == [
        'digraph "mapcli" {',
        "    rankdir=LR;",
        "    node [shape=box];",
        '    "urls";',
        '    "fetch" [label="fetch[*] mapped over urls", peripheries=2];',
        '    "parse" [label="parse[*] mapped over fetch", peripheries=2];',
        '    "summary";',
        '    "urls" -> "fetch" [label="each"];',
        '    "fetch" -> "parse" [label="each"];',
        '    "parse" -> "summary";',
        "}",
    ]


def test_dry_run_counts_the_instances_when_the_items_are_known(tmp_path: Path, module: Path) -> None:
    workdir = tmp_path / "work"
    args = (module, "--workdir", workdir, "--dry-run")
    fresh = asyncflow(*args)
    assert fresh.returncode == 0, fresh.stderr
    assert table(fresh.stdout) == {
        "urls": ["run", "no checkpoint"],
        "fetch": ["run", "mapped over urls (known when it runs)"],
        "parse": ["run", "mapped over fetch (known when it runs)"],
        "summary": ["run", "no checkpoint"],
    }
    assert asyncflow(module, "--workdir", workdir, "--param", "items=a,bad,c").returncode == 1
    failed = asyncflow(*args, "--param", "items=a,bad,c")
    assert table(failed.stdout) == {
        "urls": ["cached", "checkpoint matches"],
        "fetch": ["run", "mapped over urls: 3 instances: 1 would run (no checkpoint), 2 cached"],
        "parse": ["run", "mapped over fetch (known when it runs)"],
        "summary": ["run", "no checkpoint"],
    }
    assert "plan of pipeline 'mapcli': 3 would run, 1 cached (nothing was run)" in failed.stdout

    assert asyncflow(module, "--workdir", workdir).returncode == 0
    cached = asyncflow(*args)
    assert table(cached.stdout) == {
        "urls": ["cached", "checkpoint matches"],
        "fetch": ["cached", "mapped over urls: 3 instances: 3 cached"],
        "parse": ["cached", "mapped over fetch: 3 instances: 3 cached"],
        "summary": ["cached", "checkpoint matches"],
    }
    doc = json.loads(asyncflow(*args, "--json").stdout)["tasks"]
    assert doc["fetch"]["mapped"]["items"] == 3
    assert doc["fetch"]["mapped"]["counts"] == {"cached": 3}
    assert [i["task"] for i in doc["fetch"]["mapped"]["instances"]] == ["fetch[0]", "fetch[1]", "fetch[2]"]
    assert "mapped" not in doc["summary"]


def test_only_runs_a_mapped_task_or_below_it_from_checkpoints(tmp_path: Path, module: Path) -> None:
    workdir = tmp_path / "work"
    nothing = asyncflow(module, "--workdir", workdir, "--only", "summary")
    assert nothing.returncode == 2
    # Only urls lacks a checkpoint: the mapped tasks have none of their own, they run.
    assert "the selected tasks need the results of 'urls', which have no checkpoint" in nothing.stderr

    assert asyncflow(module, "--workdir", workdir).returncode == 0
    only = asyncflow(module, "--workdir", workdir, "--only", "fetch")
    assert only.returncode == 0, only.stderr
    assert summary(only.stdout) == {
        "urls": ("cached", "0", ""),
        "fetch[*]": ("cached", "0", "3 items: 3 cached"),
    }

    below = asyncflow(module, "--workdir", workdir, "--only", "summary")
    assert below.returncode == 0, below.stderr
    assert summary(below.stdout) == {
        "urls": ("cached", "0", ""),
        "fetch[*]": ("cached", "0", "3 items: 3 cached"),
        "parse[*]": ("cached", "0", "3 items: 3 cached"),
        "summary": ("cached", "0", "A+B+C"),
    }

    write(module, suffix="!")  # fetch's code changed: its instances no longer match
    changed = asyncflow(module, "--workdir", workdir, "--only", "summary")
    assert changed.returncode == 0, changed.stderr
    assert summary(changed.stdout) == {
        "urls": ("cached", "0", ""),
        "fetch[*]": ("succeeded", "3", "3 items: 3 succeeded"),
        "parse[*]": ("succeeded", "3", "3 items: 3 succeeded"),
        "summary": ("succeeded", "1", "A!+B!+C!"),
    }
    fetch = asyncflow(module, "--workdir", workdir, "--only", "fetch", "--param", "items=a,b,c,d")
    assert fetch.returncode == 0, fetch.stderr  # urls loaded (a stale checkpoint): a,b,c
    assert summary(fetch.stdout)["fetch[*]"] == ("cached", "0", "3 items: 3 cached")


def test_an_interrupted_runs_summary_groups_instances_by_name(module: Path) -> None:
    """After a signal the summary is rebuilt from events: a plain mapping of TaskRuns
    that knows no parents. The graph's mapped tasks still make one row each."""
    spec = importlib.util.spec_from_file_location("mapcli_interrupted", module)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    graph = loaded.pipeline.validate()
    states = {
        "urls": TaskState.SUCCEEDED,
        "fetch": TaskState.CANCELLED,
        "parse": TaskState.CANCELLED,
        "summary": TaskState.CANCELLED,
        "fetch[1]": TaskState.CANCELLED,
        "fetch[0]": TaskState.SUCCEEDED,
        "parse[0]": TaskState.CANCELLED,
    }
    tasks = {
        name: TaskRun(name=name, state=state, attempts=int(state is TaskState.SUCCEEDED))
        for name, state in states.items()
    }
    result = RunResult(
        run_id="r", pipeline="mapcli", params={}, started_at=0, finished_at=1, duration=1, tasks=tasks
    )
    assert summary(render_summary(result, {"summary"}, graph)) == {
        "urls": ("succeeded", "1", ""),
        "fetch[*]": ("cancelled", "1", "2 items: 1 succeeded, 1 cancelled"),
        "parse[*]": ("cancelled", "0", "1 item: 1 cancelled"),
        "summary": ("cancelled", "0", ""),
    }

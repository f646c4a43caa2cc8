"""``--timeline --format chrome-trace``: the trace-event JSON built from a run record."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mapped_pipeline import make
from mixed_pipeline import ATTEMPTS
from mixed_pipeline import pipeline as mixed

from asyncflow._chrome_trace import PID, chrome_trace
from asyncflow._recorder import RunRecorder
from asyncflow._records import RunRecord
from asyncflow._store import MemoryStore

MIXED = Path(__file__).with_name("mixed_pipeline.py")


@pytest.fixture(scope="module")
def mixed_record() -> RunRecord:
    """The record of the mixed pipeline's second run: cached, retried, failed, skipped."""
    store = MemoryStore()
    mixed.run_sync(store=store, log=False, workdir=tempfile.mkdtemp())
    recorder = RunRecorder()
    mixed.run_sync(store=store, log=False, listeners=[recorder], workdir=tempfile.mkdtemp())
    return recorder.record()


def of(doc: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if all(e.get(k) == v for k, v in match.items())]


def test_one_complete_event_per_attempt_with_its_state(mixed_record: RunRecord) -> None:
    doc = json.loads(json.dumps(chrome_trace(mixed_record)))  # strict JSON, round-trips
    attempts = of(doc, ph="X", cat="attempt")
    assert Counter(e["name"].split(" #")[0] for e in attempts) == {k: v for k, v in ATTEMPTS.items() if v}
    flaky = [(e["args"]["attempt"], e["args"]["state"]) for e in attempts if e["name"].startswith("flaky")]
    assert flaky == [(1, "retrying"), (2, "retrying"), (3, "succeeded")]
    (broken,) = [e for e in attempts if e["name"] == "broken #1"]
    assert broken["args"]["error"] == "RuntimeError: broken on purpose"
    assert len(of(doc, cat="backoff")) == 2  # the two waits of flaky


def test_layout_is_one_process_and_one_thread_per_task_in_definition_order(mixed_record: RunRecord) -> None:
    doc = chrome_trace(mixed_record)
    assert {e["pid"] for e in doc["traceEvents"]} == {PID}
    names = {e["tid"]: e["args"]["name"] for e in of(doc, ph="M", name="thread_name")}
    assert names == {0: "run", 1: "source", 2: "flaky", 3: "broken", 4: "after_broken", 5: "total"}
    (process,) = of(doc, ph="M", name="process_name")
    assert process["args"]["name"] == f"mixed {mixed_record.run_id}"
    for event in of(doc, ph="X", cat="attempt"):
        assert names[event["tid"]] == event["name"].split(" #")[0]
    (run,) = of(doc, cat="run")
    assert run["tid"] == 0 and run["args"]["status"] == "failed"
    instants = {names[e["tid"]]: e["name"] for e in of(doc, ph="i")}
    assert instants == {"source": "cached", "after_broken": "skipped"}


def test_times_are_microseconds_since_the_run_started(mixed_record: RunRecord) -> None:
    doc = chrome_trace(mixed_record)
    t0 = mixed_record.started_at
    assert doc["otherData"]["started_at_s"] == t0
    (run,) = of(doc, cat="run")
    assert run["ts"] == 0 and run["dur"] == pytest.approx(mixed_record.duration * 1e6, abs=1)
    records = {(t.name, a.attempt): a for t in mixed_record.tasks.values() for a in t.attempts}
    for event in of(doc, ph="X", cat="attempt"):
        name, number = event["name"].split(" #")
        attempt = records[(name, int(number))]
        assert event["ts"] == pytest.approx((attempt.started_at - t0) * 1e6, abs=1)
        assert event["dur"] == pytest.approx((attempt.duration or 0) * 1e6, abs=1)
        assert 0 <= event["ts"] <= event["ts"] + event["dur"] <= run["dur"] + 1
    # each attempt sits inside its task's event (so viewers nest them)
    tasks = {e["tid"]: e for e in of(doc, ph="X", cat="task")}
    for event in of(doc, ph="X", cat="attempt"):
        task = tasks[event["tid"]]
        assert task["ts"] - 1 <= event["ts"] and event["ts"] + event["dur"] <= task["ts"] + task["dur"] + 1
    (first_backoff, _) = of(doc, cat="backoff")
    assert first_backoff["dur"] == pytest.approx(0.05e6, rel=0.01)  # retry_delay=0.05 s


def test_cli_writes_the_trace_beside_the_record(tmp_path: Path) -> None:
    def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "asyncflow", *map(str, args), "--workdir", str(tmp_path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert cli(MIXED).returncode == 1  # a task fails on purpose
    done = cli("--timeline", "latest", "--format", "chrome-trace")
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.name == "timeline.trace.json" and path.parent.parent == tmp_path / "runs"
    doc = json.loads(path.read_text())
    assert doc["displayTimeUnit"] == "ms" and doc["otherData"]["pipeline"] == "mixed"
    assert len(of(doc, ph="X", cat="attempt")) == 1 + sum(ATTEMPTS.values())  # source ran too
    out = tmp_path / "t.json"
    assert cli("--timeline", "latest", "--format", "chrome-trace", "--output", out).returncode == 0
    assert json.loads(out.read_text()) == doc
    wrong = cli("--format", "chrome-trace")
    assert (wrong.returncode, wrong.stderr) == (2, "asyncflow: error: --format goes with --timeline RUN_ID\n")


def test_instances_are_threads_after_their_mapped_task(tmp_path: Path) -> None:
    recorder = RunRecorder()
    make(["u0", "flaky1", "bad2"]).run_sync(
        log=False, checkpoints=False, listeners=[recorder], workdir=tmp_path
    )
    record = recorder.record()
    doc = json.loads(json.dumps(chrome_trace(record)))
    names = {e["tid"]: e["args"]["name"] for e in of(doc, ph="M", name="thread_name")}
    order = [names[tid] for tid in sorted(names)]
    mapped = ["fetch", "fetch[0]", "fetch[1]", "fetch[2]", "parse", "parse[0]", "parse[1]", "parse[2]"]
    assert order == ["run", "urls", *mapped, "summary"]
    sort = {e["tid"]: e["args"]["sort_index"] for e in of(doc, ph="M", name="thread_sort_index")}
    assert sort == {tid: tid for tid in names}
    tid = {name: t for t, name in names.items()}
    (fetch,) = of(doc, cat="mapped", tid=tid["fetch"])
    assert fetch["name"] == "fetch[*]" and fetch["ph"] == "X"
    assert fetch["args"] | {"error": None} == {
        "state": "failed",
        "over": ["urls"],
        "instances": 3,
        "counts": {"succeeded": 2, "failed": 1},
        "cache": None,
        "error": None,
        "reason": None,
    }
    assert fetch["args"]["error"].startswith("MappingError: 1 of 3 instances")
    tasks = of(doc, ph="X", cat="task", tid=tid["fetch[1]"])
    assert [(t["args"]["parent"], t["args"]["index"]) for t in tasks] == [("fetch", 1)]
    attempts = of(doc, ph="X", cat="attempt", tid=tid["fetch[1]"])
    assert [(a["name"], a["args"]["state"]) for a in attempts] == [
        ("fetch[1] #1", "retrying"),
        ("fetch[1] #2", "succeeded"),
    ]
    for name in ("fetch[0]", "fetch[1]", "fetch[2]"):  # each instance inside its mapped task's event
        (task,) = of(doc, ph="X", cat="task", tid=tid[name])
        assert fetch["ts"] - 1 <= task["ts"] and task["ts"] + task["dur"] <= fetch["ts"] + fetch["dur"] + 1
    (skipped,) = of(doc, ph="i", tid=tid["parse[2]"])
    assert skipped["name"] == "skipped" and (skipped["args"]["parent"], skipped["args"]["index"]) == (
        "parse",
        2,
    )
    assert not of(doc, tid=tid["urls"], cat="mapped")

"""Run records: RunRecorder builds them from events only; Pipeline.run(record=True) saves them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mapped_pipeline import SLOW, make
from mixed_pipeline import ATTEMPTS
from mixed_pipeline import pipeline as mixed

import asyncflow
from asyncflow._record_files import list_records, read_record
from asyncflow._recorder import RunRecorder
from asyncflow._records import AttemptState, RunRecord
from asyncflow._store import MemoryStore

E: dict[str, Any] = {"run_id": "r1"}


def _feed(recorder: RunRecorder, *events: asyncflow.Event) -> None:
    for event in events:
        recorder(event)


def test_recorder_turns_event_times_into_epoch_seconds_and_keeps_attempts() -> None:
    rec = RunRecorder()
    before = time.time()
    _feed(
        rec,
        asyncflow.RunStarted(
            **E, time=100.0, pipeline="p", tasks=2, params={"n": 1}, upstream={"a": (), "b": ("a",)}
        ),
        asyncflow.TaskStarted(**E, time=100.5, task="a", attempt=1, cache_key="k" * 64),
        asyncflow.AttemptFailed(
            **E, time=101.0, task="a", attempt=1, error=ValueError("boom"), retry_in=0.25
        ),
        asyncflow.TaskStarted(**E, time=101.25, task="a", attempt=2, cache_key="k" * 64),
        asyncflow.TaskSucceeded(**E, time=102.0, task="a", attempt=2, duration=1.75),
        asyncflow.TaskStarted(**E, time=102.0, task="b", attempt=1),
        asyncflow.AttemptFailed(**E, time=102.5, task="b", attempt=1, error=KeyError("x"), retry_in=None),
        asyncflow.TaskFailed(**E, time=102.5, task="b", attempts=1, error=KeyError("x"), duration=0.5),
        asyncflow.RunFinished(
            **E,
            time=103.0,
            pipeline="p",
            ok=False,
            duration=3.0,
            counts={asyncflow.TaskState.SUCCEEDED: 1, asyncflow.TaskState.FAILED: 1},
        ),
    )
    record = rec.record()
    offset = record.started_at - 100.0
    assert before - 1 <= record.started_at <= time.time() + 1
    assert record.duration == pytest.approx(3.0)
    assert (record.status, record.ok, record.finished) == ("failed", False, True)
    a, b = record.tasks["a"], record.tasks["b"]
    assert (a.state, a.cache, a.cache_key, a.upstream) == (
        asyncflow.TaskState.SUCCEEDED,
        "miss",
        "k" * 64,
        (),
    )
    assert [x.state for x in a.attempts] == [AttemptState.RETRYING, AttemptState.SUCCEEDED]
    first = a.attempts[0]
    assert first.started_at - offset == pytest.approx(100.5)
    assert first.duration == pytest.approx(0.5)
    assert (first.error_type, first.error, first.backoff) == ("ValueError", "boom", 0.25)
    assert a.attempts[1].started_at - offset == pytest.approx(101.25)
    assert a.duration == pytest.approx(1.75)
    assert a.started_at is not None and a.started_at - offset == pytest.approx(100.25)
    assert (b.state, b.cache, b.upstream) == (asyncflow.TaskState.FAILED, None, ("a",))
    assert (b.error_type, b.error) == ("KeyError", "'x'")
    assert [x.state for x in b.attempts] == [AttemptState.FAILED]


def test_record_survives_a_json_round_trip_with_units_in_keys() -> None:
    rec = RunRecorder()
    _feed(
        rec,
        asyncflow.RunStarted(
            **E, time=5.0, pipeline="p", tasks=1, params={"obj": object()}, upstream={"a": ()}
        ),
        asyncflow.TaskCached(**E, time=5.5, task="a", cache_key="c" * 64),
        asyncflow.RunFinished(**E, time=6.0, pipeline="p", ok=True, duration=1.0, counts={}),
    )
    record = rec.record()
    doc = json.loads(json.dumps(record.to_json()))
    assert doc["status"] == "ok"
    assert {"started_at_s", "finished_at_s", "duration_s"} <= set(doc)
    assert doc["params"]["obj"].startswith("<object object")  # not JSON: kept as its repr
    assert doc["tasks"]["a"]["cache"] == "hit"
    assert doc["counts"] == {"cached": 1}
    again = RunRecord.from_json(doc)
    assert again.tasks["a"].state is asyncflow.TaskState.CACHED
    assert again.to_json() == doc


def test_from_json_names_the_bad_field() -> None:
    rec = RunRecorder()
    rec(asyncflow.RunStarted(**E, time=0.0, pipeline="p", tasks=1, upstream={"a": ()}))
    doc = rec.record().to_json()
    doc["tasks"]["a"]["state"] = "exploded"
    with pytest.raises(ValueError, match=r"tasks\.a\.state has an unknown value 'exploded'"):
        RunRecord.from_json(doc)
    del doc["run_id"]
    doc["tasks"]["a"]["state"] = "pending"
    with pytest.raises(ValueError, match="record has no 'run_id'"):
        RunRecord.from_json(doc)
    with pytest.raises(ValueError, match="unsupported record_version 99"):
        RunRecord.from_json({"record_version": 99})


def test_record_of_an_unfinished_run_is_interrupted_and_keeps_open_attempts() -> None:
    rec = RunRecorder()
    _feed(
        rec,
        asyncflow.RunStarted(**E, time=0.0, pipeline="p", tasks=1, upstream={"a": ()}),
        asyncflow.TaskStarted(**E, time=1.0, task="a", attempt=1),
    )
    record = rec.record()
    assert (record.status, record.finished, record.ok) == ("interrupted", False, False)
    assert record.duration == pytest.approx(1.0)
    (attempt,) = record.tasks["a"].attempts
    assert (attempt.state, attempt.finished_at) == (AttemptState.RUNNING, None)


def test_recorder_refuses_a_second_run_and_a_record_before_any() -> None:
    rec = RunRecorder()
    with pytest.raises(RuntimeError, match="no run has started"):
        rec.record()
    rec(asyncflow.RunStarted(**E, time=0.0, pipeline="p", tasks=0))
    with pytest.raises(RuntimeError, match="one recorder per run"):
        rec(asyncflow.RunStarted(run_id="r2", time=1.0, pipeline="p", tasks=0))


async def test_run_with_record_writes_every_kind_of_task(tmp_path: Path, anyio_backend: str) -> None:
    store = MemoryStore()
    first = await mixed.run(workdir=tmp_path, store=store, log=False)
    assert not (tmp_path / "runs").exists()  # opt-in: no record without record=True
    result = await mixed.run(workdir=tmp_path, store=store, log=False, record=True)
    path = tmp_path / "runs" / result.run_id / "record.json"
    record = await read_record(path)
    assert first.run_id != result.run_id
    assert (record.run_id, record.pipeline, record.status) == (result.run_id, "mixed", "failed")
    assert record.params == {"base": 1}
    assert record.versions["backend"] == anyio_backend
    assert set(record.versions) == {"asyncflow", "python", "anyio", "backend"}
    assert record.started_at == pytest.approx(result.started_at, abs=0.05)
    assert record.duration == pytest.approx(result.duration, abs=0.05)
    states = {name: t.state for name, t in record.tasks.items()}
    assert states == {name: t.state for name, t in result.tasks.items()}
    assert {name: len(t.attempts) for name, t in record.tasks.items()} == ATTEMPTS
    assert record.tasks["source"].cache == "hit"
    assert record.tasks["source"].cache_key == result.tasks["source"].cache_key
    flaky = record.tasks["flaky"]
    assert [a.state for a in flaky.attempts] == [AttemptState.RETRYING] * 2 + [AttemptState.SUCCEEDED]
    assert [a.backoff for a in flaky.attempts] == [0.05, 0.1, None]
    assert flaky.attempts[1].started_at - flaky.attempts[0].finished_at >= 0.05 - 0.01  # type: ignore[operator]
    assert flaky.attempts[0].error == "flaky on attempt 1"
    assert record.tasks["broken"].error_type == "RuntimeError"
    assert record.tasks["after_broken"].reason == "upstream task 'broken' failed"
    assert record.tasks["total"].upstream == ("flaky", "source")
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temporary file left


async def test_cancelled_run_still_writes_its_record(tmp_path: Path) -> None:
    p = asyncflow.Pipeline("slow")

    @p.task
    async def sleepy() -> None:
        await anyio.sleep(30)

    with anyio.move_on_after(0.2):
        await p.run(workdir=tmp_path, log=False, record=True)
    (record,) = await list_records(tmp_path)
    assert record.status == "cancelled"
    task = record.tasks["sleepy"]
    assert task.state is asyncflow.TaskState.CANCELLED
    assert task.reason == "the run was cancelled by its caller"
    assert [a.state for a in task.attempts] == [AttemptState.CANCELLED]
    assert 0.1 < record.duration < 5


async def test_an_unwritable_record_is_logged_not_raised(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file where the runs folder should be")
    p = asyncflow.Pipeline("one")

    @p.task
    async def only() -> int:
        return 1

    result = await p.run(workdir=tmp_path, log=False, record=True, checkpoints=False)
    assert result.ok


async def test_list_records_is_newest_first_and_skips_unreadable_ones(tmp_path: Path) -> None:
    p = asyncflow.Pipeline("two")

    @p.task
    async def only() -> int:
        return 1

    ids = [
        (await p.run(workdir=tmp_path, log=False, record=True, checkpoints=False)).run_id for _ in range(2)
    ]
    broken = tmp_path / "runs" / "broken-run"
    broken.mkdir()
    (broken / "record.json").write_text("{not json")
    assert [r.run_id for r in await list_records(tmp_path)] == ids[::-1]
    assert await list_records(tmp_path / "nowhere") == []


# -- mapped tasks --------------------------------------------------------------------------------


async def test_a_mapped_run_records_every_instance_with_its_attempts(
    tmp_path: Path, anyio_backend: str
) -> None:
    items = ["u0", "flaky1", "bad2", "slow3"]
    result = await make(items).run(workdir=tmp_path, log=False, checkpoints=False, record=True)
    path = tmp_path / "runs" / result.run_id / "record.json"
    record = await read_record(path)
    doc = json.loads(path.read_text())
    names = (
        ["urls", "fetch", "parse", "summary"]
        + [f"fetch[{k}]" for k in range(4)]
        + [f"parse[{k}]" for k in range(4)]
    )
    assert list(record.tasks) == names
    assert {n: t.state for n, t in record.tasks.items()} == {n: t.state for n, t in result.tasks.items()}
    assert record.counts == result.counts
    assert doc["counts"] == {"succeeded": 7, "failed": 1, "skipped": 2}  # instances, not the mapped tasks
    fetch = record.tasks["fetch"]
    assert fetch.is_mapped and fetch.instances == tuple(f"fetch[{k}]" for k in range(4))
    assert (fetch.over, fetch.attempts, fetch.error_type) == (("urls",), (), "MappingError")
    assert fetch.error == "1 of 4 instances of task 'fetch' did not succeed: fetch[2]"
    assert doc["tasks"]["fetch"]["mapped"] == {"over": ["urls"], "instances": 4}
    assert "parent" not in doc["tasks"]["fetch"] and "mapped" not in doc["tasks"]["urls"]
    assert [t.name for t in record.instances("fetch")] == list(fetch.instances)
    assert record.instances("urls") == []
    flaky, bad = record.tasks["fetch[1]"], record.tasks["fetch[2]"]
    assert (flaky.parent, flaky.index, flaky.upstream) == ("fetch", 1, ("urls",))
    assert (doc["tasks"]["fetch[1]"]["parent"], doc["tasks"]["fetch[1]"]["index"]) == ("fetch", 1)
    assert [a.state for a in flaky.attempts] == [AttemptState.RETRYING, AttemptState.SUCCEEDED]
    assert [a.state for a in bad.attempts] == [AttemptState.RETRYING, AttemptState.FAILED]
    assert bad.attempts[0].error == "cannot fetch bad2" and bad.attempts[0].backoff == 0.01
    slow = record.tasks["fetch[3]"]
    assert slow.duration is not None and slow.duration >= SLOW - 0.01
    parse = record.tasks["parse[3]"]
    assert (parse.parent, parse.index, parse.upstream) == ("parse", 3, ("fetch[3]",))  # chained
    assert parse.started_at is not None and slow.finished_at is not None
    assert parse.started_at >= slow.finished_at - 1e-6
    skipped = record.tasks["parse[2]"]
    assert (skipped.state, skipped.reason) == (asyncflow.TaskState.SKIPPED, "upstream task 'fetch[2]' failed")
    assert record.tasks["parse"].state is asyncflow.TaskState.SKIPPED and record.tasks["parse"].over == (
        "fetch",
    )
    assert RunRecord.from_json(doc) == record
    again = RunRecord.from_json(doc).to_json()["tasks"]
    assert {n: (t.get("parent"), t.get("index"), t.get("mapped")) for n, t in again.items()} == {
        n: (t.get("parent"), t.get("index"), t.get("mapped")) for n, t in doc["tasks"].items()
    }


async def test_a_cached_mapped_task_spans_the_loading_of_its_instances(
    tmp_path: Path, anyio_backend: str
) -> None:
    store = MemoryStore()
    p = make(["a", "b", "c"])
    await p.run(workdir=tmp_path, log=False, store=store)
    result = await p.run(workdir=tmp_path, log=False, store=store, record=True)
    (record,) = await list_records(tmp_path)
    assert record.run_id == result.run_id and record.status == "ok"
    fetch = record.tasks["fetch"]
    assert (fetch.state, fetch.cache) == (asyncflow.TaskState.CACHED, "hit")
    assert [t.state for t in record.instances("fetch")] == [asyncflow.TaskState.CACHED] * 3
    assert [t.cache for t in record.instances("fetch")] == ["hit"] * 3
    assert fetch.started_at is not None and fetch.finished_at is not None and fetch.duration is not None
    assert fetch.started_at <= min(t.finished_at or 0 for t in record.instances("fetch"))
    assert fetch.duration == pytest.approx(fetch.finished_at - fetch.started_at, abs=1e-5)
    assert record.counts == {asyncflow.TaskState.SUCCEEDED: 1, asyncflow.TaskState.CACHED: 7}  # urls runs


def test_a_record_written_before_mapped_tasks_reads_back_unchanged() -> None:
    # The layout of record_version 1 before instances and mapped tasks were recorded.
    doc: dict[str, Any] = {
        "record_version": 1,
        "run_id": "20240501T100003-abcdef",
        "pipeline": "prices",
        "status": "ok",
        "ok": True,
        "finished": True,
        "started_at_s": 1714557603.25,
        "finished_at_s": 1714557603.66,
        "duration_s": 0.41,
        "params": {"holdout": 24},
        "versions": {"asyncflow": "0.1.0", "python": "3.11.9", "anyio": "4.6.0", "backend": "asyncio"},
        "counts": {"succeeded": 2},
        "tasks": {
            name: {
                "state": "succeeded",
                "upstream": up,
                "cache": "miss",
                "cache_key": "9f2c" * 16,
                "reason": None,
                "error_type": None,
                "error": None,
                "started_at_s": 1714557603.3,
                "finished_at_s": 1714557603.4,
                "duration_s": 0.1,
                "attempts": [
                    {
                        "attempt": 1,
                        "state": "succeeded",
                        "started_at_s": 1714557603.3,
                        "finished_at_s": 1714557603.4,
                        "duration_s": 0.1,
                        "error_type": None,
                        "error": None,
                        "backoff_s": None,
                    }
                ],
            }
            for name, up in (("ingest", []), ("fit[0]", ["ingest"]))  # a name, not an instance
        },
    }
    record = RunRecord.from_json(doc)
    assert list(record.tasks) == ["ingest", "fit[0]"]
    for task in record.tasks.values():
        assert (task.parent, task.index, task.instances, task.over, task.is_mapped) == (
            None,
            None,
            None,
            (),
            False,
        )
        assert len(task.attempts) == 1
    assert record.counts == {asyncflow.TaskState.SUCCEEDED: 2}
    assert record.to_json() == doc  # written back with no new keys

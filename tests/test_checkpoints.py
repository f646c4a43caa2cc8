"""Checkpoints: cache keys, the stores, and the atomic JSON file helpers, on asyncio and trio.

The file store keeps one folder per pipeline, ``<workdir>/checkpoints/<pipeline>/``: a
journal (``journal.jsonl``, one JSON line per save or delete, the last line of a task
wins) and a file per result over 16 KiB or not JSON. See ``asyncflow/_store.py``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from journal import journal_of, saved
from loguru import logger

import asyncflow
import asyncflow._journal
from asyncflow import (
    JSON,
    PICKLE,
    Checkpoint,
    CheckpointError,
    CheckpointReadError,
    CheckpointStore,
    Event,
    FileStore,
    MemoryStore,
    Pipeline,
    RunResult,
    TaskCached,
    TaskState,
    read_json,
    write_json,
)
from asyncflow._pipeline import default_file_store
from asyncflow._store import INLINE_LIMIT, file_stem


async def run(p: Pipeline, workdir: Path, **kwargs: Any) -> RunResult:
    kwargs.setdefault("log", False)
    return await p.run(workdir=workdir, **kwargs)


def states(result: RunResult) -> dict[str, TaskState]:
    return {name: t.state for name, t in result.tasks.items()}


S, C = TaskState.SUCCEEDED, TaskState.CACHED


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """The messages of the warnings asyncflow logs while the test runs."""
    messages: list[str] = []
    logger.enable("asyncflow")
    sink = logger.add(lambda message: messages.append(message.record["message"]), level="WARNING")
    try:
        yield messages
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")


def _lines(journal: Path) -> list[bytes]:
    """The journal's lines, without their newlines (a torn last line included)."""
    data = journal.read_bytes()
    return data.split(b"\n")[:-1] + ([data.rsplit(b"\n", 1)[-1]] if not data.endswith(b"\n") else [])


def _assert_whole(journal: Path) -> list[dict[str, Any]]:
    """Every line of ``journal`` is complete JSON, the last one too; return them decoded."""
    data = journal.read_bytes()
    assert data.endswith(b"\n"), data[-80:]
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, allow_nan=False).encode()).hexdigest()


def _chain(calls: Counter[str]) -> Pipeline:
    p = Pipeline("chain")

    @p.task
    async def numbers() -> list[int]:
        calls["numbers"] += 1
        return [1, 2, 3]

    @p.task
    def doubled(numbers: list[int]) -> list[int]:
        calls["doubled"] += 1
        return [2 * n for n in numbers]

    @p.task
    async def total(doubled: list[int], numbers: list[int]) -> dict[str, int]:
        calls["total"] += 1
        return {"sum": sum(doubled), "count": len(numbers)}

    @p.task
    async def label() -> str:
        calls["label"] += 1
        return "ünïcode ✓"

    return p


# -- reruns ---------------------------------------------------------------------------------


async def test_second_run_is_all_cached_and_runs_no_task_body(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    p = _chain(calls)
    first = await run(p, tmp_path)
    assert set(states(first).values()) == {S}
    assert calls == dict.fromkeys(["numbers", "doubled", "total", "label"], 1)

    events: list[Event] = []
    second = await run(p, tmp_path, listeners=[events.append])
    assert states(second) == dict.fromkeys(["numbers", "doubled", "total", "label"], C)
    assert calls == dict.fromkeys(["numbers", "doubled", "total", "label"], 1)
    assert {n: t.result for n, t in second.tasks.items()} == {n: t.result for n, t in first.tasks.items()}
    assert {n: t.cache_key for n, t in second.tasks.items()} == {
        n: t.cache_key for n, t in first.tasks.items()
    }
    assert all(t.attempts == 0 for t in second.tasks.values())
    assert sorted(e.task for e in events if isinstance(e, TaskCached)) == sorted(second.tasks)
    assert second.ok
    assert second.counts == {C: 4}


async def test_journal_holds_task_key_and_result(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    before = time.time()
    result = await run(_chain(calls), tmp_path)
    journal = tmp_path / "checkpoints" / "chain" / "journal.jsonl"
    assert journal == journal_of(tmp_path, "chain")
    lines = _assert_whole(journal)
    assert sorted(line["task"] for line in lines) == ["doubled", "label", "numbers", "total"]
    docs = {line["task"]: line for line in lines}
    doc = docs["total"]
    assert doc["key"] == result.tasks["total"].cache_key
    assert len(doc["key"]) == 64
    assert doc["result"] == {"sum": 12, "count": 3}
    assert before - 1 <= doc["at"] <= time.time() + 1
    assert (doc["ser"], doc["digest"], doc["size"]) == (
        "json",
        _digest({"sum": 12, "count": 3}),
        len(json.dumps({"sum": 12, "count": 3}).encode()),
    )
    parts = doc["parts"]
    assert set(parts) == {"code", "code_parts", "params", "extra", "upstream", "serializer"}
    assert (parts["params"], parts["serializer"]) == ({}, "json")
    # Upstream results' digests, not their keys, are in the key (early cutoff).
    assert ["doubled", docs["doubled"]["digest"]] in parts["upstream"]
    assert ["numbers", docs["numbers"]["digest"]] in parts["upstream"]
    assert "ünïcode ✓" in journal.read_text(encoding="utf-8")  # UTF-8, not escaped
    assert [f.name for f in (tmp_path / "checkpoints").iterdir()] == ["chain"]
    assert [f.name for f in journal.parent.iterdir()] == ["journal.jsonl"]  # small results inline


async def test_downstream_receives_the_json_value_on_both_runs(tmp_path: Path) -> None:
    p = Pipeline("p")
    received: list[Any] = []

    @p.task
    async def pair() -> Any:
        return (1, 2)

    @p.task
    async def mapping() -> Any:
        return {1: "one", "nested": ("a", 1.5)}

    @p.task(checkpoint=False)
    async def consumer(pair: Any, mapping: Any) -> str:
        received.append((pair, mapping))
        return "ok"

    first = await run(p, tmp_path)
    second = await run(p, tmp_path)
    assert states(second) == {"pair": C, "mapping": C, "consumer": S}
    expected = ([1, 2], {"1": "one", "nested": ["a", 1.5]})
    assert received == [expected, expected]
    assert type(received[0][0]) is list
    assert type(received[1][0]) is list
    assert first.tasks["pair"].result == second.tasks["pair"].result == [1, 2]
    assert first.tasks["mapping"].result == second.tasks["mapping"].result == expected[1]


async def test_force_reruns_everything_and_rewrites_checkpoints(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    p = _chain(calls)
    await run(p, tmp_path)
    forced = await run(p, tmp_path, force=True)
    assert set(states(forced).values()) == {S}
    assert calls == dict.fromkeys(["numbers", "doubled", "total", "label"], 2)
    again = await run(p, tmp_path)
    assert set(states(again).values()) == {C}
    assert calls == dict.fromkeys(["numbers", "doubled", "total", "label"], 2)


async def test_checkpoints_false_writes_nothing_and_always_runs(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    p = _chain(calls)
    for _ in range(2):
        result = await run(p, tmp_path, checkpoints=False)
        assert set(states(result).values()) == {S}
        assert all(t.cache_key is None for t in result.tasks.values())
    assert calls == dict.fromkeys(["numbers", "doubled", "total", "label"], 2)
    assert result.tasks["total"].result == {"sum": 12, "count": 3}
    assert not (tmp_path / "checkpoints").exists()
    written = [path.name for path in await anyio.to_thread.run_sync(lambda: list(tmp_path.rglob("*")))]
    assert not [name for name in written if any(task in name for task in calls)]


async def test_memory_store_stands_in_for_files(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    p = _chain(calls)
    store = MemoryStore()
    await run(p, tmp_path, store=store)
    second = await run(p, tmp_path, store=store)
    assert set(states(second).values()) == {C}
    assert sorted(store.texts) == ["doubled", "label", "numbers", "total"]
    total = json.loads(store.texts["total"])  # the journal line the file store would write
    expected = ("total", second.tasks["total"].cache_key, {"sum": 12, "count": 3})
    assert (total["task"], total["key"], total["result"]) == expected
    assert not (tmp_path / "checkpoints").exists()
    # A fresh store has nothing: everything runs again.
    third = await run(p, tmp_path, store=MemoryStore())
    assert set(states(third).values()) == {S}


async def test_task_with_checkpoint_false_always_runs_and_so_does_its_downstream(tmp_path: Path) -> None:
    # Its result may change from run to run (a clock, a live feed), so a downstream task
    # cached on its key alone would hand on a stale value (found by a user).
    p = Pipeline("p")
    calls: Counter[str] = Counter()

    @p.task(checkpoint=False)
    async def live() -> int:
        calls["live"] += 1
        return 5 * calls["live"]

    @p.task
    async def stored(live: int) -> int:
        calls["stored"] += 1
        return live + 1

    @p.task
    async def unrelated() -> int:
        calls["unrelated"] += 1
        return 0

    await run(p, tmp_path)
    second = await run(p, tmp_path)
    assert states(second) == {"live": S, "stored": S, "unrelated": C}
    assert second.tasks["stored"].result == 11
    assert calls == {"live": 2, "stored": 2, "unrelated": 1}
    assert sorted(saved(tmp_path, "p")) == ["stored", "unrelated"]


# -- invalidation ---------------------------------------------------------------------------


def _versioned(calls: Counter[str], version: int, *, retries: int = 0) -> Pipeline:
    """The same pipeline, with one of two bodies for task ``b``.

    a -> b -> c, b -(after)-> d, a -> sibling, unrelated.
    """
    p = Pipeline("versioned")

    @p.task(retries=retries)
    async def a() -> int:
        calls["a"] += 1
        return 1

    if version == 1:

        @p.task
        async def b(a: int) -> int:
            calls["b"] += 1
            return a + 1

    else:

        @p.task
        async def b(a: int) -> int:
            calls["b"] += 1
            return a + 100

    @p.task
    async def c(b: int) -> int:
        calls["c"] += 1
        return b * 2

    @p.task(after=["b"])
    async def d() -> str:
        calls["d"] += 1
        return "d"

    @p.task
    async def sibling(a: int) -> int:
        calls["sibling"] += 1
        return a

    @p.task
    async def unrelated() -> int:
        calls["unrelated"] += 1
        return 0

    return p


async def test_code_change_invalidates_task_and_downstream_only(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    await run(_versioned(calls, 1), tmp_path)
    assert set(calls.values()) == {1}

    changed = await run(_versioned(calls, 2), tmp_path)
    assert states(changed) == {"a": C, "b": S, "c": S, "d": S, "sibling": C, "unrelated": C}
    assert changed.tasks["c"].result == 202
    assert calls == {"a": 1, "b": 2, "c": 2, "d": 2, "sibling": 1, "unrelated": 1}

    # Back to the first body: its checkpoint was overwritten, so b runs again.
    back = await run(_versioned(calls, 1), tmp_path)
    assert states(back) == {"a": C, "b": S, "c": S, "d": S, "sibling": C, "unrelated": C}
    assert back.tasks["c"].result == 4


async def test_same_code_redefined_stays_cached(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    await run(_versioned(calls, 1), tmp_path)
    # A fresh Pipeline object from the same definitions, with other decorator options.
    again = await run(_versioned(calls, 1, retries=3), tmp_path)
    assert set(states(again).values()) == {C}
    assert set(calls.values()) == {1}


def _exec_task(source: str) -> Callable[..., Awaitable[Any]]:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace["produce"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("second_source", "reruns"),
    [
        ("async def produce():\n    return 1\n", False),
        ("async def produce():\n    return 2\n", True),
        ("async def produce():\n    return [1]\n", True),
    ],
)
async def test_code_change_detected_without_source(tmp_path: Path, second_source: str, reruns: bool) -> None:
    # A Counter, not a list: a closure over a flat list of plain data is part of the code
    # digest (see asyncflow.code_digest), so a list the task appends to would change its key.
    calls: Counter[str] = Counter()

    def build(source: str) -> Pipeline:
        p = Pipeline("exec")
        p.task(_exec_task(source))

        @p.task
        async def consume(produce: Any) -> Any:
            calls["consume"] += 1
            return produce

        return p

    await run(build("async def produce():\n    return 1\n"), tmp_path)
    second = await run(build(second_source), tmp_path)
    expected = S if reruns else C
    assert states(second) == {"produce": expected, "consume": expected}
    assert calls["consume"] == (2 if reruns else 1)


async def test_cache_key_fn_change_invalidates_downstream(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    calls: Counter[str] = Counter()
    p = Pipeline("files", params={"csv": str(data)})

    @p.task(cache_key_fn=lambda params: asyncflow.file_digest(params["csv"]))
    def load() -> str:
        calls["load"] += 1
        return data.read_text()

    @p.task
    async def rows(load: str) -> int:
        calls["rows"] += 1
        return len(load.splitlines()) - 1

    @p.task
    async def other() -> str:
        calls["other"] += 1
        return "x"

    workdir = tmp_path / "work"
    first = await run(p, workdir)
    assert first.tasks["rows"].result == 1
    unchanged = await run(p, workdir)
    assert set(states(unchanged).values()) == {C}

    data.write_text("a,b\n1,2\n3,4\n5,6\n")
    changed = await run(p, workdir)
    assert states(changed) == {"load": S, "rows": S, "other": C}
    assert changed.tasks["rows"].result == 3
    assert calls == {"load": 2, "rows": 2, "other": 1}


async def test_async_cache_key_fn_is_awaited(tmp_path: Path) -> None:
    version = {"v": 1}
    p = Pipeline("p")

    async def key(params: Any) -> int:
        await anyio.lowlevel.checkpoint()
        return version["v"]

    @p.task(cache_key_fn=key)
    async def fetch() -> int:
        return version["v"]

    await run(p, tmp_path)
    assert states(await run(p, tmp_path)) == {"fetch": C}
    version["v"] = 2
    rerun = await run(p, tmp_path)
    assert states(rerun) == {"fetch": S}
    assert rerun.tasks["fetch"].result == 2


async def test_failing_cache_key_fn_fails_the_task(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task(cache_key_fn=lambda params: asyncflow.file_digest(tmp_path / "missing.csv"))
    async def load() -> int:
        return 1

    @p.task
    async def after_load(load: int) -> int:
        return load

    result = await run(p, tmp_path / "work")
    assert result.tasks["load"].state is TaskState.FAILED
    assert isinstance(result.tasks["load"].error, FileNotFoundError)
    assert result.tasks["load"].attempts == 0
    assert result.tasks["after_load"].state is TaskState.SKIPPED


async def test_param_change_invalidates_tasks_that_declare_params(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    p = Pipeline("p", params={"n": 1})

    @p.task
    async def scaled(params: dict[str, Any]) -> int:
        calls["scaled"] += 1
        return 10 * int(params["n"])

    @p.task
    async def report(scaled: int) -> str:
        calls["report"] += 1
        return f"value {scaled}"

    @p.task
    async def constant() -> int:
        calls["constant"] += 1
        return 7

    await run(p, tmp_path)
    assert set(states(await run(p, tmp_path, params={"n": 1})).values()) == {C}

    changed = await run(p, tmp_path, params={"n": 2})
    assert states(changed) == {"scaled": S, "report": S, "constant": C}
    assert changed.tasks["report"].result == "value 20"
    assert calls == {"scaled": 2, "report": 2, "constant": 1}

    same = await run(p, tmp_path, params={"n": 2})
    assert set(states(same).values()) == {C}


def _edited(line: bytes, **changes: Any) -> bytes:
    """``line`` (a journal line) with ``changes`` to its fields; a ``None`` value removes one."""
    doc = json.loads(line)
    for name, value in changes.items():
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = value
    return json.dumps(doc).encode()


_TORN = "checkpoint journal {journal} ends in a torn line (a run was killed mid-write); ignoring it"
_BAD_LINE = "line {n} of checkpoint journal {journal} is corrupted; ignoring it"
_NO_FILE = (
    "checkpoint file {folder}/numbers.0123456789abcdef.json of task 'numbers' is missing; "
    "treating it as missing"
)


@pytest.mark.parametrize(
    ("corrupt", "warning"),
    [
        pytest.param(lambda line, other: b"\xff\xfe\x00garbage", _BAD_LINE, id="binary-garbage"),
        pytest.param(lambda line, other: b"not json at all", _BAD_LINE, id="text-garbage"),
        pytest.param(lambda line, other: line[: len(line) // 2], _BAD_LINE, id="truncated-mid-journal"),
        pytest.param(None, _TORN, id="torn-last-line"),
        pytest.param(lambda line, other: other, None, id="another-tasks-line"),
        pytest.param(lambda line, other: b"[1, 2, 3]", _BAD_LINE, id="not-an-object"),
        pytest.param(lambda line, other: b'{"task": "numbers"}', _BAD_LINE, id="missing-fields"),
        pytest.param(lambda line, other: _edited(line, key=5), _BAD_LINE, id="wrong-type-key"),
        pytest.param(lambda line, other: _edited(line, at="yesterday"), _BAD_LINE, id="wrong-type-at"),
        pytest.param(lambda line, other: _edited(line, ser=None), _BAD_LINE, id="no-serializer"),
        pytest.param(lambda line, other: _edited(line, result=None), _BAD_LINE, id="no-result"),
        pytest.param(
            lambda line, other: (
                line[: line.index(b', "result": ')] + b', "result": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            ),
            _BAD_LINE,
            id="nested-too-deeply",
        ),
        pytest.param(
            lambda line, other: _edited(
                line, result=None, file="numbers.0123456789abcdef.json", digest="0123456789abcdef" + "0" * 48
            ),
            _NO_FILE,
            id="names-a-missing-file",
        ),
        pytest.param(lambda line, other: b"", _BAD_LINE, id="empty-line"),
    ],
)
async def test_corrupted_journal_line_is_treated_as_missing(
    tmp_path: Path,
    warnings_logged: list[str],
    corrupt: Callable[[bytes, bytes], bytes] | None,
    warning: str | None,
) -> None:
    calls: Counter[str] = Counter()
    p = _chain(calls)
    await run(p, tmp_path)
    journal = journal_of(tmp_path, "chain")
    lines = _lines(journal)
    [i] = [n for n, line in enumerate(lines) if json.loads(line)["task"] == "numbers"]
    [other] = [line for line in lines if json.loads(line)["task"] == "label"]
    if corrupt is None:  # numbers' line last, cut in half by a crash: no newline
        torn = lines.pop(i)
        journal.write_bytes(b"".join(line + b"\n" for line in lines) + torn[: len(torn) // 2])
    else:
        lines[i] = corrupt(lines[i], other)
        journal.write_bytes(b"".join(line + b"\n" for line in lines))

    result = await run(p, tmp_path)
    assert result.ok
    # numbers re-runs; its result is unchanged, so everything downstream stays cached.
    assert states(result) == {"numbers": S, "doubled": C, "total": C, "label": C}
    assert calls["numbers"] == 2
    assert result.tasks["total"].result == {"sum": 12, "count": 3}
    if warning is None:  # a line of another task is no corruption: numbers has no checkpoint
        assert warnings_logged == []
    else:
        expected = warning.format(n=i + 1, journal=journal, folder=journal.parent)
        assert warnings_logged == [expected]
    assert saved(tmp_path, "chain")["numbers"]["result"] == [1, 2, 3]
    _assert_whole(journal)  # the next write cut the torn line off or rewrote the journal

    warnings_logged.clear()
    assert set(states(await run(p, tmp_path)).values()) == {C}
    assert warnings_logged == []  # repaired: nothing corrupted is left to warn about


# -- results that are not JSON --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param({1, 2, 3}, "set", id="set"),
        pytest.param({"when": object()}, "object", id="nested-object"),
        pytest.param(b"bytes", "bytes", id="bytes"),
    ],
)
async def test_non_json_result_fails_with_checkpoint_error(
    tmp_path: Path, value: Any, type_name: str
) -> None:
    p = Pipeline("p")
    calls: Counter[str] = Counter()

    @p.task(retries=2, retry_delay=0)
    async def produce() -> Any:
        calls["produce"] += 1
        return value

    @p.task
    async def consume(produce: Any) -> Any:
        return produce

    result = await run(p, tmp_path)
    run_ = result.tasks["produce"]
    assert run_.state is TaskState.FAILED
    error = run_.error
    assert isinstance(error, CheckpointError)
    assert error.task == "produce"
    assert "'produce'" in str(error)
    assert type_name in str(error)
    assert "checkpoint=False" in str(error)
    assert isinstance(error.__cause__, TypeError)
    assert calls["produce"] == 1  # not retried
    assert result.tasks["consume"].state is TaskState.SKIPPED
    assert saved(tmp_path, "p") == {}
    assert [f for f in (tmp_path / "checkpoints").rglob("*") if f.is_file()] == []  # nothing stored


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"x": [1.0, math.nan]}])
async def test_nan_and_infinity_results_are_rejected(tmp_path: Path, value: Any) -> None:
    p = Pipeline("p")

    @p.task
    async def produce() -> Any:
        return value

    result = await run(p, tmp_path)
    error = result.tasks["produce"].error
    assert isinstance(error, CheckpointError)
    assert isinstance(error.__cause__, ValueError)
    assert "JSON" in str(error)


async def test_checkpoint_false_task_may_return_anything(tmp_path: Path) -> None:
    p = Pipeline("p")
    marker = object()

    @p.task(checkpoint=False)
    async def produce() -> Any:
        return {"items": {1, 2}, "marker": marker, "nan": math.nan}

    @p.task(checkpoint=False)
    async def consume(produce: Any) -> Any:
        return produce

    result = await run(p, tmp_path)
    assert result.ok
    received = result.tasks["consume"].result
    assert received["items"] == {1, 2}
    assert received["marker"] is marker


# -- the store contract ---------------------------------------------------------------------


class _Harness:
    """A store under test; ``reopen()`` is the same checkpoints as a new run's store sees them."""

    def __init__(
        self,
        store: CheckpointStore,
        corrupt: Callable[[str, str], None],
        reopen: Callable[[], CheckpointStore],
    ) -> None:
        self.store = store
        self.corrupt = corrupt
        self.reopen = reopen


@pytest.fixture(params=["file", "memory"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> _Harness:
    if request.param == "file":
        directory = tmp_path / "deep" / "checkpoints"
        file_store = FileStore(directory)

        def corrupt_file(task: str, text: str) -> None:
            # Replace the task's journal lines with ``text``: a new store reads the journal again.
            lines = [line for line in _lines(file_store.journal) if json.loads(line)["task"] != task]
            corrupted = text.encode("utf-8", "surrogateescape")  # "\udcff" is the byte 0xff
            file_store.journal.write_bytes(b"".join(line + b"\n" for line in [*lines, corrupted]))

        return _Harness(file_store, corrupt_file, lambda: FileStore(directory))
    memory_store = MemoryStore()

    def corrupt_memory(task: str, text: str) -> None:
        memory_store.texts[task] = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    return _Harness(memory_store, corrupt_memory, lambda: memory_store)


_LINE = '"key": "k", "at": 1.0, "ser": "json", "digest": "d", "size": 1'


class TestStoreContract:
    """Every CheckpointStore implementation behaves the same."""

    def test_is_a_checkpoint_store(self, harness: _Harness) -> None:
        assert isinstance(harness.store, CheckpointStore)

    async def test_save_load_roundtrip(self, harness: _Harness) -> None:
        store = harness.store
        before = time.time()
        saved = await store.save("task_a", "k" * 64, {"rows": (1, 2), "name": "é", "none": None})
        assert isinstance(saved, Checkpoint)
        assert saved.task == "task_a"
        assert saved.cache_key == "k" * 64
        assert saved.result == {"rows": [1, 2], "name": "é", "none": None}  # as it loads back
        assert before - 1 <= saved.saved_at <= time.time() + 1
        loaded = await store.load("task_a")
        assert loaded == saved
        assert await harness.reopen().load("task_a") == saved
        assert (saved.serializer, saved.size) == (
            "json",
            len('{"rows": [1, 2], "name": "é", "none": null}'.encode()),
        )
        assert saved.digest == _digest({"rows": [1, 2], "name": "é", "none": None})

    async def test_key_parts_roundtrip(self, harness: _Harness) -> None:
        parts = {"code": "c" * 64, "params": {"n": "d" * 64}, "upstream": [["a", "e" * 64]]}
        saved = await harness.store.save("t", "k", [1], key_parts=parts)
        assert saved.key_parts == parts
        reopened = await harness.reopen().load("t")
        assert reopened is not None and reopened.key_parts == parts

    async def test_load_missing_is_none(self, harness: _Harness) -> None:
        assert await harness.store.load("never_saved") is None
        assert await harness.reopen().load("never_saved") is None

    async def test_save_overwrites(self, harness: _Harness) -> None:
        store = harness.store
        await store.save("t", "old", 1)
        await store.save("t", "new", 2)
        for loaded in (await store.load("t"), await harness.reopen().load("t")):
            assert loaded is not None
            assert (loaded.cache_key, loaded.result) == ("new", 2)

    async def test_tasks_are_independent(self, harness: _Harness) -> None:
        store = harness.store
        await store.save("one", "k1", 1)
        await store.save("two", "k2", 2)
        one, two = await store.load("one"), await store.load("two")
        assert one is not None and two is not None
        assert (one.result, two.result) == (1, 2)

    async def test_delete(self, harness: _Harness) -> None:
        store = harness.store
        await store.save("t", "k", [1])
        await store.save("keep", "k", [2])
        await store.delete("t")
        assert await store.load("t") is None
        assert await store.load("keep") is not None
        assert await harness.reopen().load("t") is None  # the deletion is durable too
        assert await harness.reopen().load("keep") is not None
        await store.delete("t")  # deleting what is not there is fine
        await store.delete("never_saved")
        await store.save("t", "again", [3])  # and a task saved after its deletion loads
        again = await harness.reopen().load("t")
        assert again is not None and again.result == [3]

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "garbage",
            "\udcff\x00 not utf-8",
            '{"task": "t", ' + _LINE + ', "result": [1, 2',
            '{"task": "other", ' + _LINE + ', "result": 1}',
            '{"task": "t", "at": 1.0, "ser": "json", "digest": "d", "size": 1, "result": 1}',
            '{"task": "t", ' + _LINE + "}",
            '{"task": "t", ' + _LINE.replace('"k"', "null") + ', "result": 1}',
            '{"task": "t", ' + _LINE.replace("1.0", '"yesterday"') + ', "result": 1}',
            '{"task": "t", ' + _LINE.replace('"ser": "json", ', "") + ', "result": 1}',
            '{"task": "t", ' + _LINE.replace('"d"', "5") + ', "result": 1}',
            '{"task": 5, ' + _LINE + ', "result": 1}',
            '{"task": "t", ' + _LINE + ', "file": "t.0123456789abcdef.json"}',
            '{"task": "t", ' + _LINE + ', "result": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "null",
            '["t", "k"]',
        ],
        ids=lambda text: text[:60] if len(text) < 1000 else "nested-too-deeply",
    )
    async def test_corrupted_is_none(self, harness: _Harness, text: str) -> None:
        await harness.store.save("t", "k", 1)
        await harness.store.save("u", "k", 2)
        harness.corrupt("t", text)
        store = harness.reopen()
        assert await store.load("t") is None
        untouched = await store.load("u")  # a corrupted line spoils no other checkpoint
        assert untouched is not None and untouched.result == 2

    @pytest.mark.parametrize(
        ("value", "error"),
        [({1, 2}, TypeError), (math.nan, ValueError), ([math.inf], ValueError), (object(), TypeError)],
    )
    async def test_non_json_is_rejected_and_previous_kept(
        self, harness: _Harness, value: Any, error: type[Exception]
    ) -> None:
        store = harness.store
        await store.save("t", "k", "previous")
        with pytest.raises(error):
            await store.save("t", "k2", value)
        for loaded in (await store.load("t"), await harness.reopen().load("t")):
            assert loaded is not None
            assert (loaded.cache_key, loaded.result) == ("k", "previous")


async def test_file_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "cp")
    assert store.journal == tmp_path / "cp" / "journal.jsonl"
    for i in range(5):
        await store.save("t", f"k{i}", list(range(i)))
    with pytest.raises(TypeError):
        await store.save("t", "bad", {1})
    big = await store.save("big", "k", "x" * (INLINE_LIMIT + 1))
    pickled = await store.save("p", "k", {1, 2}, serializer=PICKLE)
    assert store.path("big", JSON, big.digest) == tmp_path / "cp" / f"big.{big.digest[:16]}.json"
    assert store.path("p", PICKLE, pickled.digest) == tmp_path / "cp" / f"p.{pickled.digest[:16]}.pkl"
    assert sorted(f.name for f in (tmp_path / "cp").iterdir()) == sorted(
        ["journal.jsonl", f"big.{big.digest[:16]}.json", f"p.{pickled.digest[:16]}.pkl"]
    )
    assert asyncflow._files.temporary_files(tmp_path / "cp") == []
    loaded = await store.load("t")
    assert loaded is not None and (loaded.cache_key, loaded.result) == ("k4", [0, 1, 2, 3])


async def test_file_store_creates_its_folder_on_the_first_save_only(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "a" / "b")
    assert await store.load("t") is None
    await store.delete("t")
    assert not (tmp_path / "a").exists()
    await store.save("t", "k", 1)
    assert [f.name for f in (tmp_path / "a" / "b").iterdir()] == ["journal.jsonl"]


async def test_unreadable_journal_raises_and_is_never_taken_for_missing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    (tmp_path / "journal.jsonl").mkdir()  # a directory where the journal should be
    with pytest.raises(CheckpointReadError) as caught:
        await store.load("t")
    assert isinstance(caught.value, OSError) and caught.value.path == str(tmp_path / "journal.jsonl")
    with pytest.raises(CheckpointReadError):
        await FileStore(tmp_path).load("t")


async def test_unreadable_result_file_fails_the_task_without_running_it(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    p = Pipeline("big")

    @p.task
    async def large() -> list[str]:
        calls["large"] += 1
        return ["x" * 100] * 500  # over 16 KiB: a file of its own

    @p.task
    async def size(large: list[str]) -> int:
        calls["size"] += 1
        return len(large)

    @p.task
    async def other() -> int:
        calls["other"] += 1
        return 1

    await run(p, tmp_path)
    file = journal_of(tmp_path, "big").parent / saved(tmp_path, "big")["large"]["file"]
    file.unlink()
    file.mkdir()  # cannot be read, yet is not missing
    result = await run(p, tmp_path)
    error = result.tasks["large"].error
    assert isinstance(error, CheckpointError) and error.task == "large"
    assert "the task was not run again, to keep finished work" in str(error)
    assert isinstance(error.__cause__, CheckpointReadError) and error.__cause__.path == str(file)
    assert states(result) == {"large": TaskState.FAILED, "size": TaskState.SKIPPED, "other": C}
    assert calls == {"large": 1, "size": 1, "other": 1}


# -- the journal ----------------------------------------------------------------------------


async def test_journal_survives_a_torn_last_line_and_the_next_save_is_readable(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    first = FileStore(tmp_path)
    await first.save("one", "k1", [1])
    await first.save("two", "k2", {"v": 2})
    with first.journal.open("ab") as f:  # a crash in the middle of appending three's line
        f.write(b'{"task": "three", "key": "k3", "at": 1.0, "ser": "js')

    store = FileStore(tmp_path)
    assert await store.load("three") is None
    one = await store.load("one")
    assert one is not None and one.result == [1]
    assert warnings_logged == [
        f"checkpoint journal {first.journal} ends in a torn line (a run was killed mid-write); ignoring it"
    ]
    await store.save("three", "k3", "third")
    await store.save("four", "k4", 4)  # and a save after that one, in another batch

    lines = _assert_whole(first.journal)  # the torn line was cut off, not glued to the next one
    assert sorted(line["task"] for line in lines) == ["four", "one", "three", "two"]
    warnings_logged.clear()
    reopened = FileStore(tmp_path)
    loaded = {task: await reopened.load(task) for task in ("one", "two", "three", "four")}
    assert {task: c.result for task, c in loaded.items() if c is not None} == {
        "one": [1],
        "two": {"v": 2},
        "three": "third",
        "four": 4,
    }
    assert warnings_logged == []


async def test_a_failed_append_spoils_neither_the_old_checkpoint_nor_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path)
    await store.save("t", "old", "previous")
    real_append = asyncflow._files.append_durably

    def append_half(path: Path, data: bytes) -> None:
        with path.open("ab") as f:  # the disk fills up half-way through the line
            f.write(data[: len(data) // 2])

    async def disk_full_mid_write(path: Path, data: bytes, **kwargs: Any) -> int:
        await anyio.to_thread.run_sync(append_half, path, data)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(asyncflow._journal, "append_durably", disk_full_mid_write)
    with pytest.raises(OSError, match="No space left on device"):
        await store.save("t", "new", "never stored")
    monkeypatch.setattr(asyncflow._journal, "append_durably", real_append)
    await store.save("u", "k", "saved after the disk was freed")

    reopened = FileStore(tmp_path)
    t, u = await reopened.load("t"), await reopened.load("u")
    assert t is not None and (t.cache_key, t.result) == ("old", "previous")
    assert u is not None and u.result == "saved after the disk was freed"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../outside.json", id="outside"),
        pytest.param("/ABSOLUTE/outside.json", id="absolute"),
        pytest.param("u.*", id="another-tasks-file"),
    ],
)
async def test_a_journal_line_names_only_its_own_result_file(tmp_path: Path, name: str) -> None:
    # A result file is <task>.<16 hex digits of its digest><suffix>, beside the journal; a
    # line naming any other file (outside the folder, another task's) is corrupted. With
    # serializer="pickle" loading such a file would run code found by its name alone.
    store = FileStore(tmp_path / "p")
    await store.save("t", "k", "mine")
    await store.save("u", "k", "y" * (INLINE_LIMIT + 1))  # u's own file
    (tmp_path / "outside.json").write_text('"not a checkpoint of this store"')
    name = name.replace("/ABSOLUTE", str(tmp_path))
    if name == "u.*":
        [name] = [f for f in os.listdir(tmp_path / "p") if f.startswith("u.")]
    line = {"task": "t", "key": "k", "at": 1.0, "ser": "json", "digest": "0" * 64, "size": 1, "file": name}
    with store.journal.open("a") as f:
        f.write(json.dumps(line) + "\n")
    assert await FileStore(tmp_path / "p").load("t") is None


async def test_a_large_json_result_gets_a_file_of_its_own_and_round_trips(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    at_limit = "x" * (INLINE_LIMIT - 2)  # with its quotes, exactly 16 KiB of JSON: still inline
    over = {"rows": [{"i": i, "name": f"row {i} ✓"} for i in range(2_000)]}
    inline = await store.save("at_limit", "k1", at_limit)
    large = await store.save("over", "k2", over)
    assert inline.size == INLINE_LIMIT and large.size > INLINE_LIMIT

    docs = {doc["task"]: doc for doc in _assert_whole(store.journal)}
    assert docs["at_limit"]["result"] == at_limit and "file" not in docs["at_limit"]
    assert "result" not in docs["over"]
    file = store.path("over", JSON, large.digest)
    assert docs["over"]["file"] == file.name == f"over.{large.digest[:16]}.json"
    data = file.read_bytes()
    assert json.loads(data) == over
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (large.digest, large.size)
    assert len(store.journal.read_bytes()) < INLINE_LIMIT + 1_000  # the journal stays small

    reopened = FileStore(tmp_path)
    assert await reopened.load("over") == large
    assert await reopened.load("at_limit") == inline
    # The same result saved again keeps its file; a new one gets a new file.
    await reopened.save("over", "k3", over)
    assert sorted(os.listdir(tmp_path)) == ["journal.jsonl", file.name]
    await reopened.save("over", "k4", {**over, "more": True})
    newer = await FileStore(tmp_path).load("over")
    assert newer is not None and newer.cache_key == "k4" and newer.result["more"] is True


def _large_pipeline(calls: Counter[str]) -> Pipeline:
    p = Pipeline("files")

    @p.task
    async def large() -> list[int]:
        calls["large"] += 1
        return list(range(10_000))  # over 16 KiB: a file of its own

    @p.task
    async def total(large: list[int]) -> int:
        calls["total"] += 1
        return sum(large)

    return p


_FILE_CORRUPTIONS = [
    pytest.param(lambda file: file.write_bytes(file.read_bytes()[:1000]), "corrupted", id="truncated"),
    pytest.param(lambda file: file.write_bytes(b"\x00\xff garbage"), "corrupted", id="garbage"),
    pytest.param(lambda file: file.write_bytes(b"[" * 100_000), "corrupted", id="nested-too-deeply"),
    pytest.param(lambda file: file.unlink(), "missing", id="deleted"),
]


@pytest.mark.parametrize(("corrupt", "kind"), _FILE_CORRUPTIONS)
async def test_a_corrupted_result_file_is_treated_as_missing(
    tmp_path: Path, warnings_logged: list[str], corrupt: Callable[[Path], object], kind: str
) -> None:
    calls: Counter[str] = Counter()
    p = _large_pipeline(calls)
    await run(p, tmp_path)
    file = journal_of(tmp_path, "files").parent / saved(tmp_path, "files")["large"]["file"]
    corrupt(file)
    result = await run(p, tmp_path)
    assert result.ok
    assert states(result) == {"large": S, "total": C}  # same result: total stays cached
    assert result.tasks["total"].result == sum(range(10_000))
    assert calls == {"large": 2, "total": 1}
    if kind == "missing":
        assert warnings_logged == [
            f"checkpoint file {file} of task 'large' is missing; treating it as missing"
        ]
    else:
        [warning] = warnings_logged
        assert warning.startswith(f"checkpoint {file} of task 'large' is corrupted (")
        assert warning.endswith("); treating it as missing")


@pytest.mark.parametrize(
    "corrupt",
    [pytest.param(*param.values[:1], id=param.id) for param in _FILE_CORRUPTIONS],
)
async def test_the_rerun_replaces_a_corrupted_result_file(
    tmp_path: Path, corrupt: Callable[[Path], object]
) -> None:
    calls: Counter[str] = Counter()
    p = _large_pipeline(calls)
    await run(p, tmp_path)
    file = journal_of(tmp_path, "files").parent / saved(tmp_path, "files")["large"]["file"]
    corrupt(file)
    await run(p, tmp_path)
    assert json.loads(file.read_bytes()) == list(range(10_000))  # whole again
    assert set(states(await run(p, tmp_path)).values()) == {C}
    assert calls == {"large": 2, "total": 1}


async def test_two_pipelines_sharing_a_workdir_keep_their_own_checkpoints(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()

    def build(name: str, value: int) -> Pipeline:
        p = Pipeline(name)

        @p.task
        async def numbers() -> list[int]:  # the same task names in both pipelines
            calls[name] += 1
            return [value] * 3

        @p.task
        async def total(numbers: list[int]) -> int:
            return sum(numbers)

        return p

    alpha, beta, spaced = build("alpha", 1), build("beta", 2), build("prices v2/ünï", 3)
    for p in (alpha, beta, spaced):
        result = await run(p, tmp_path)
        assert set(states(result).values()) == {S}
    for p, expected in ((alpha, 3), (beta, 6), (spaced, 9)):
        again = await run(p, tmp_path)
        assert set(states(again).values()) == {C}
        assert again.tasks["total"].result == expected
    assert calls == {"alpha": 1, "beta": 1, "prices v2/ünï": 1}
    folders = sorted(f.name for f in (tmp_path / "checkpoints").iterdir())
    assert folders == sorted(["alpha", "beta", file_stem("prices v2/ünï")])
    assert saved(tmp_path, "beta")["numbers"]["result"] == [2, 2, 2]
    assert saved(tmp_path, "prices v2/ünï")["total"]["result"] == 9


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"store": MemoryStore()}, id="memory-store"),
        pytest.param({"checkpoints": False}, id="off"),
    ],
)
async def test_a_run_without_workdir_or_file_store_creates_nothing_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    monkeypatch.chdir(tmp_path)
    calls: Counter[str] = Counter()
    p = _chain(calls)
    result = await p.run(log=False, **options)
    assert result.ok and result.tasks["total"].result == {"sum": 12, "count": 3}
    again = await p.run(log=False, **options)
    assert again.ok
    assert os.listdir(tmp_path) == []  # no .asyncflow, no checkpoints, no lock


# -- asyncflow 0.1's layout -----------------------------------------------------------------


async def test_an_old_layout_checkpoint_is_still_found(tmp_path: Path, warnings_logged: list[str]) -> None:
    # asyncflow 0.1 wrote <workdir>/checkpoints/<task>.json.
    old = tmp_path / "checkpoints"
    old.mkdir()
    parts = {"code": "c" * 64, "params": {}, "upstream": {}}
    document = {"task": "numbers", "cache_key": "a" * 64, "saved_at": 1700000000.5, "key_parts": parts}
    (old / "numbers.json").write_text(json.dumps({**document, "result": [10, 20, 30]}))
    (old / "label.json").write_text('{"task": "label", "cache_k')  # torn by a crash of 0.1

    store = default_file_store(tmp_path, "chain")  # what a run uses
    assert (store.directory, store.legacy) == (old / "chain", old)
    found = await store.load("numbers")
    text = json.dumps([10, 20, 30]).encode()
    assert found == Checkpoint(
        task="numbers",
        cache_key="a" * 64,
        result=[10, 20, 30],
        saved_at=1700000000.5,
        key_parts=parts,
        serializer="json",
        digest=hashlib.sha256(text).hexdigest(),
        size=len(text),
    )
    assert await FileStore(old / "chain").load("numbers") is None  # found only with legacy=
    assert await store.load("label") is None
    assert [
        m for m in warnings_logged if f"checkpoint {old / 'label.json'} of task 'label' is corrupted" in m
    ]
    assert not (old / "chain").exists()  # loading wrote nothing

    # A partial run loads upstream checkpoints whatever their key: the old one is used.
    calls: Counter[str] = Counter()
    p = _chain(calls)
    partial = await run(p, tmp_path, only=["doubled"])
    assert states(partial) == {"numbers": C, "doubled": S}
    assert partial.tasks["doubled"].result == [20, 40, 60]
    # A full run finds it too, but its key is of asyncflow 0.1: numbers runs, and its new
    # checkpoint, in the journal, supersedes the old file.
    full = await run(p, tmp_path)
    assert full.tasks["numbers"].state is S and full.tasks["total"].result == {"sum": 12, "count": 3}
    fresh = await default_file_store(tmp_path, "chain").load("numbers")
    assert fresh is not None and fresh.result == [1, 2, 3] and fresh.key_parts is not None
    assert set(states(await run(p, tmp_path)).values()) == {C}


# -- the JSON file helpers ------------------------------------------------------------------


async def test_read_json_write_json_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "value.json"
    value = {"text": "naïve ✓ 日本", "ints": [1, -2, 10**20], "float": 0.1, "flags": [True, False, None]}
    await write_json(path, value)
    assert await read_json(path) == value
    raw = path.read_text(encoding="utf-8")
    assert raw.endswith("\n")
    assert "日本" in raw  # not escaped
    assert json.loads(raw) == value
    await write_json(str(path), [1])  # str paths work too
    assert await read_json(str(path)) == [1]


async def test_write_json_rejects_non_json_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "value.json"
    await write_json(path, {"v": 1})
    with pytest.raises(ValueError):
        await write_json(path, {"v": math.nan})
    with pytest.raises(TypeError):
        await write_json(path, {"v": {1}})
    assert await read_json(path) == {"v": 1}
    assert [f.name async for f in anyio.Path(tmp_path).iterdir()] == ["value.json"]


async def test_read_json_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError):
        await read_json(tmp_path / "bad.json")


async def test_write_json_into_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        await write_json(tmp_path / "nope" / "value.json", 1)
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


def _big(tag: str) -> dict[str, Any]:
    return {"tag": tag, "data": [f"{tag}-{i}" for i in range(60_000)]}


def _assert_old_or_new(path: Path, old: Any, new: Any) -> None:
    value = json.loads(path.read_text(encoding="utf-8"))  # raises on a partial write
    assert value in (old, new)
    leftovers = [f.name for f in path.parent.iterdir() if f.name.endswith(".tmp")]
    assert leftovers == []


async def test_write_json_cancelled_by_move_on_after_zero_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "value.json"
    old, new = _big("old"), _big("new")
    await write_json(path, old)
    with anyio.move_on_after(0):
        await write_json(path, new)
    _assert_old_or_new(path, old, new)


async def test_write_json_cancelled_from_another_task_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "value.json"
    await write_json(path, _big("start"))
    for round_ in range(12):
        old = json.loads(path.read_text(encoding="utf-8"))
        new = _big(f"round{round_}")
        scope = anyio.CancelScope()

        async def writer(scope: anyio.CancelScope = scope, new: Any = new) -> None:
            with scope:
                await write_json(path, new)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            # Cancel at a different moment each round: before the write starts, or mid-write.
            if round_ % 3:
                await anyio.sleep(0.001 * round_)
            scope.cancel()
        _assert_old_or_new(path, old, new)


# -- outputs ---------------------------------------------------------------------------------


def _writer(calls: Counter[str], template: str = "{workdir}/{name}.txt") -> Pipeline:
    p = Pipeline("outputs", params={"name": "report"})

    @p.task(outputs=[template])
    async def write(params: dict[str, Any], context: asyncflow.RunContext) -> str:
        calls["write"] += 1
        path = context.workdir / f"{params['name']}.txt"
        await asyncflow.write_text(path, "hello\n")
        return str(path)

    @p.task
    async def after_write(write: str) -> str:
        calls["after_write"] += 1
        return write

    return p


async def test_a_deleted_output_reruns_its_task_and_nothing_else(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    p = _writer(calls)
    await run(p, tmp_path)
    second = await run(p, tmp_path)
    assert states(second) == {"write": TaskState.CACHED, "after_write": TaskState.CACHED}

    await anyio.Path(tmp_path / "report.txt").unlink()
    third = await run(p, tmp_path)
    assert states(third) == {"write": TaskState.SUCCEEDED, "after_write": TaskState.CACHED}
    assert calls == Counter({"write": 2, "after_write": 1})
    assert await anyio.Path(tmp_path / "report.txt").read_text() == "hello\n"


async def test_an_output_template_with_an_unknown_field_is_an_error_before_anything_runs(
    tmp_path: Path,
) -> None:
    calls: Counter[str] = Counter()
    p = _writer(calls, template="{workdir}/{nope}.txt")
    bad_template = r"output '\{workdir\}/\{nope\}.txt' cannot be formatted"
    with pytest.raises(asyncflow.PipelineDefinitionError, match=bad_template):
        await run(p, tmp_path)
    assert calls == Counter()

"""Checkpoints: cache keys, the stores, and the atomic JSON file helpers, on asyncio and trio."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import asyncflow
from asyncflow import (
    Checkpoint,
    CheckpointError,
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


async def run(p: Pipeline, workdir: Path, **kwargs: Any) -> RunResult:
    kwargs.setdefault("log", False)
    return await p.run(workdir=workdir, **kwargs)


def states(result: RunResult) -> dict[str, TaskState]:
    return {name: t.state for name, t in result.tasks.items()}


S, C = TaskState.SUCCEEDED, TaskState.CACHED


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


async def test_checkpoint_file_holds_task_key_and_result(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    before = time.time()
    result = await run(_chain(calls), tmp_path)
    doc = await read_json(tmp_path / "checkpoints" / "total.json")
    assert doc["task"] == "total"
    assert doc["cache_key"] == result.tasks["total"].cache_key
    assert len(doc["cache_key"]) == 64
    assert doc["result"] == {"sum": 12, "count": 3}
    assert before - 1 <= doc["saved_at"] <= time.time() + 1
    label = (tmp_path / "checkpoints" / "label.json").read_text(encoding="utf-8")
    assert "ünïcode ✓" in label
    assert sorted(f.name for f in (tmp_path / "checkpoints").iterdir()) == [
        "doubled.json",
        "label.json",
        "numbers.json",
        "total.json",
    ]


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
    assert not (tmp_path / "checkpoints" / "live.json").exists()


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


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda path, other: path.write_bytes(b"\xff\xfe\x00garbage"), id="binary-garbage"),
        pytest.param(lambda path, other: path.write_text("not json at all"), id="text-garbage"),
        pytest.param(
            lambda path, other: path.write_text(path.read_text()[: len(path.read_text()) // 2]),
            id="truncated",
        ),
        pytest.param(lambda path, other: path.write_text(other.read_text()), id="wrong-task"),
        pytest.param(lambda path, other: path.write_text("[1, 2, 3]\n"), id="not-an-object"),
        pytest.param(lambda path, other: path.write_text('{"task": "numbers"}\n'), id="missing-fields"),
        pytest.param(
            lambda path, other: path.write_text(
                '{"task": "numbers", "cache_key": 5, "saved_at": 1.0, "result": [1, 2, 3]}'
            ),
            id="wrong-types",
        ),
        pytest.param(lambda path, other: path.write_text(""), id="empty"),
    ],
)
async def test_corrupted_checkpoint_is_treated_as_missing(
    tmp_path: Path, corrupt: Callable[[Path, Path], object]
) -> None:
    calls: Counter[str] = Counter()
    p = _chain(calls)
    await run(p, tmp_path)
    directory = tmp_path / "checkpoints"
    corrupt(directory / "numbers.json", directory / "label.json")

    result = await run(p, tmp_path)
    assert result.ok
    # numbers re-runs; its cache key is unchanged, so everything downstream stays cached.
    assert states(result) == {"numbers": S, "doubled": C, "total": C, "label": C}
    assert calls["numbers"] == 2
    assert result.tasks["total"].result == {"sum": 12, "count": 3}
    assert (await read_json(directory / "numbers.json"))["result"] == [1, 2, 3]
    assert set(states(await run(p, tmp_path)).values()) == {C}


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
    assert not (tmp_path / "checkpoints" / "produce.json").exists()


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
    def __init__(self, store: CheckpointStore, corrupt: Callable[[str, str], None]) -> None:
        self.store = store
        self.corrupt = corrupt


@pytest.fixture(params=["file", "memory"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> _Harness:
    if request.param == "file":
        file_store = FileStore(tmp_path / "deep" / "checkpoints")

        def corrupt_file(task: str, text: str) -> None:
            file_store.path(task).parent.mkdir(parents=True, exist_ok=True)
            file_store.path(task).write_text(text, encoding="utf-8")

        return _Harness(file_store, corrupt_file)
    memory_store = MemoryStore()

    def corrupt_memory(task: str, text: str) -> None:
        memory_store.texts[task] = text

    return _Harness(memory_store, corrupt_memory)


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

    async def test_load_missing_is_none(self, harness: _Harness) -> None:
        assert await harness.store.load("never_saved") is None

    async def test_save_overwrites(self, harness: _Harness) -> None:
        store = harness.store
        await store.save("t", "old", 1)
        await store.save("t", "new", 2)
        loaded = await store.load("t")
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
        await store.delete("t")  # deleting what is not there is fine
        await store.delete("never_saved")

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "garbage",
            '{"task": "t", "cache_key": "k", "saved_at": 1.0, "result": [1, 2',
            '{"task": "other", "cache_key": "k", "saved_at": 1.0, "result": 1}',
            '{"task": "t", "saved_at": 1.0, "result": 1}',
            '{"task": "t", "cache_key": "k", "saved_at": 1.0}',
            '{"task": "t", "cache_key": null, "saved_at": 1.0, "result": 1}',
            '{"task": "t", "cache_key": "k", "saved_at": "yesterday", "result": 1}',
            "null",
            '["t", "k"]',
        ],
    )
    async def test_corrupted_is_none(self, harness: _Harness, text: str) -> None:
        await harness.store.save("t", "k", 1)
        harness.corrupt("t", text)
        assert await harness.store.load("t") is None

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
        loaded = await store.load("t")
        assert loaded is not None
        assert (loaded.cache_key, loaded.result) == ("k", "previous")


async def test_file_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "cp")
    for i in range(5):
        await store.save("t", f"k{i}", list(range(i)))
    with pytest.raises(TypeError):
        await store.save("t", "bad", {1})
    assert [f.name for f in (tmp_path / "cp").iterdir()] == ["t.json"]
    assert store.path("t") == tmp_path / "cp" / "t.json"


async def test_file_store_unreadable_file_is_none(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    (tmp_path / "t.json").mkdir()  # a directory where the file should be
    assert await store.load("t") is None


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

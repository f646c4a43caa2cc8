"""Serializers: results of any type, chosen per task, stored safely (asyncflow._serializers)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import pickle
from pathlib import Path
from typing import Any

import anyio
import pytest
from journal import append, journal_of, saved

import asyncflow
from asyncflow import CheckpointError, FileStore, MemoryStore, Pipeline, TaskState
from asyncflow._pipeline import default_file_store
from asyncflow._plan import make_plan


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float


class Upper:
    """A custom serializer: str results, stored upper-cased, loaded lower-cased."""

    name = "upper"
    suffix = ".txt"

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"only str, not {type(value).__name__}")
        return value.upper().encode()

    def loads(self, data: bytes) -> Any:
        return data.decode().lower()


def objects_pipeline(received: list[Any], *, serializer: Any = "pickle") -> Pipeline:
    p = Pipeline("objects")

    @p.task(serializer=serializer)
    async def make() -> dict[str, Any]:
        return {"tags": {"a", "b"}, "when": datetime.datetime(2024, 5, 1, 12, 30), "point": Point(1, 2.5)}

    @p.task(serializer="pickle")
    async def use(make: dict[str, Any]) -> int:
        received.append(make)
        return len(make)

    return p


async def test_pickle_results_are_cached_and_downstream_gets_equal_objects(tmp_path: Path) -> None:
    received: list[Any] = []
    p = objects_pipeline(received)
    first = await p.run(workdir=tmp_path, log=False)
    assert first.ok and first.counts == {TaskState.SUCCEEDED: 2}
    second = await objects_pipeline(received).run(workdir=tmp_path, log=False)
    assert second.counts == {TaskState.CACHED: 2}
    expected = {"tags": {"a", "b"}, "when": datetime.datetime(2024, 5, 1, 12, 30), "point": Point(1, 2.5)}
    assert received == [expected]  # the second run did not run `use`
    assert second.tasks["make"].result == expected
    # Stored in a file of its own with the serializer's suffix, named in the journal.
    line = saved(tmp_path, "objects")["make"]
    assert line["ser"] == "pickle" and line["file"].endswith(".pkl")
    assert (journal_of(tmp_path, "objects").parent / line["file"]).is_file()


async def test_a_fresh_result_reaches_downstream_as_loads_returns_it(tmp_path: Path) -> None:
    p = Pipeline("custom")

    @p.task(serializer=Upper())
    async def word() -> str:
        return "Hello"

    @p.task
    async def length(word: str) -> str:
        return word

    result = await p.run(workdir=tmp_path, log=False)
    assert result.tasks["word"].result == "hello"  # dumps upper-cased, loads lower-cased
    assert result.tasks["length"].result == "hello"
    folder = journal_of(tmp_path, "custom").parent
    (stored,) = folder.glob("word.*.txt")
    assert stored.read_bytes() == b"HELLO"
    again = await p.run(workdir=tmp_path, log=False)
    assert again.tasks["word"].state is TaskState.CACHED and again.tasks["word"].result == "hello"


async def test_a_pipeline_wide_serializer_is_the_default_and_a_task_may_override_it(tmp_path: Path) -> None:
    p = Pipeline("wide", serializer="pickle")

    @p.task
    async def numbers() -> set[int]:
        return {1, 2}

    @p.task(serializer="json")
    async def count(numbers: set[int]) -> int:
        return len(numbers)

    result = await p.run(workdir=tmp_path, log=False)
    assert result.tasks["numbers"].result == {1, 2}
    lines = saved(tmp_path, "wide")
    assert lines["numbers"]["ser"] == "pickle" and lines["count"]["ser"] == "json"


async def test_a_serializer_change_is_a_miss_with_its_reason(tmp_path: Path) -> None:
    received: list[Any] = []

    def pipeline(serializer: str) -> Pipeline:
        p = Pipeline("switch")

        @p.task(serializer=serializer)
        async def value() -> list[int]:
            received.append(serializer)
            return [1, 2]

        return p

    await pipeline("json").run(workdir=tmp_path, log=False)
    switched = pipeline("pickle")
    plan = await make_plan(
        switched.validate(),
        pipeline="switch",
        params={},
        store=default_file_store(tmp_path, "switch"),
        serializer=switched.serializer,
    )
    assert [(t.name, t.action.value, t.reason) for t in plan.tasks] == [
        ("value", "run", "serializer changed: json -> pickle")
    ]
    result = await switched.run(workdir=tmp_path, log=False)
    assert result.tasks["value"].state is TaskState.SUCCEEDED
    assert received == ["json", "pickle"]


async def test_a_corrupted_pickle_is_recomputed_with_a_warning(tmp_path: Path) -> None:
    received: list[Any] = []
    await objects_pipeline(received).run(workdir=tmp_path, log=False)
    folder = journal_of(tmp_path, "objects").parent
    for path in folder.glob("make.*.pkl"):
        path.write_bytes(b"\x80\x05garbage")
    warnings: list[str] = []
    from loguru import logger

    logger.enable("asyncflow")
    handler = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        result = await objects_pipeline(received).run(workdir=tmp_path, log=False)
    finally:
        logger.remove(handler)
        logger.disable("asyncflow")
    assert result.tasks["make"].state is TaskState.SUCCEEDED
    assert any("is corrupted" in w and "'make'" in w for w in warnings), warnings


class _Exploit:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "unpickled"))


async def test_a_json_task_never_unpickles_a_file_planted_in_its_place(tmp_path: Path) -> None:
    p = Pipeline("planted")

    @p.task
    async def data() -> list[int]:
        return [1]

    await p.run(workdir=tmp_path, log=False)
    marker = tmp_path / "marker"
    folder = journal_of(tmp_path, "planted").parent
    payload = pickle.dumps(_Exploit(marker))
    # A pickle file where a result file would go, and a journal line that claims the
    # task's checkpoint is that pickle: a JSON task must load neither.
    (folder / "data.0000000000000000.pkl").write_bytes(payload)
    line = (
        '{"task": "data", "key": "k", "at": 1.0, "ser": "pickle", "digest": "d", "size": 1, '
        '"file": "data.0000000000000000.pkl"}\n'
    )
    append(journal_of(tmp_path, "planted"), line)
    result = await p.run(workdir=tmp_path, log=False)
    assert result.tasks["data"].state is TaskState.SUCCEEDED and result.tasks["data"].result == [1]
    assert not marker.exists()


async def test_a_serializer_that_cannot_encode_fails_the_task_once_naming_it(tmp_path: Path) -> None:
    p = Pipeline("unencodable")

    @p.task(serializer=Upper(), retries=3, retry_delay=0)
    async def number() -> int:
        return 7

    @p.task
    async def independent() -> int:
        return 1

    result = await p.run(workdir=tmp_path, log=False)
    run = result.tasks["number"]
    assert run.state is TaskState.FAILED and run.attempts == 1  # not retried
    assert isinstance(run.error, CheckpointError)
    assert "'number'" in str(run.error) and "'upper'" in str(run.error) and "int" in str(run.error)
    assert result.tasks["independent"].state is TaskState.SUCCEEDED


@pytest.mark.parametrize("store_kind", ["memory", "file"])
async def test_store_contract_round_trips_every_serializer(tmp_path: Path, store_kind: str) -> None:
    store: Any = MemoryStore() if store_kind == "memory" else FileStore(tmp_path / "cp")
    value = {"when": datetime.date(2020, 1, 2), "raw": b"\x00\x01"}
    checkpoint = await store.save("t", "k", value, serializer=asyncflow.PICKLE)
    assert checkpoint.result == value and checkpoint.serializer == "pickle" and checkpoint.size > 0
    loaded = await store.load("t", asyncflow.PICKLE)
    assert loaded is not None and loaded.result == value and loaded.digest == checkpoint.digest
    undecoded = await store.load("t")  # asked as JSON: returned, but never decoded
    assert undecoded is not None and undecoded.serializer == "pickle" and undecoded.result is None


def test_bad_serializers_are_definition_errors_naming_the_task() -> None:
    p = Pipeline("bad")
    with pytest.raises(asyncflow.PipelineDefinitionError, match="task 'x': unknown serializer 'yaml'"):
        p.task(lambda: 1, name="x", serializer="yaml")
    with pytest.raises(asyncflow.PipelineDefinitionError, match="lacks name, suffix, dumps or loads"):
        p.task(lambda: 1, name="y", serializer=object())  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="pipeline 'q': unknown serializer"):
        Pipeline("q", serializer="yaml")


async def test_json_output_names_the_type_and_size_of_a_result_that_is_not_json(tmp_path: Path) -> None:
    from asyncflow._render import run_json

    received: list[Any] = []
    result = await objects_pipeline(received).run(workdir=tmp_path, log=False)
    entry = run_json(result)["tasks"]["make"]
    assert "result" not in entry and entry["result_type"] == "dict"
    line = saved(tmp_path, "objects")["make"]
    assert (
        entry["result_size"]
        == line["size"]
        == (await anyio.Path(journal_of(tmp_path, "objects").parent / line["file"]).stat()).st_size
    )
    assert run_json(result)["tasks"]["use"]["result"] == 3  # JSON-representable: included


async def test_parquet_example_round_trips_a_dataframe(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from asyncflow.parquet import ParquetSerializer

    p = Pipeline("frames")

    @p.task(serializer=ParquetSerializer())
    def frame() -> Any:
        return pandas.DataFrame({"ticker": ["IBM", "MSFT"], "close": [101.5, 40.8]})

    @p.task
    def total(frame: Any) -> float:
        return float(frame["close"].sum())

    first = await p.run(workdir=tmp_path, log=False)
    assert first.ok and first.tasks["total"].result == pytest.approx(142.3)
    second = await p.run(workdir=tmp_path, log=False)
    assert second.counts == {TaskState.CACHED: 2}
    pandas.testing.assert_frame_equal(second.tasks["frame"].result, first.tasks["frame"].result)
    assert list(journal_of(tmp_path, "frames").parent.glob("frame.*.parquet"))


async def test_a_tampered_result_file_of_the_same_size_is_never_loaded(tmp_path: Path) -> None:
    received: list[Any] = []
    await objects_pipeline(received).run(workdir=tmp_path, log=False)
    folder = journal_of(tmp_path, "objects").parent
    (path,) = folder.glob("make.*.pkl")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit, same size: only the digest can tell
    path.write_bytes(bytes(data))
    result = await objects_pipeline(received).run(workdir=tmp_path, log=False)
    assert result.tasks["make"].state is TaskState.SUCCEEDED  # recomputed, not unpickled
    assert result.tasks["make"].result["point"] == Point(1, 2.5)


async def test_a_superseded_result_file_is_deleted_once_its_replacement_is_durable(tmp_path: Path) -> None:
    def pipeline(n: int) -> Pipeline:
        p = Pipeline("superseded")

        @p.task(serializer="pickle")
        async def value() -> list[int]:
            return list(range(n))

        return p

    folder = journal_of(tmp_path, "superseded").parent
    for n in (3, 4, 5):
        await pipeline(n).run(workdir=tmp_path, log=False)
    assert len(list(folder.glob("value.*.pkl"))) == 1  # only the live one
    again = await pipeline(5).run(workdir=tmp_path, log=False)
    assert again.tasks["value"].state is TaskState.CACHED and again.tasks["value"].result == [0, 1, 2, 3, 4]


SETS = """
import os

import asyncflow

pipeline = asyncflow.Pipeline("sets")


@pipeline.task(serializer="pickle", cache_key_fn=lambda params: os.environ["VERSION"])
def tags() -> set[str]:
    return {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}


@pipeline.task(serializer="pickle")
def count(tags: set[str]) -> int:
    return len(tags)
"""


def test_a_pickled_set_keeps_its_downstream_cached_across_hash_seeds(tmp_path: Path) -> None:
    """The bytes of a pickled set of strings change with the process's hash seed; early
    cutoff compares the value's own digest, so the task below stays cached."""
    import subprocess
    import sys

    (tmp_path / "sets.py").write_text(SETS, encoding="utf-8")
    outputs = []
    for version, seed in (("1", "1"), ("2", "2")):  # tags runs again (new key), same value
        proc = subprocess.run(
            [sys.executable, "-m", "asyncflow", "sets", "--workdir", str(tmp_path / "work")],
            cwd=tmp_path,
            env={**os.environ, "VERSION": version, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    second = {line.split()[0]: line.split()[1] for line in outputs[1].splitlines()[2:4]}
    assert second == {"tags": "succeeded", "count": "cached"}, outputs[1]

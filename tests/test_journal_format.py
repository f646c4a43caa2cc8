"""The checkpoint record's text: key parts last and parsed lazily; older records still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from journal import journal_of

import asyncflow
from asyncflow._journal_format import StoredParts, parse_line, parse_lines, record_line

pytestmark = pytest.mark.anyio

_HEAD = b'{"v": 2, "task": "t", "key": "k", "at": 1, "ser": "json", "digest": "d", "reads": [], '


def _pipeline(result: Any, calls: list[str]) -> asyncflow.Pipeline:
    p = asyncflow.Pipeline("fmt", params={"day": "mon"})

    @p.task
    async def first(params: dict[str, Any]) -> Any:
        calls.append(f"first {params['day']}")
        return result

    @p.task
    async def second(first: Any) -> int:
        calls.append("second")
        return len(json.dumps(first))

    return p


async def test_a_record_puts_its_key_parts_last_and_its_reads_in_the_head(tmp_path: Path) -> None:
    calls: list[str] = []
    await _pipeline([1, 2], calls).run(workdir=tmp_path, params={"day": "mon"})
    line = journal_of(tmp_path, "fmt").read_bytes().split(b"\n")[0]
    assert line.startswith(b'{"v": 2, "task": "first", ')
    doc = json.loads(line)
    assert list(doc)[-1] == "parts" and list(doc)[-2] == "result"
    assert doc["reads"] == ["day"] and list(doc["parts"]["params"]) == ["day"]


async def test_a_rerun_is_cached_without_parsing_any_key_parts(tmp_path: Path) -> None:
    calls: list[str] = []
    p = _pipeline({"x": 1}, calls)
    await p.run(workdir=tmp_path, params={"day": "mon"})
    store = asyncflow.FileStore(tmp_path / "checkpoints" / "fmt")
    checkpoint = await store.load("first")
    assert checkpoint is not None and isinstance(checkpoint.key_parts, StoredParts)
    assert checkpoint.key_parts._parsed is None  # nothing has asked for them yet
    assert checkpoint.reads == ("day",)
    result = await p.run(workdir=tmp_path, params={"day": "mon"})
    assert result.counts == {asyncflow.TaskState.CACHED: 2} and calls == ["first mon", "second"]
    # A changed parameter is a miss, explained from the parts parsed then.
    result = await p.run(workdir=tmp_path, params={"day": "tue"})
    assert result.counts == {asyncflow.TaskState.SUCCEEDED: 1, asyncflow.TaskState.CACHED: 1}


@pytest.mark.parametrize(
    "value",
    [
        {"parts": {"a": 1}, "text": ', "parts": {"x": 1}}'},
        [', "parts": ', "}", '{"v": 2, '],
        'ends with , "parts": null}',
    ],
    ids=["dict-with-a-parts-key", "list-of-markers", "string-with-a-marker"],
)
async def test_a_result_that_looks_like_the_parts_marker_round_trips(tmp_path: Path, value: Any) -> None:
    calls: list[str] = []
    first = await _pipeline(value, calls).run(workdir=tmp_path, params={"day": "mon"})
    second = await _pipeline(value, calls).run(workdir=tmp_path, params={"day": "mon"})
    assert first.tasks["first"].result == second.tasks["first"].result == value
    assert second.counts == {asyncflow.TaskState.CACHED: 2}
    store = asyncflow.FileStore(tmp_path / "checkpoints" / "fmt")
    checkpoint = await store.load("first")
    assert checkpoint is not None and checkpoint.result == value
    assert checkpoint.key_parts is not None and list(checkpoint.key_parts["params"]) == ["day"]


async def test_a_record_of_asyncflow_0_2_0_still_loads(tmp_path: Path) -> None:
    """Parts inline, before the result, no "v" and no "reads": the record is parsed whole."""
    calls: list[str] = []
    p = _pipeline(7, calls)
    await p.run(workdir=tmp_path, params={"day": "mon"})
    journal = journal_of(tmp_path, "fmt")
    old_lines = []
    for line in journal.read_bytes().split(b"\n")[:-1]:
        doc = json.loads(line)
        del doc["v"], doc["reads"]
        parts = doc.pop("parts")
        result = doc.pop("result")
        old_lines.append(json.dumps({**doc, "parts": parts, "result": result}).encode())
    journal.write_bytes(b"\n".join(old_lines) + b"\n")
    result = await p.run(workdir=tmp_path, params={"day": "mon"})
    assert result.counts == {asyncflow.TaskState.CACHED: 2} and calls == ["first mon", "second"]
    result = await p.run(workdir=tmp_path, params={"day": "tue"})  # its reads came from its parts
    assert result.tasks["first"].result == 7 and calls == ["first mon", "second", "first tue"]


def test_parse_lines_parses_current_records_in_one_go_and_falls_back_line_by_line() -> None:
    good = [
        b'{"v": 2, "task": "t%d", "key": "k", "at": 1.5, "ser": "json", "digest": "d", "size": 1, '
        b'"reads": [], "result": %d, "parts": {"code":"c"}}' % (i, i)
        for i in range(3)
    ]
    docs = parse_lines(good)
    assert [d["result"] if d else None for d in docs] == [0, 1, 2]
    assert all(isinstance(d["parts"], StoredParts) and d["parts"]["code"] == "c" for d in docs if d)
    mixed = [good[0], b"not json", good[2][: len(good[2]) // 2], good[1]]
    assert [d is not None for d in parse_lines(mixed)] == [True, False, False, True]


def test_a_line_edited_by_hand_with_its_parts_elsewhere_is_parsed_whole() -> None:
    line = b'{"v": 2, "task": "t", "parts": {"code": "c"}, "key": "k", "at": 1, "ser": "json", '
    line += b'"digest": "d", "result": 3}'
    doc = parse_line(line)
    assert doc is not None and doc["result"] == 3 and doc["parts"] == {"code": "c"}


def test_corrupted_parts_read_as_empty_and_compaction_keeps_their_text() -> None:
    line = _HEAD + b'"result": 3, "parts": {oops}}'
    doc = parse_line(line)
    assert doc is not None and doc["result"] == 3 and dict(doc["parts"]) == {}
    assert record_line(doc) == line + b"\n"
    null = parse_line(_HEAD + b'"result": 3, "parts": null}')
    assert null is not None and null["parts"] is None


async def test_compaction_rewrites_records_that_load_back_with_their_parts(tmp_path: Path) -> None:
    calls: list[str] = []
    p = _pipeline(5, calls)
    await p.run(workdir=tmp_path, params={"day": "mon"})
    journal = journal_of(tmp_path, "fmt")
    first_line = journal.read_bytes().split(b"\n")[0] + b"\n"
    journal.write_bytes(first_line * 1100 + journal.read_bytes())  # superseded lines: compacted
    result = await p.run(workdir=tmp_path, params={"day": "tue"})  # its flush rewrites the journal
    assert result.counts == {asyncflow.TaskState.SUCCEEDED: 1, asyncflow.TaskState.CACHED: 1}
    lines = journal.read_bytes().split(b"\n")[:-1]
    assert [json.loads(line)["task"] for line in lines] == ["second", "first"]
    assert all(line.startswith(b'{"v": 2, ') for line in lines)
    again = await p.run(workdir=tmp_path, params={"day": "tue"})
    assert again.counts == {asyncflow.TaskState.CACHED: 2} and calls == ["first mon", "second", "first tue"]
    store = asyncflow.FileStore(tmp_path / "checkpoints" / "fmt")
    checkpoint = await store.load("second")
    assert checkpoint is not None and checkpoint.key_parts is not None
    assert checkpoint.key_parts["upstream"][0][0] == "first"


@pytest.mark.parametrize(
    "doc",
    [
        {
            "task": "t",
            "key": "k",
            "at": 1.5,
            "ser": "json",
            "digest": "d",
            "size": 3,
            "reads": ["a"],
            "result": 1,
        },
        {"task": "t", "key": "k", "at": 2, "ser": "pickle", "digest": "d", "cutoff": "c", "file": "t.0.pkl"},
        {"task": "t", "key": "k", "at": 2, "ser": "json", "digest": "d", "size": "3", "parts": {"code": "x"}},
    ],
    ids=["inline", "file-with-cutoff", "old-record-bad-size"],
)
def test_a_checkpoint_built_from_a_record_equals_the_dataclass_s_own(doc: dict[str, Any]) -> None:
    from asyncflow._checkpoint import Checkpoint, _checkpoint

    built = _checkpoint(doc, "value")
    own = Checkpoint(
        task="t",
        cache_key="k",
        result="value",
        saved_at=doc["at"],
        key_parts=doc.get("parts"),
        serializer=doc["ser"],
        digest="d",
        size=doc["size"] if isinstance(doc.get("size"), int) else 0,
        cutoff=doc.get("cutoff", ""),
        reads=tuple(doc["reads"]) if "reads" in doc else None,
    )
    assert type(built) is Checkpoint and built == own and repr(built) == repr(own)
    assert built.cutoff == doc.get("cutoff", "d")
    with pytest.raises(AttributeError):
        built.result = 2  # type: ignore[misc]

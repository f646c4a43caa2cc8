"""The text of a checkpoint record: one JSON object per line, its key parts last.

A record (a line of :class:`~asyncflow.FileStore`'s journal, an entry of
:class:`~asyncflow.MemoryStore`) reads::

    {"v": 2, "task": "fit", "key": "<hex>", "at": 1796234110.31, "ser": "json",
     "digest": "<hex>", "size": 3, "reads": ["day"], "result": 0.5, "parts": {...}}

``at`` is seconds since the epoch, ``digest`` the hex SHA-256 of the serialized result,
``size`` its bytes, ``reads`` the run parameters the task read (its key depends on their
values), ``result`` the inline JSON result or ``file`` the name of the file that holds it,
``cutoff`` (optional) the value digest downstream keys fold in, and ``parts`` what the key
was computed from (``null`` when the caller gave none). A deletion is
``{"v": 2, "task": ..., "deleted": true, "parts": null}``.

Why the parts come last, after the result: a cached rerun needs everything *but* the
parts (they only explain a changed key), and they are two thirds of a line. The parts are
compact JSON, in which ``, "`` never occurs (a quote inside a string is escaped), so the
last ``, "parts": `` of a line is where they start; the head before it is parsed, the parts
are kept as bytes and parsed only if asked for (:class:`StoredParts`). The heads of a
whole journal are parsed by one ``json.loads`` (:func:`parse_lines`); a line that does not
parse that way is parsed on its own, and a corrupted one is reported by its number.

Records of earlier versions (no ``"v"``, parts before the result) are still read:
:func:`parse_line` parses them whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["StoredParts", "deletion", "head", "parse_line", "parse_lines", "record_line"]

_V2 = b'{"v": 2, '
_PARTS = b', "parts": '
_SKIP = len(_PARTS)


class StoredParts(Mapping[str, Any]):
    """A record's key parts, parsed from their JSON text on first use.

    A corrupted text reads as an empty mapping (the parts only explain a changed key;
    the key itself is in the record's head). ``raw`` is the text, as stored.
    """

    __slots__ = ("_parsed", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._parsed: dict[str, Any] | None = None

    def _parts(self) -> dict[str, Any]:
        if self._parsed is None:
            try:
                parts = json.loads(self.raw)
            except (ValueError, RecursionError):
                parts = None
            self._parsed = parts if isinstance(parts, dict) else {}
        return self._parsed

    def __getitem__(self, name: str) -> Any:
        return self._parts()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts())

    def __len__(self) -> int:
        return len(self._parts())

    def __repr__(self) -> str:
        return f"StoredParts({self._parts()!r})"


def _name(text: str) -> str:
    return f'"{text}"' if text.isidentifier() and text.isascii() else json.dumps(text, ensure_ascii=False)


def head(
    task: str,
    cache_key: str,
    reads: Sequence[str],
    serializer: str,
    digest: str,
    size: int,
    saved_at: float,
    cutoff: str | None,
) -> bytes:
    """A record's text up to where ``"result"`` or ``"file"`` goes (no closing brace)."""
    ser = f'"{serializer}"' if serializer.isidentifier() else json.dumps(serializer)
    key = f'"{cache_key}"' if cache_key.isalnum() else json.dumps(cache_key)
    names = ", ".join(map(_name, reads))
    text = (
        f'{{"v": 2, "task": {_name(task)}, "key": {key}, "at": {saved_at!r}, "ser": {ser}, '
        f'"digest": "{digest}", "size": {size}, "reads": [{names}]'
    )
    if cutoff is not None:
        text += f', "cutoff": {json.dumps(cutoff)}'
    return text.encode()


def tail(key_parts: Mapping[str, Any] | None) -> bytes:
    """What ends a record after its result or file: the key parts and the closing brace."""
    parts = b"null" if key_parts is None else json.dumps(dict(key_parts), separators=(",", ":")).encode()
    return _PARTS + parts + b"}"


def deletion(task: str) -> bytes:
    """The record (with its newline) that removes ``task``'s checkpoint."""
    name = json.dumps(task, ensure_ascii=False).encode()
    return _V2 + b'"task": ' + name + b', "deleted": true' + tail(None) + b"\n"


def record_line(doc: Mapping[str, Any]) -> bytes:
    """``doc`` (as :func:`parse_line` returns it) as a record again, with its newline."""
    parts = doc.get("parts")
    rest = {k: v for k, v in doc.items() if k not in ("v", "parts")}
    body = json.dumps(rest, ensure_ascii=False, separators=(", ", ": "))[1:-1].encode()
    raw = parts.raw if isinstance(parts, StoredParts) else json.dumps(parts, separators=(",", ":")).encode()
    return _V2 + body + _PARTS + raw + b"}\n"


def _valid(doc: Any) -> bool:
    """Whether ``doc`` has the fields of a record, with their types."""
    if not isinstance(doc, dict) or not isinstance(doc.get("task"), str):
        return False
    if doc.get("deleted") is True:
        return True
    reads = doc.get("reads", _NO_READS)
    return (
        isinstance(doc.get("key"), str)
        and isinstance(doc.get("at"), _NUMBER)
        and isinstance(doc.get("ser"), str)
        and isinstance(doc.get("digest"), str)
        and ("result" in doc or isinstance(doc.get("file"), str))
        and isinstance(reads, list)
        and (not reads or all(isinstance(name, str) for name in reads))
    )


_NUMBER = (int, float)
_NO_READS: list[str] = []  # a record of asyncflow 0.2.0 or before: its reads are in its parts


def _with_parts(doc: dict[str, Any], raw: bytes) -> dict[str, Any]:
    doc["parts"] = None if raw == b"null" else StoredParts(raw)
    return doc


def parse_line(line: bytes) -> dict[str, Any] | None:
    """The record ``line`` holds (without its newline), or ``None`` if it is corrupted.

    A current record is split at its parts (see the module docstring); one that does not
    split that way (edited by hand, say) and a record of asyncflow 0.2.0 or before (parts
    inline) are parsed whole.
    """
    at = line.rfind(_PARTS)
    if at >= 0 and line.startswith(_V2) and line.endswith(b"}"):
        try:
            doc = json.loads(line[:at] + b"}")
        except (ValueError, RecursionError):
            doc = None
        if _valid(doc):
            return _with_parts(doc, line[at + _SKIP : -1])
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return doc if _valid(doc) else None


def parse_lines(lines: Sequence[bytes]) -> list[dict[str, Any] | None]:
    """:func:`parse_line` of each line; the heads of current records in one ``json.loads``."""
    heads, raws = [], []
    for line in lines:
        at = line.rfind(_PARTS)
        if at < 0 or not line.startswith(_V2) or not line.endswith(b"}"):
            break
        heads.append(line[:at])
        raws.append(line[at + _SKIP : -1])
    else:
        try:
            docs = json.loads(b"[" + b"},".join(heads) + b"}]") if heads else []
        except (ValueError, RecursionError):
            docs = None
        if isinstance(docs, list) and len(docs) == len(lines) and all(map(_valid, docs)):
            return [_with_parts(doc, raw) for doc, raw in zip(docs, raws, strict=True)]
    return [parse_line(line) for line in lines]

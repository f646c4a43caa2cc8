"""Checkpoints and the contract of their stores, plus the in-memory store.

A :class:`Checkpoint` is the stored outcome of one succeeded task; a
:class:`CheckpointStore` maps task names to their last checkpoint. This module builds the
records both stores share (one JSON object per checkpoint: the journal line of
:class:`~asyncflow.FileStore`, the ``texts`` entry of :class:`MemoryStore`) and holds
:class:`MemoryStore` itself; the file store and its crash-safety design are in
:mod:`asyncflow._store`.

The record's fields and text (the key parts last, parsed only when asked for) are in
:mod:`asyncflow._journal_format`.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import anyio
from loguru import logger

from ._digest import value_digest
from ._frozen import become, layout_twin
from ._journal_format import head, parse_line, tail
from ._serializers import JSON, Serializer

__all__ = ["Checkpoint", "CheckpointStore", "MemoryStore", "file_stem"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The stored outcome of one succeeded task.

    Attributes:
        task: the task's name.
        cache_key: the task's cache key when the result was computed (hex SHA-256).
        result: the task's result, as the serializer's ``loads`` returns it; ``None``
            when the checkpoint was written by another serializer than the one asked for
            (then it is not decoded at all: see ``serializer``).
        saved_at: when it was saved, in seconds since the Unix epoch.
        key_parts: what the cache key was computed from (see
            :class:`asyncflow._cache.CacheKey`), so that a changed key can be explained;
            ``None`` in checkpoints of asyncflow 0.1, which still load.
        serializer: the name of the serializer that wrote it (``"json"``).
        digest: hex SHA-256 of the serialized result; downstream cache keys fold it in,
            so a task that runs again and returns the same bytes keeps them cached.
        size: the serialized result's size in bytes.
        cutoff: what downstream cache keys fold in for this result (early cutoff): the
            digest of the *value* (:func:`asyncflow._digest.value_digest`) when the
            serializer is not JSON and the value is plain data, since such bytes need not
            repeat (a pickled set of strings changes with each process's hash seed); else
            ``digest``.
        reads: the names of the run parameters the task read (its key folds in their
            values); ``None`` when the record does not say (then they are the keys of
            ``key_parts["params"]``).
    """

    task: str
    cache_key: str
    result: Any
    saved_at: float
    key_parts: Mapping[str, Any] | None = None
    serializer: str = "json"
    digest: str = ""
    size: int = 0
    cutoff: str = ""
    reads: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.cutoff:
            object.__setattr__(self, "cutoff", self.digest)


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live. Implementations must pass ``tests/test_checkpoints.py``'s contract."""

    async def load(self, task: str, serializer: Serializer = JSON) -> Checkpoint | None:
        """The checkpoint of ``task``, or ``None`` when there is none or it is corrupted.

        A checkpoint written by a serializer of another name is returned undecoded
        (``result`` is ``None``, ``serializer`` names the writer): the caller treats it as
        a miss. Only ``serializer.loads`` ever decodes a result.

        Raises:
            CheckpointReadError: the checkpoint exists but cannot be read.
        """
        ...

    async def save(
        self,
        task: str,
        cache_key: str,
        result: Any,
        *,
        key_parts: Mapping[str, Any] | None = None,
        serializer: Serializer = JSON,
    ) -> Checkpoint:
        """Store ``result`` for ``task``; return the checkpoint as it will load back.

        Returns once the checkpoint is durable. ``key_parts`` (plain JSON data) loads back
        as :attr:`Checkpoint.key_parts`.

        Raises:
            Exception: whatever ``serializer.dumps`` raises (``TypeError``/``ValueError``
                for a result that is not strict JSON); nothing is stored.
            OSError: the store cannot be written; the previous checkpoint is intact.
        """
        ...

    async def delete(self, task: str) -> None:
        """Remove the checkpoint of ``task`` if there is one."""
        ...


def file_stem(task: str) -> str:
    """A file name stem for ``task`` that every filesystem accepts, distinct per name.

    An ASCII name of at most 100 characters made of letters, digits and ``_`` is used as
    it is; any other name becomes its first letters and digits (at most 40) followed by
    ``-`` and 16 hex digits of the SHA-256 of its NFC form, which keeps names that are
    over 255 bytes in UTF-8, or that differ only in characters a filesystem folds, apart.
    """
    if len(task) <= 100 and task.isascii() and task.replace("_", "a").isalnum():
        return task
    name = unicodedata.normalize("NFC", task)
    readable = "".join(c for c in name if c.isascii() and (c.isalnum() or c == "_"))[:40]
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


_CheckpointFields = layout_twin(Checkpoint)


def _checkpoint(doc: Mapping[str, Any], result: Any) -> Checkpoint:
    """The :class:`Checkpoint` of record ``doc`` (fields checked by the parser), holding
    ``result``; built without the dataclass's per-field ``object.__setattr__`` (see
    :mod:`asyncflow._frozen`: one per cached task of a warm rerun)."""
    c = _CheckpointFields()
    c.task, c.cache_key, c.result, c.saved_at = doc["task"], doc["key"], result, doc["at"]
    parts, reads, size, cutoff = doc.get("parts"), doc.get("reads"), doc.get("size"), doc.get("cutoff")
    c.key_parts = parts if isinstance(parts, Mapping) else None
    c.serializer = doc["ser"]
    c.digest = doc["digest"]
    c.size = size if type(size) is int else 0
    c.cutoff = cutoff if type(cutoff) is str and cutoff else c.digest
    c.reads = tuple(reads) if type(reads) is list else None
    return become(c, Checkpoint)


def _legacy(task: str, data: bytes, origin: str) -> Checkpoint | None:
    """A checkpoint of asyncflow 0.1 (``<task>.json``), or ``None`` with a warning if corrupted."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("task") != task:
            raise ValueError("not a checkpoint of this task")
        if not isinstance(doc.get("cache_key"), str) or not isinstance(doc.get("saved_at"), int | float):
            raise ValueError("cache_key or saved_at is missing or has the wrong type")
        text = json.dumps(doc["result"], ensure_ascii=False).encode()
    except (ValueError, KeyError, RecursionError, TypeError) as exc:
        _warn_corrupt(task, origin, exc)
        return None
    return Checkpoint(
        task=task,
        cache_key=doc["cache_key"],
        result=doc["result"],
        saved_at=doc["saved_at"],
        key_parts=doc.get("key_parts") if isinstance(doc.get("key_parts"), dict) else None,
        digest=hashlib.sha256(text).hexdigest(),
        size=len(text),
    )


def _warn_corrupt(task: str, origin: str, exc: BaseException) -> None:
    why = f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
    if isinstance(exc, RecursionError):
        why = "nested too deeply"
    logger.warning("checkpoint {} of task {!r} is corrupted ({}); treating it as missing", origin, task, why)


def _cutoff(result: Any, serializer: Serializer) -> str | None:
    """The value digest downstream keys fold in, for a serializer whose bytes need not repeat."""
    return None if serializer.name == JSON.name else value_digest(result)


def _head(
    task: str,
    cache_key: str,
    key_parts: Mapping[str, Any] | None,
    serializer: str,
    digest: str,
    size: int,
    cutoff: str | None = None,
) -> tuple[bytes, bytes, dict[str, Any]]:
    """A new checkpoint's record: ``(head, tail, in-memory record)``.

    The record's text is ``head + b', "result": ' + <JSON> + tail`` (or ``"file"``), see
    :mod:`asyncflow._journal_format`.
    """
    saved_at = time.time()
    params = key_parts.get("params") if key_parts is not None else None
    reads = list(params) if isinstance(params, Mapping) else []
    cut = cutoff if cutoff is not None and cutoff != digest else None
    doc: dict[str, Any] = {
        "task": task, "key": cache_key, "at": saved_at, "ser": serializer, "digest": digest, "size": size,
        "reads": reads,
    }  # fmt: skip
    if cut is not None:
        doc["cutoff"] = cut
    doc["parts"] = None if key_parts is None else dict(key_parts)
    text = head(task, cache_key, reads, serializer, digest, size, saved_at, cut)
    return text, tail(key_parts), doc


def _encode(task: str, result: Any, serializer: Serializer) -> tuple[bytes, str]:
    """``(serialized bytes, hex digest)`` of ``result``; what ``dumps`` raises propagates."""
    data = serializer.dumps(result)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"serializer {serializer.name!r} returned {type(data).__name__}, not bytes")
    return bytes(data) if isinstance(data, bytearray) else data, hashlib.sha256(data).hexdigest()


class MemoryStore:
    """Checkpoints kept in memory; nothing touches the disk.

    ``texts`` maps task names to the journal line (JSON text) of their checkpoint and may
    be edited by tests (to corrupt a checkpoint, say); the bytes of results that are not
    inline JSON are in ``blobs``.
    """

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}

    async def load(self, task: str, serializer: Serializer = JSON) -> Checkpoint | None:
        """See :meth:`CheckpointStore.load`."""
        await anyio.lowlevel.checkpoint()
        text = self.texts.get(task)
        if text is None:
            return None
        doc = parse_line(text.encode())
        if doc is None or doc["task"] != task or doc.get("deleted"):
            _warn_corrupt(task, f"memory:{task}", ValueError("not a checkpoint of this task"))
            return None
        if doc["ser"] != serializer.name:
            return _checkpoint(doc, None)
        if "result" in doc:
            return _checkpoint(doc, doc["result"])
        try:
            value = serializer.loads(self.blobs[task])
        except Exception as exc:
            _warn_corrupt(task, f"memory:{task}", exc)
            return None
        return _checkpoint(doc, value)

    async def save(
        self,
        task: str,
        cache_key: str,
        result: Any,
        *,
        key_parts: Mapping[str, Any] | None = None,
        serializer: Serializer = JSON,
    ) -> Checkpoint:
        """See :meth:`CheckpointStore.save`."""
        data, digest = _encode(task, result, serializer)
        cutoff = _cutoff(result, serializer)
        del result
        start, end, _ = _head(task, cache_key, key_parts, serializer.name, digest, len(data), cutoff)
        if serializer.name == JSON.name:
            text = (start + b', "result": ' + data + end).decode()
            self.blobs.pop(task, None)
        else:
            text = (start + b', "file": "memory"' + end).decode()
            self.blobs[task] = data
        doc = parse_line(text.encode())
        assert doc is not None
        value = serializer.loads(data) if "file" in doc else doc["result"]
        await anyio.lowlevel.checkpoint()
        self.texts[task] = text
        return _checkpoint(doc, value)

    async def delete(self, task: str) -> None:
        """See :meth:`CheckpointStore.delete`."""
        await anyio.lowlevel.checkpoint()
        self.texts.pop(task, None)
        self.blobs.pop(task, None)

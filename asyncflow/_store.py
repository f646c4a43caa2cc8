"""Checkpoint stores: where a task's last result and its cache key live between runs.

A store maps a task name to its last :class:`Checkpoint`. Two implementations pass one
contract (``tests/test_checkpoints.py``): :class:`FileStore`, the default, and
:class:`MemoryStore`, for tests and for embedding without a disk. Both hand back what the
task's serializer's ``loads`` returns (see :mod:`asyncflow._serializers`), so a downstream
task receives the same value on a first run and on a rerun that loads the checkpoint.

The file store's layout, one folder per pipeline (``<workdir>/checkpoints/<pipeline>/``)::

    journal.jsonl               one JSON line per save or delete; the last line of a task wins
    <task>.<digest16>.<suffix>  a result too large for the journal, or not JSON

Why a journal. A first run of 10,000 tasks with one file and one fsync per task spends
most of its time waiting for the disk; a rerun that opens 10,000 files spends it opening
files. Instead saves are **group-committed**: a task's save appends its line to the
current batch and waits; one saver at a time (the leader) writes the whole batch with one
append and one fsync, then releases every saver of that batch. A task is reported
succeeded only once its line is durable. A rerun reads the journal once, in bulk.

Crash safety. A kill at any instant leaves at most a torn last line, which is ignored
(and cut off before the next append); every earlier line is whole. A result stored in a
file of its own is written to a temporary file, fsynced and renamed under a name that
holds its content's digest, and the directory is fsynced before the journal line that
names it, so a line never names a file that a crash could lose or half-write. The
journal is compacted (rewritten atomically, superseded lines dropped) when most of it is
superseded.

Bounds. At most :func:`~asyncflow._files.io_slots` result files are open at once per
store; the journal itself holds no descriptor between batches. The store's worker
threads are drawn under its own limiter, never from the pool that runs users' tasks. An
I/O error other than "missing" is retried when it is transient (too many open files)
and otherwise raised as :class:`~asyncflow.CheckpointReadError`, never taken for a
missing checkpoint. A corrupted line or file (garbage, a failed ``loads``, JSON nested
too deeply) is a warning and a missing checkpoint.

Old layout. asyncflow 0.1 wrote ``<workdir>/checkpoints/<task>.json``. A
:class:`FileStore` given ``legacy=`` that folder still finds those files for tasks the
journal does not know yet; a task's next save supersedes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from loguru import logger

from ._checkpoint import (
    Checkpoint,
    CheckpointStore,
    MemoryStore,
    _checkpoint,
    _cutoff,
    _encode,
    _head,
    _legacy,
    _warn_corrupt,
    file_stem,
)
from ._errors import CheckpointReadError
from ._files import (
    dump_atomic,
    transient,
    write_bytes_atomic,
)
from ._journal import _RETRY_DELAYS, Journal
from ._journal_format import deletion
from ._serializers import JSON, Serializer

__all__ = ["Checkpoint", "CheckpointStore", "FileStore", "MemoryStore", "file_stem"]

INLINE_LIMIT = 16 * 1024
"""JSON results up to this many bytes are stored inside the journal line; larger ones,
and every result of another serializer, get a file of their own."""


class FileStore(Journal):
    """Checkpoints in a folder: a group-committed journal plus a file per large result.

    See the module docstring for the layout and its guarantees. The folder is created on
    the first save, never by a load. The journal is read once, on the store's first use:
    create one store per run (as :meth:`~asyncflow.Pipeline.run` does) when another
    process may have written the folder since. One writer at a time: the working
    directory's lock sees to it for the default store.

    Args:
        directory: the pipeline's folder, e.g. ``.asyncflow/checkpoints/prices``.
        legacy: the folder of asyncflow 0.1's ``<task>.json`` checkpoints, searched for a
            task the journal does not know; ``None`` to search nowhere.
    """

    def path(self, task: str, serializer: Serializer = JSON, digest: str = "") -> Path:
        """The file a result of ``task`` would get (named by its content's ``digest``)."""
        return self.directory / f"{file_stem(task)}.{digest[:16]}{serializer.suffix}"

    # -- reading --------------------------------------------------------------------------

    async def load(self, task: str, serializer: Serializer = JSON) -> Checkpoint | None:
        """See :meth:`CheckpointStore.load`; a corrupted line or file is a warning."""
        docs = self._docs if self._docs is not None else await self._open()
        doc = docs.get(task)
        if doc is None:
            return await self._load_legacy(task) if task in self._legacy_names else None
        if doc["ser"] != serializer.name:
            return _checkpoint(doc, None)
        if "result" in doc:
            return _checkpoint(doc, doc["result"])
        path = self.path(task, serializer, doc["digest"])
        if doc["file"] != path.name:  # only the file its own name and digest give, never another
            _warn_corrupt(task, str(self.journal), ValueError(f"it names another file, {doc['file']!r}"))
            return None
        if _streams(serializer):
            return await self._load_streaming(task, doc, path, serializer)
        try:
            data = await self._read(path, task)
        except FileNotFoundError:
            logger.warning("checkpoint file {} of task {!r} is missing; treating it as missing", path, task)
            return None
        try:
            if len(data) != doc.get("size", len(data)):
                raise ValueError(f"it has {len(data)} bytes, not {doc.get('size')}")
            if hashlib.sha256(data).hexdigest() != doc["digest"]:  # checked before loads runs
                raise ValueError("its content does not have the digest its journal line records")
            value = serializer.loads(data)
        except Exception as exc:
            self._bad.add(path.name)  # the rerun's save must replace it, same name or not
            _warn_corrupt(task, str(path), exc)
            return None
        return _checkpoint(doc, value)

    async def _load_streaming(
        self, task: str, doc: dict[str, Any], path: Path, serializer: Serializer
    ) -> Checkpoint | None:
        size = doc.get("size")
        try:
            async with self._limiter_files():
                value = await anyio.to_thread.run_sync(
                    _load_file,
                    path,
                    getattr(serializer, "load"),  # noqa: B009 (optional member, see _streams)
                    size,
                    doc["digest"],
                    limiter=self._limiter(),
                )
        except FileNotFoundError:
            logger.warning("checkpoint file {} of task {!r} is missing; treating it as missing", path, task)
            return None
        except OSError as exc:
            if transient(exc) or not isinstance(exc, _Corrupt):
                raise CheckpointReadError(task, str(path), exc) from exc
            self._bad.add(path.name)
            _warn_corrupt(task, str(path), exc)
            return None
        except Exception as exc:
            self._bad.add(path.name)
            _warn_corrupt(task, str(path), exc)
            return None
        return _checkpoint(doc, value)

    async def _load_legacy(self, task: str) -> Checkpoint | None:
        assert self.legacy is not None
        path = self.legacy / f"{task}.json"
        try:
            data = await self._read(path, task)
        except FileNotFoundError:
            return None
        return _legacy(task, data, str(path))

    # -- writing --------------------------------------------------------------------------

    async def save(
        self,
        task: str,
        cache_key: str,
        result: Any,
        *,
        key_parts: Mapping[str, Any] | None = None,
        serializer: Serializer = JSON,
    ) -> Checkpoint:
        """See :meth:`CheckpointStore.save`.

        A serializer that also has ``dump(value, file)`` and ``load(file)`` (pickle does)
        streams: the result is written to its file without a copy of its bytes in memory,
        hashed as it is written, in one of the store's worker threads, and read back the
        same way; a large result is then held at most twice (the task's object and the one
        ``load`` returns). Otherwise ``dumps`` makes the bytes first.
        """
        if _streams(serializer):
            return await self._save_streaming(task, cache_key, result, key_parts, serializer)
        data, digest = _encode(task, result, serializer)
        cutoff = _cutoff(result, serializer)
        del result
        with anyio.CancelScope(shield=True):  # a computed result is saved even if the run is cancelled
            await self._ready()
            head, tail, doc = _head(task, cache_key, key_parts, serializer.name, digest, len(data), cutoff)
            if serializer.name == JSON.name and len(data) <= INLINE_LIMIT:
                line = head + b', "result": ' + data + tail + b"\n"
                value = doc["result"] = serializer.loads(data)
                dirsync = False
            else:
                path = self.path(task, serializer, digest)
                await self._write_file(path, data, task)
                doc["file"] = path.name
                line = head + b', "file": ' + json.dumps(path.name).encode() + tail + b"\n"
                value = serializer.loads(data)
                dirsync = True
            del data
            await self._commit(line, doc, dirsync)
        return _checkpoint(doc, value)

    async def _save_streaming(
        self,
        task: str,
        cache_key: str,
        result: Any,
        key_parts: Mapping[str, Any] | None,
        serializer: Serializer,
    ) -> Checkpoint:
        cutoff = _cutoff(result, serializer)
        with anyio.CancelScope(shield=True):
            await self._ready()
            stem = f"{file_stem(task)}."
            async with self._limiter_files():
                name, digest, size = await anyio.to_thread.run_sync(
                    dump_atomic,
                    self.directory,
                    stem,
                    serializer.suffix,
                    getattr(serializer, "dump"),  # noqa: B009 (optional member, see _streams)
                    result,
                    limiter=self._limiter(),
                )
            del result
            head, tail, doc = _head(task, cache_key, key_parts, serializer.name, digest, size, cutoff)
            doc["file"] = name
            self._bad.discard(name)
            line = head + b', "file": ' + json.dumps(name).encode() + tail + b"\n"
            await self._commit(line, doc, True)
            async with self._limiter_files():
                value = await anyio.to_thread.run_sync(
                    _load_file,
                    self.directory / name,
                    getattr(serializer, "load"),  # noqa: B009 (optional member, see _streams)
                    limiter=self._limiter(),
                )
        return _checkpoint(doc, value)

    def stage(
        self,
        task: str,
        cache_key: str,
        result: Any,
        *,
        key_parts: Mapping[str, Any] | None = None,
        serializer: Serializer = JSON,
    ) -> Checkpoint | None:
        """Queue a small JSON result's journal line without waiting; :meth:`commit` makes it durable.

        The runner's fast path: a task whose checkpoint is staged is reported succeeded
        only after a :meth:`commit` that began after this call has returned. Returns the
        checkpoint as it will load back, or ``None`` (nothing staged) when the result
        needs I/O of its own (another serializer, more than :data:`INLINE_LIMIT` bytes)
        or the store has not been read or created yet: then use :meth:`save`.

        Raises:
            Exception: as :meth:`save`, for a result the serializer cannot encode.
        """
        if serializer.name != JSON.name or self._docs is None or not self._made:
            return None
        data, digest = _encode(task, result, serializer)
        if len(data) > INLINE_LIMIT:
            return None
        head, tail, doc = _head(task, cache_key, key_parts, serializer.name, digest, len(data))
        doc["result"] = serializer.loads(data)
        self._pending.append(head + b', "result": ' + data + tail + b"\n")
        self._pending_docs.append(doc)
        return _checkpoint(doc, doc["result"])

    async def delete(self, task: str) -> None:
        """See :meth:`CheckpointStore.delete`."""
        docs = self._docs if self._docs is not None else await self._open()
        if task not in docs and task not in self._legacy_names:
            return
        with anyio.CancelScope(shield=True):
            doc = {"task": task, "deleted": True}
            await self._commit(deletion(task), doc, False)
            if task in self._legacy_names and self.legacy is not None:
                await anyio.Path(self.legacy / f"{task}.json").unlink(missing_ok=True)
                self._legacy_names = self._legacy_names - {task}

    async def _write_file(self, path: Path, data: bytes, task: str) -> None:
        if path.name not in self._bad:
            try:
                if (await anyio.Path(path).stat()).st_size == len(data):
                    return  # same content, same name: already durable
            except FileNotFoundError:
                pass
        self._bad.discard(path.name)
        for delay in (*_RETRY_DELAYS, None):
            try:
                async with self._limiter_files():
                    await write_bytes_atomic(path, data, limiter=self._limiter())
                return
            except OSError as exc:
                if delay is None or not transient(exc):
                    raise
            await anyio.sleep(delay)


class _Corrupt(OSError):
    """A result file whose size is not the one its journal line records."""


def _streams(serializer: Serializer) -> bool:
    """Whether ``serializer`` can write to and read from a file itself (``dump``/``load``)."""
    return callable(getattr(serializer, "dump", None)) and callable(getattr(serializer, "load", None))


def _load_file(path: Path, load: Any, size: int | None = None, digest: str | None = None) -> Any:
    """``load(file)`` of ``path`` (blocking), once its size and SHA-256 are the journal's.

    The digest is checked *before* ``load`` runs, so a file altered after it was written
    (by hand, by another program) is never unpickled.
    """
    with open(path, "rb") as f:
        if size is not None and os.fstat(f.fileno()).st_size != size:
            raise _Corrupt(f"it has {os.fstat(f.fileno()).st_size} bytes, not {size}")
        if digest is not None:
            if hashlib.file_digest(f, "sha256").hexdigest() != digest:
                raise _Corrupt("its content does not have the digest its journal line records")
            f.seek(0)
        return load(f)

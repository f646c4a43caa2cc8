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

import contextlib
import json
import os
import re
import time
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
    _encode,
    _legacy,
    _parse,
    _record,
    _warn_corrupt,
    file_stem,
)
from ._errors import CheckpointReadError
from ._files import (
    append_durably,
    dump_atomic,
    fsync_directory,
    io_slots,
    read_bytes,
    transient,
    write_bytes_atomic,
)
from ._serializers import JSON, Serializer

__all__ = ["Checkpoint", "CheckpointStore", "FileStore", "MemoryStore", "file_stem"]

INLINE_LIMIT = 16 * 1024
"""JSON results up to this many bytes are stored inside the journal line; larger ones,
and every result of another serializer, get a file of their own."""

_RETRY_DELAYS = (0.01, 0.05, 0.2, 1.0)
"""Waits, in seconds, between tries of an I/O call that failed transiently (EMFILE...)."""


class FileStore:
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

    def __init__(
        self, directory: str | os.PathLike[str], *, legacy: str | os.PathLike[str] | None = None
    ) -> None:
        self.directory = Path(directory)
        self.legacy = None if legacy is None else Path(legacy)
        self.journal = self.directory / "journal.jsonl"
        self._docs: dict[str, dict[str, Any]] | None = None
        self._legacy_names: frozenset[str] = frozenset()
        self._opening: anyio.Event | None = None
        self._threads: anyio.CapacityLimiter | None = None
        self._files: anyio.CapacityLimiter | None = None
        self._lines = 0  # journal lines read or written, superseded ones included
        self._valid = 0  # bytes of the journal up to its last whole line
        self._rewrite = False  # compact (or cut a torn tail) at the next flush
        self._made = False
        self._bad: set[str] = set()  # result files that failed to load: rewrite, never reuse
        # Group commit: lines waiting for the next flush, and which batches are durable.
        self._pending: list[bytes] = []
        self._pending_docs: list[dict[str, Any]] = []
        self._dirsync = False
        self._batch = 0  # the number of the batch now filling
        self._durable = -1  # the last batch made durable
        self._failed: dict[int, OSError] = {}
        self._flushing = False
        self._flushed: anyio.Event | None = None

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

    async def _open(self) -> dict[str, dict[str, Any]]:
        """Read the journal once; concurrent first loads wait for the one read."""
        if self._opening is not None:
            await self._opening.wait()
            docs = self._docs
            return docs if docs is not None else await self._open()  # the first read failed: again
        self._opening = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                self._docs = await self._read_journal()
                if self.legacy is not None:
                    self._legacy_names = await anyio.to_thread.run_sync(
                        _legacy_names, self.legacy, limiter=self._limiter()
                    )
        finally:
            opening, self._opening = self._opening, None
            opening.set()
        return self._docs if self._docs is not None else {}

    async def _read_journal(self) -> dict[str, dict[str, Any]]:
        try:
            data = await self._read(self.journal, None)
        except FileNotFoundError:
            return {}
        end = data.rfind(b"\n") + 1
        self._valid = end
        if end < len(data):
            logger.warning(
                "checkpoint journal {} ends in a torn line (a run was killed mid-write); ignoring it",
                self.journal,
            )
            self._rewrite = True
        docs: dict[str, dict[str, Any]] = {}
        lines = data[:end].split(b"\n")[:-1]
        for number, line in enumerate(lines, 1):
            doc = _parse(line)
            if doc is None:
                logger.warning(
                    "line {} of checkpoint journal {} is corrupted; ignoring it", number, self.journal
                )
                self._rewrite = True
            elif doc.get("deleted") is True:
                docs.pop(doc["task"], None)
            else:
                docs[doc["task"]] = doc
        self._lines = len(lines)
        if self._lines > 1000 and self._lines > 2 * len(docs):
            self._rewrite = True  # mostly superseded: compact at the next flush
        return docs

    async def _load_legacy(self, task: str) -> Checkpoint | None:
        assert self.legacy is not None
        path = self.legacy / f"{task}.json"
        try:
            data = await self._read(path, task)
        except FileNotFoundError:
            return None
        return _legacy(task, data, str(path))

    async def _read(self, path: Path, task: str | None) -> bytes:
        """The bytes of ``path``, retrying transient errors; FileNotFoundError passes."""
        files = self._limiter_files()
        for delay in (*_RETRY_DELAYS, None):
            try:
                async with files:
                    return await read_bytes(path, limiter=self._limiter())
            except FileNotFoundError:
                raise
            except OSError as exc:
                if delay is None or not transient(exc):
                    raise CheckpointReadError(task, str(path), exc) from exc
            await anyio.sleep(delay)
        raise AssertionError("unreachable")

    def _limiter(self) -> anyio.CapacityLimiter:
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(4)
        return self._threads

    def _limiter_files(self) -> anyio.CapacityLimiter:
        if self._files is None:
            self._files = anyio.CapacityLimiter(io_slots())
        return self._files

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
        del result
        with anyio.CancelScope(shield=True):  # a computed result is saved even if the run is cancelled
            if self._docs is None:
                await self._open()
            if not self._made:
                await anyio.Path(self.directory).mkdir(parents=True, exist_ok=True)
                self._made = True
            saved_at = time.time()
            head = _record(task, cache_key, key_parts, serializer.name, digest, len(data), saved_at)
            doc: dict[str, Any] = {
                "task": task,
                "key": cache_key,
                "at": saved_at,
                "ser": serializer.name,
                "digest": digest,
                "size": len(data),
            }
            if key_parts is not None:
                doc["parts"] = dict(key_parts)
            if serializer.name == JSON.name and len(data) <= INLINE_LIMIT:
                line = head.encode() + b', "result": ' + data + b"}\n"
                value = doc["result"] = serializer.loads(data)
                dirsync = False
            else:
                path = self.path(task, serializer, digest)
                await self._write_file(path, data, task)
                doc["file"] = path.name
                line = head.encode() + b', "file": ' + json.dumps(path.name).encode() + b"}\n"
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
        with anyio.CancelScope(shield=True):
            if self._docs is None:
                await self._open()
            if not self._made:
                await anyio.Path(self.directory).mkdir(parents=True, exist_ok=True)
                self._made = True
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
            saved_at = time.time()
            head = _record(task, cache_key, key_parts, serializer.name, digest, size, saved_at)
            doc: dict[str, Any] = {
                "task": task, "key": cache_key, "at": saved_at, "ser": serializer.name,
                "digest": digest, "size": size, "file": name,
            }  # fmt: skip
            if key_parts is not None:
                doc["parts"] = dict(key_parts)
            self._bad.discard(name)
            line = head.encode() + b', "file": ' + json.dumps(name).encode() + b"}\n"
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
        saved_at = time.time()
        head = _record(task, cache_key, key_parts, serializer.name, digest, len(data), saved_at)
        doc: dict[str, Any] = {
            "task": task,
            "key": cache_key,
            "at": saved_at,
            "ser": serializer.name,
            "digest": digest,
            "size": len(data),
            "result": serializer.loads(data),
        }
        if key_parts is not None:
            doc["parts"] = dict(key_parts)
        self._pending.append(head.encode() + b', "result": ' + data + b"}\n")
        self._pending_docs.append(doc)
        return _checkpoint(doc, doc["result"])

    async def commit(self) -> None:
        """Return once every line staged before this call is durable (shielded).

        Raises:
            OSError: the journal could not be written; the staged checkpoints are lost.
        """
        with anyio.CancelScope(shield=True):
            await self._commit(None, None, False)

    async def delete(self, task: str) -> None:
        """See :meth:`CheckpointStore.delete`."""
        docs = self._docs if self._docs is not None else await self._open()
        if task not in docs and task not in self._legacy_names:
            return
        with anyio.CancelScope(shield=True):
            doc = {"task": task, "deleted": True}
            await self._commit((json.dumps(doc, ensure_ascii=False) + "\n").encode(), doc, False)
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

    async def _commit(self, line: bytes | None, doc: dict[str, Any] | None, dirsync: bool) -> None:
        """Append ``line`` in the current batch; return once that batch is durable."""
        if line is not None and doc is not None:
            self._pending.append(line)
            self._pending_docs.append(doc)
        self._dirsync = self._dirsync or dirsync
        mine = self._batch
        while self._durable < mine and mine not in self._failed:
            if not self._flushing:
                await self._flush()
            else:
                if self._flushed is None:
                    self._flushed = anyio.Event()
                await self._flushed.wait()
        error = self._failed.get(mine)
        if error is not None:
            raise OSError(error.errno, f"the checkpoint journal {self.journal} could not be written: {error}")

    async def _flush(self) -> None:
        """Write the current batch with one append and one fsync (the leader's job)."""
        self._flushing = True
        batch, docs, dirsync = self._pending, self._pending_docs, self._dirsync
        self._pending, self._pending_docs, self._dirsync = [], [], False
        number = self._batch
        self._batch += 1
        assert self._docs is not None
        try:
            if dirsync:
                await anyio.to_thread.run_sync(fsync_directory, self.directory, limiter=self._limiter())
            data = b"".join(batch)
            if not batch:
                pass  # what was staged went out with an earlier batch: durable already
            elif self._rewrite:
                await self._compact(data, docs)
            else:
                self._valid = await append_durably(self.journal, data, limiter=self._limiter())
                self._lines += len(batch)
            for doc in docs:
                if doc.get("deleted") is True:
                    self._docs.pop(doc["task"], None)
                else:
                    self._docs[doc["task"]] = doc
            self._durable = number
        except OSError as exc:
            self._failed[number] = exc
            # The batch may be half-written: cut it off, and rewrite the journal at the
            # next flush in case the cut did not reach the disk either.
            self._rewrite = True
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(
                    os.truncate, self.journal, self._valid, limiter=self._limiter()
                )
        finally:
            self._flushing = False
            flushed, self._flushed = self._flushed, None
            if flushed is not None:
                flushed.set()

    async def _compact(self, data: bytes, docs: list[dict[str, Any]]) -> None:
        """Rewrite the journal with one line per live checkpoint, then ``data``; atomic."""
        assert self._docs is not None
        live = dict(self._docs)
        for doc in docs:
            live.pop(doc["task"], None)
        text = b"".join(_line(doc) for doc in live.values()) + data
        await write_bytes_atomic(self.journal, text, sync_directory=True, limiter=self._limiter())
        self._valid, self._lines, self._rewrite = len(text), len(live) + len(docs), False
        named = {doc["file"] for doc in (*live.values(), *docs) if "file" in doc}
        await anyio.to_thread.run_sync(_remove_unnamed, self.directory, named, limiter=self._limiter())


class _Corrupt(OSError):
    """A result file whose size is not the one its journal line records."""


def _streams(serializer: Serializer) -> bool:
    """Whether ``serializer`` can write to and read from a file itself (``dump``/``load``)."""
    return callable(getattr(serializer, "dump", None)) and callable(getattr(serializer, "load", None))


def _load_file(path: Path, load: Any, size: int | None = None) -> Any:
    """``load(file)`` of ``path`` (blocking), after checking its size against the journal's."""
    with open(path, "rb") as f:
        if size is not None and os.fstat(f.fileno()).st_size != size:
            raise _Corrupt(f"it has {os.fstat(f.fileno()).st_size} bytes, not {size}")
        return load(f)


def _line(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode()


_RESULT_FILE = re.compile(r"[^.]+\.[0-9a-f]{16}\.[^.]+")


def _remove_unnamed(folder: Path, named: set[str]) -> None:
    """Delete the result files in ``folder`` that no live journal line names (superseded)."""
    for name in os.listdir(folder):
        if name not in named and _RESULT_FILE.fullmatch(name):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)


def _legacy_names(folder: Path) -> frozenset[str]:
    """The task names of asyncflow 0.1 checkpoints (``<task>.json``) in ``folder``."""
    try:
        return frozenset(name[:-5] for name in os.listdir(folder) if name.endswith(".json"))
    except (FileNotFoundError, NotADirectoryError):
        return frozenset()

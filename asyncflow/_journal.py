"""The checkpoint journal of one pipeline: read once in bulk, written by group commit.

:class:`Journal` is the lower half of :class:`asyncflow.FileStore` (see
:mod:`asyncflow._store` for the layout and its guarantees): it reads ``journal.jsonl``
into ``{task: record}`` on first use (ignoring, with a warning, a torn last line and any
corrupted line), and appends lines a batch at a time. Whoever waits for a batch and finds
no flush in progress becomes the leader: it takes every pending line, writes them with one
append and one fsync, marks the batch durable and wakes the others (who then either find
their batch durable or lead the next one). A failed append is cut off and the journal
rewritten at the next flush; a journal that is mostly superseded (or torn) is rewritten
atomically, and result files no live line names are deleted then.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from loguru import logger

from ._errors import CheckpointReadError
from ._files import (
    append_durably,
    fsync_directory,
    io_slots,
    read_bytes,
    transient,
    write_bytes_atomic,
)
from ._journal_format import parse_lines, record_line

__all__ = ["Journal"]

_RETRY_DELAYS = (0.01, 0.05, 0.2, 1.0)
"""Waits, in seconds, between tries of an I/O call that failed transiently (EMFILE...)."""


class Journal:
    """A pipeline folder's journal (see the module docstring); the base of FileStore."""

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
        for number, doc in enumerate(parse_lines(lines), 1):
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

    async def _ready(self) -> None:
        """Read the journal (if not yet) and create the folder (if not yet): before a save."""
        if self._docs is None:
            await self._open()
        if not self._made:
            await anyio.Path(self.directory).mkdir(parents=True, exist_ok=True)
            self._made = True

    async def commit(self) -> None:
        """Return once every line staged before this call is durable (shielded).

        Raises:
            OSError: the journal could not be written; the staged checkpoints are lost.
        """
        with anyio.CancelScope(shield=True):
            await self._commit(None, None, False)

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
            superseded = []
            for doc in docs:
                old = self._docs.get(doc["task"])
                if old is not None and "file" in old and old["file"] != doc.get("file"):
                    superseded.append(old["file"])  # no line names it once this batch is durable
                if doc.get("deleted") is True:
                    self._docs.pop(doc["task"], None)
                else:
                    self._docs[doc["task"]] = doc
            self._durable = number
            if superseded:
                named = {d["file"] for d in self._docs.values() if "file" in d}
                await anyio.to_thread.run_sync(
                    _remove_files,
                    self.directory,
                    [f for f in superseded if f not in named],
                    limiter=self._limiter(),
                )
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
        text = b"".join(map(record_line, live.values())) + data
        await write_bytes_atomic(self.journal, text, sync_directory=True, limiter=self._limiter())
        self._valid, self._lines, self._rewrite = len(text), len(live) + len(docs), False
        named = {doc["file"] for doc in (*live.values(), *docs) if "file" in doc}
        await anyio.to_thread.run_sync(_remove_unnamed, self.directory, named, limiter=self._limiter())


_RESULT_FILE = re.compile(r"[^.]+\.[0-9a-f]{16}\.[^.]+")


def _remove_unnamed(folder: Path, named: set[str]) -> None:
    """Delete the result files in ``folder`` that no live journal line names (superseded)."""
    for name in os.listdir(folder):
        if name not in named and _RESULT_FILE.fullmatch(name):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)


def _remove_files(folder: Path, names: list[str]) -> None:
    """Delete the named result files of ``folder`` (best effort: a leftover is harmless)."""
    for name in names:
        if _RESULT_FILE.fullmatch(name):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)


def _legacy_names(folder: Path) -> frozenset[str]:
    """The task names of asyncflow 0.1 checkpoints (``<task>.json``) in ``folder``."""
    try:
        return frozenset(name[:-5] for name in os.listdir(folder) if name.endswith(".json"))
    except (FileNotFoundError, NotADirectoryError):
        return frozenset()

"""Checkpoint stores and asyncflow's async JSON file helpers.

All of asyncflow's file I/O goes through two functions here, :func:`read_text` and
:func:`write_text_atomic`. On asyncio they use aiofiles; on trio, where aiofiles cannot run
(it needs an asyncio loop), they use anyio's own async file API. Either way a write goes to
a temporary file in the same directory, is flushed and fsynced, and then ``os.replace``-d
over the target, all under a cancel shield: a reader sees the old content or the new
content, never half of one, even if the run is cancelled mid-write.

A checkpoint store maps a task name to its last :class:`Checkpoint`. Two implementations
share one contract: :class:`FileStore` (``<directory>/<task>.json``, the default) and
:class:`MemoryStore` (for tests and for embedding without a disk). Both round-trip results
through JSON, so what a downstream task receives is the same on a first run and on a
rerun that loads the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import aiofiles
import anyio
from loguru import logger

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "FileStore",
    "MemoryStore",
    "dumps_json",
    "read_json",
    "read_text",
    "temporary_files",
    "write_json",
    "write_text_atomic",
]

_TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def read_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file without blocking the event loop.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it does not exist).
        UnicodeDecodeError: the file is not UTF-8.
    """
    if _on_asyncio():
        async with aiofiles.open(path, encoding="utf-8") as f:
            return await f.read()
    async with await anyio.open_file(path, encoding="utf-8") as g:
        return await g.read()


async def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace the content of ``path`` with ``text`` (UTF-8), atomically and durably.

    Writes ``.<name>.<random>.tmp`` beside ``path``, flushes and fsyncs it, then
    ``os.replace``-s it over ``path``; the steps run under ``CancelScope(shield=True)``, so
    cancellation waits for the write to finish. On error the temporary file is removed.

    Raises:
        OSError: the directory is missing or not writable, or the disk is full.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
    with anyio.CancelScope(shield=True):
        try:
            if _on_asyncio():
                async with aiofiles.open(tmp, "w", encoding="utf-8") as f:
                    await f.write(text)
            else:
                async with await anyio.open_file(tmp, "w", encoding="utf-8") as g:
                    await g.write(text)
            # Closing flushed Python's buffer; the fsync and the rename share one trip to a
            # worker thread (fsync syncs the file whichever descriptor asks).
            await anyio.to_thread.run_sync(_fsync_and_replace, tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _fsync_and_replace(tmp: Path, target: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def temporary_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The temporary files in ``directory`` left by writes that never finished (a crash).

    They are the ``.<name>.<8 hex digits>.tmp`` files of :func:`write_text_atomic`; none
    of them can load as a checkpoint. Only a caller that knows no live write uses the
    directory may delete them (asyncflow does so under the working directory's lock).
    Returns ``[]`` when the directory does not exist.
    """
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(directory, name) for name in names if _TMP_NAME.fullmatch(name))


def dumps_json(value: Any) -> str:
    """Encode ``value`` as strict JSON (``allow_nan=False``).

    NaN and infinity are rejected rather than written as the non-standard ``NaN`` tokens
    that other JSON readers refuse; convert them to ``None`` or strings first.

    Raises:
        TypeError: ``value`` holds an object JSON cannot represent (the message names its type).
        ValueError: ``value`` holds NaN or an infinity (the message says so), or a circular
            reference.
    """
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        if not str(exc).startswith("Out of range float"):
            raise
        raise ValueError(
            "it holds NaN or infinity, which strict JSON does not allow (use None or a string)"
        ) from exc


async def read_json(path: str | os.PathLike[str]) -> Any:
    """Read and decode a JSON file asynchronously (aiofiles on asyncio, anyio on trio).

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is not valid JSON (``json.JSONDecodeError``).
    """
    return json.loads(await read_text(path))


async def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as strict JSON to ``path`` atomically (see :func:`write_text_atomic`).

    Raises:
        TypeError, ValueError: as :func:`dumps_json`; nothing is written then.
        OSError: as :func:`write_text_atomic`.
    """
    await write_text_atomic(path, dumps_json(value) + "\n")


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The stored outcome of one succeeded task.

    Attributes:
        task: the task's name.
        cache_key: the task's cache key when the result was computed (hex SHA-256).
        result: the task's result, as decoded from JSON.
        saved_at: when it was saved, in seconds since the Unix epoch.
        key_parts: what the cache key was computed from (``code``, ``params`` and
            ``extra`` digests, ``upstream`` pairs: see :class:`asyncflow._cache.CacheKey`),
            so that a changed key can be explained; ``None`` in checkpoints written before
            asyncflow stored it, which still load.
    """

    task: str
    cache_key: str
    result: Any
    saved_at: float
    key_parts: Mapping[str, Any] | None = None


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live. Implementations must pass ``tests/test_checkpoints.py``'s contract."""

    async def load(self, task: str) -> Checkpoint | None:
        """The checkpoint of ``task``, or ``None`` when there is none or it is unreadable."""
        ...

    async def save(
        self, task: str, cache_key: str, result: Any, *, key_parts: Mapping[str, Any] | None = None
    ) -> Checkpoint:
        """Store ``result`` for ``task`` and return the checkpoint as it will load back.

        ``key_parts`` (plain JSON data) is stored beside the key and loads back as
        :attr:`Checkpoint.key_parts`.

        Raises:
            TypeError, ValueError: ``result`` is not strict JSON; nothing is stored.
            OSError: the store cannot be written; the previous checkpoint is intact.
        """
        ...

    async def delete(self, task: str) -> None:
        """Remove the checkpoint of ``task`` if there is one."""
        ...


def _encode(
    task: str, cache_key: str, result: Any, key_parts: Mapping[str, Any] | None
) -> tuple[str, Checkpoint]:
    result_text = dumps_json(result)
    saved_at = time.time()
    parts_text = "" if key_parts is None else f'"key_parts": {dumps_json(key_parts)}, '
    text = (
        f'{{"task": {json.dumps(task)}, "cache_key": {json.dumps(cache_key)}, '
        f'"saved_at": {saved_at!r}, {parts_text}"result": {result_text}}}\n'
    )
    checkpoint = Checkpoint(
        task=task,
        cache_key=cache_key,
        result=json.loads(result_text),
        saved_at=saved_at,
        key_parts=None if key_parts is None else json.loads(json.dumps(key_parts)),
    )
    return text, checkpoint


def _decode(task: str, text: str, origin: str) -> Checkpoint | None:
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("task") != task:
            raise ValueError("not a checkpoint of this task")
        cache_key, saved_at = doc["cache_key"], doc["saved_at"]
        if not isinstance(cache_key, str) or not isinstance(saved_at, (int, float)):
            raise ValueError("cache_key or saved_at has the wrong type")
        key_parts = doc.get("key_parts")  # absent in checkpoints of older versions
        return Checkpoint(
            task=task,
            cache_key=cache_key,
            result=doc["result"],
            saved_at=saved_at,
            key_parts=key_parts if isinstance(key_parts, dict) else None,
        )
    except (ValueError, KeyError) as exc:
        why = f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else str(exc)
        logger.warning(
            "checkpoint {} of task {!r} is corrupted ({}); treating it as missing",
            origin,
            task,
            why,
        )
        return None


class FileStore:
    """Checkpoints as JSON files, ``<directory>/<task>.json``, written atomically.

    The directory is created on the first save. Temporary files (``.*.tmp``) never have the
    ``<task>.json`` name, so a crash mid-write cannot leave something that loads as a
    checkpoint.

    Args:
        directory: where the files go, e.g. ``.asyncflow/checkpoints``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._made = False

    def path(self, task: str) -> Path:
        """The file of ``task``'s checkpoint."""
        return self.directory / f"{task}.json"

    async def load(self, task: str) -> Checkpoint | None:
        """See :meth:`CheckpointStore.load`; logs a warning for an unreadable file."""
        path = self.path(task)
        try:
            text = await read_text(path)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("checkpoint {} cannot be read ({}); treating it as missing", path, exc)
            return None
        return _decode(task, text, str(path))

    async def save(
        self, task: str, cache_key: str, result: Any, *, key_parts: Mapping[str, Any] | None = None
    ) -> Checkpoint:
        """See :meth:`CheckpointStore.save`."""
        text, checkpoint = _encode(task, cache_key, result, key_parts)
        if not self._made:
            # Shielded like the write: a result that was computed is saved even if the run
            # is being cancelled, whether or not this is the store's first save.
            with anyio.CancelScope(shield=True):
                await anyio.Path(self.directory).mkdir(parents=True, exist_ok=True)
            self._made = True
        await write_text_atomic(self.path(task), text)
        return checkpoint

    async def delete(self, task: str) -> None:
        """See :meth:`CheckpointStore.delete`."""
        with contextlib.suppress(FileNotFoundError):
            await anyio.Path(self.path(task)).unlink()


class MemoryStore:
    """Checkpoints kept in a dict of JSON texts; nothing touches the disk.

    ``texts`` maps task names to the stored JSON text and may be edited by tests (to
    corrupt a checkpoint, say).
    """

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    async def load(self, task: str) -> Checkpoint | None:
        """See :meth:`CheckpointStore.load`."""
        await anyio.lowlevel.checkpoint()
        text = self.texts.get(task)
        return None if text is None else _decode(task, text, f"memory:{task}")

    async def save(
        self, task: str, cache_key: str, result: Any, *, key_parts: Mapping[str, Any] | None = None
    ) -> Checkpoint:
        """See :meth:`CheckpointStore.save`."""
        text, checkpoint = _encode(task, cache_key, result, key_parts)
        await anyio.lowlevel.checkpoint()
        self.texts[task] = text
        return checkpoint

    async def delete(self, task: str) -> None:
        """See :meth:`CheckpointStore.delete`."""
        await anyio.lowlevel.checkpoint()
        self.texts.pop(task, None)

"""asyncflow's async file helpers: every byte asyncflow writes goes through here.

On asyncio the file operations use aiofiles; on trio, where aiofiles cannot run (it needs
an asyncio loop), they use anyio's own async file API. A replacing write goes to a
temporary file in the same directory, is flushed and fsynced, and then ``os.replace``-d
over the target, all under a cancel shield: a reader sees the old content or the new
content, never half of one, even if the run is cancelled mid-write.

Open files are a bounded resource (``RLIMIT_NOFILE``: 256 by default on macOS, 1,024 on
most Linux systems). :func:`io_slots` sizes the limiters that the checkpoint stores use to
bound the files they hold open at once, and :func:`transient` tells the errors worth
retrying (``EMFILE``, ``ENFILE``, ``EAGAIN``, ``EINTR``) from the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import aiofiles
import anyio
import anyio.to_thread

__all__ = [
    "append_durably",
    "dump_atomic",
    "dumps_json",
    "fsync_directory",
    "io_slots",
    "on_asyncio",
    "read_bytes",
    "read_json",
    "read_text",
    "temporary_files",
    "transient",
    "write_bytes_atomic",
    "write_json",
    "write_text_atomic",
]

_TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.EINTR, errno.ENOBUFS})


def on_asyncio() -> bool:
    """Whether the running event loop is asyncio's (else anyio runs on trio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def io_slots() -> int:
    """How many checkpoint files one store may hold open at once.

    An eighth of the soft ``RLIMIT_NOFILE`` limit, between 4 and 64: 32 under macOS's
    default of 256 descriptors, 64 under Linux's usual 1,024. The rest stays free for the
    tasks themselves, the event loop, logging and the worker threads.
    """
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # Windows has no resource module
        return 16
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 64
    return max(4, min(64, soft // 8))


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an I/O error that may pass if tried again (too many open files...)."""
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT


async def read_bytes(path: str | os.PathLike[str], *, limiter: anyio.CapacityLimiter | None = None) -> bytes:
    """Read a whole file without blocking the event loop.

    On trio the worker threads are drawn under ``limiter`` (``None``: anyio's default
    limiter); on asyncio aiofiles uses the event loop's own executor.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it does not exist).
    """
    if on_asyncio():
        async with aiofiles.open(path, "rb") as f:
            return await f.read()
    async with await anyio.open_file(path, "rb", limiter=limiter) as g:
        return await g.read()


async def read_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file without blocking the event loop.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it does not exist).
        UnicodeDecodeError: the file is not UTF-8.
    """
    return (await read_bytes(path)).decode("utf-8")


async def write_bytes_atomic(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    *,
    sync_directory: bool = False,
    limiter: anyio.CapacityLimiter | None = None,
) -> None:
    """Replace the content of ``path`` with ``data``, atomically and durably.

    Writes ``.<name>.<random>.tmp`` beside ``path``, flushes and fsyncs it, then
    ``os.replace``-s it over ``path``; with ``sync_directory`` the directory is fsynced too,
    so that the rename itself survives a power cut. The steps run under
    ``CancelScope(shield=True)``, so cancellation waits for the write to finish. On error
    the temporary file is removed. ``data`` is written as it is (a ``memoryview`` of a large
    buffer is not copied). Worker threads are drawn under ``limiter`` as in :func:`read_bytes`.

    Raises:
        OSError: the directory is missing or not writable, or the disk is full.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
    with anyio.CancelScope(shield=True):
        try:
            if on_asyncio():
                async with aiofiles.open(tmp, "wb") as f:
                    await f.write(data)
            else:
                async with await anyio.open_file(tmp, "wb", limiter=limiter) as g:
                    await g.write(data)
            # Closing flushed Python's buffer; the fsync and the rename share one trip to a
            # worker thread (fsync syncs the file whichever descriptor asks).
            await anyio.to_thread.run_sync(_fsync_and_replace, tmp, target, sync_directory, limiter=limiter)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


async def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace the content of ``path`` with ``text`` (UTF-8); see :func:`write_bytes_atomic`.

    Raises:
        OSError: the directory is missing or not writable, or the disk is full.
    """
    await write_bytes_atomic(path, text.encode("utf-8"))


def _fsync_and_replace(tmp: Path, target: Path, sync_directory: bool) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    if sync_directory:
        fsync_directory(target.parent)


class _Hashing:
    """A binary file wrapper that hashes (SHA-256) and counts what is written through it."""

    def __init__(self, file: Any) -> None:
        self.file, self.hash, self.size = file, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.size += view.nbytes
        return int(self.file.write(view))


def dump_atomic(directory: Path, stem: str, suffix: str, dump: Any, value: Any) -> tuple[str, str, int]:
    """Write ``value`` with ``dump(value, file)`` to ``<stem><digest16><suffix>`` atomically; blocking.

    The bytes go to a temporary file as ``dump`` produces them (never all in memory),
    hashed on the way; the file is fsynced, then renamed to the name its digest gives.
    Returns ``(file name, hex SHA-256, size in bytes)``. Runs in a worker thread.

    Raises:
        OSError: the folder is not writable or the disk is full (nothing is left behind).
        Exception: whatever ``dump`` raises for a value it cannot write.
    """
    tmp = directory / f".{stem}{secrets.token_hex(4)}{_TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            out = _Hashing(f)
            dump(value, out)
            f.flush()
            os.fsync(f.fileno())
        digest = out.hash.hexdigest()
        name = f"{stem}{digest[:16]}{suffix}"
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return name, digest, out.size


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the entries of ``directory`` (new names, renames) durable; blocking.

    A no-op where directories cannot be opened (Windows).

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):  # Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def append_durably(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    truncate_to: int | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> int:
    """Append ``data`` to ``path`` (created if missing) and fsync it; returns the new size.

    With ``truncate_to``, the file is first cut to that many bytes (a torn last line left
    by a crash must not swallow the start of the next one). When the file is new, its
    directory is fsynced too, so that its name survives a power cut. The fsync runs in a
    worker thread under ``limiter`` (an ``anyio.CapacityLimiter``; ``None`` for anyio's
    default), shielded from cancellation like the write.

    Raises:
        OSError: the file cannot be opened or written, or the disk is full.
    """
    target = Path(path)
    with anyio.CancelScope(shield=True):
        new = not await anyio.to_thread.run_sync(target.exists, limiter=limiter)
        if on_asyncio():
            async with aiofiles.open(target, "ab") as f:
                if truncate_to is not None:
                    await f.truncate(truncate_to)
                await f.write(data)
                await f.flush()
                fd = f.fileno()
                await anyio.to_thread.run_sync(os.fsync, fd, limiter=limiter)
                size = await f.tell()
        else:
            async with await anyio.open_file(target, "ab", limiter=limiter) as g:
                if truncate_to is not None:
                    await g.truncate(truncate_to)
                await g.write(data)
                await g.flush()
                fd = g.wrapped.fileno()
                await anyio.to_thread.run_sync(os.fsync, fd, limiter=limiter)
                size = await g.tell()
        if new:
            await anyio.to_thread.run_sync(fsync_directory, target.parent, limiter=limiter)
    return size


def temporary_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The temporary files in ``directory`` left by writes that never finished (a crash).

    They are the ``.<name>.<8 hex digits>.tmp`` files of :func:`write_bytes_atomic`; none
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
        ValueError: ``value`` holds NaN or an infinity (the message says so), a circular
            reference, or is nested too deeply to encode (``RecursionError`` is turned
            into this, so that one task's result cannot abort a run).
    """
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise ValueError("it is nested too deeply to encode as JSON") from None
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
        ValueError: the file is not valid JSON (``json.JSONDecodeError``), or is nested too
            deeply to decode.
    """
    text = await read_text(path)
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to decode") from None


async def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as strict JSON to ``path`` atomically (see :func:`write_bytes_atomic`).

    Raises:
        TypeError, ValueError: as :func:`dumps_json`; nothing is written then.
        OSError: as :func:`write_bytes_atomic`.
    """
    await write_text_atomic(path, dumps_json(value) + "\n")

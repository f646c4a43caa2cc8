"""The working directory's lock: one run at a time per working directory.

A run holds ``<workdir>/.lock`` (an OS file lock taken with the ``filelock`` library:
``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) from before its first task starts
until after its last checkpoint is written, so two runs never interleave writes to the same
checkpoints, logs or outputs. The OS drops the lock when the holding process dies, even
with ``kill -9``, so a crashed run never leaves a stale lock behind.

Next to it, ``<workdir>/.lock.info`` (JSON) names the holder: ``run_id``, ``pid``,
``pipeline``, ``started_at`` (ISO 8601, UTC) and ``host``. A run that finds the lock taken
either fails at once with a :class:`~asyncflow.WorkdirLockedError` naming the holder
(``mode="fail"``) or waits for it (``mode="wait"``), polling every
:data:`POLL_INTERVAL` seconds so that cancelling the wait takes effect within that time.

Every blocking call (opening and locking the file, writing the info file, removing
leftovers) runs in a worker thread (``anyio.to_thread``), so the event loop never blocks.
Once the lock is held, the temporary files that a crashed run left in the checkpoint
directory (see :func:`asyncflow._files.temporary_files`) are removed: under the lock no
live run can be writing them.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Literal

import anyio
import filelock
from loguru import logger

from ._context import log_safely
from ._errors import WorkdirLockedError
from ._files import temporary_files

__all__ = ["INFO_NAME", "LOCK_MODES", "LOCK_NAME", "POLL_INTERVAL", "LockMode", "WorkdirLock"]

LockMode = Literal["fail", "wait"]
LOCK_MODES: tuple[LockMode, ...] = ("fail", "wait")
LOCK_NAME = ".lock"
INFO_NAME = ".lock.info"
POLL_INTERVAL = 0.1
"""Seconds between two tries to take a lock held by another run (``mode="wait"``)."""


class WorkdirLock:
    """The lock of one working directory, held by one run (an async context manager).

    Args:
        workdir: the working directory; it must exist.
        mode: ``"fail"`` to raise at once when another run holds the lock, ``"wait"`` to
            wait until it is released (cancellable).
        run_id, pipeline: written to ``.lock.info`` for whoever finds the lock taken.
        cleanup: directories whose leftover temporary files are removed once the lock is
            held (the run's own checkpoint directory).

    Raises (from ``async with`` / :meth:`acquire`):
        WorkdirLockedError: ``mode="fail"`` and another run holds the lock.
        ValueError: ``mode`` is neither ``"fail"`` nor ``"wait"``.
        OSError: the lock file cannot be created (an unwritable directory).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        mode: LockMode,
        run_id: str,
        pipeline: str,
        cleanup: tuple[Path, ...] = (),
    ) -> None:
        if mode not in LOCK_MODES:
            raise ValueError(f"lock must be 'fail', 'wait' or None, not {mode!r}")
        self.workdir = workdir
        self.mode = mode
        self.info = {
            "run_id": run_id,
            "pid": os.getpid(),
            "pipeline": pipeline,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname(),
        }
        self.cleanup = cleanup
        self._lock = filelock.FileLock(workdir / LOCK_NAME, thread_local=False)
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._held

    async def __aenter__(self) -> WorkdirLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    async def acquire(self) -> None:
        """Take the lock (see the class docstring), write ``.lock.info``, remove leftovers."""
        waiting_logged = False
        while True:
            timeout = 0.0 if self.mode == "fail" else POLL_INTERVAL
            try:
                removed = await anyio.to_thread.run_sync(self._acquire_blocking, timeout)
            except filelock.Timeout:
                holder = await anyio.to_thread.run_sync(self.read_holder)
                if self.mode == "fail":
                    raise WorkdirLockedError(str(self.workdir), holder) from None
                if not waiting_logged:
                    waiting_logged = True
                    log_safely(
                        logger.bind(run_id=self.info["run_id"], task="-"),
                        "WARNING",
                        "working directory {!r} is in use by {}; waiting for it to finish",
                        str(self.workdir),
                        WorkdirLockedError(str(self.workdir), holder).who,
                    )
                continue
            break
        # The thread finished: the lock is ours even if this task was cancelled meanwhile
        # (the cancellation arrives at the caller's next await, inside ``async with``).
        self._held = True
        if removed:
            log_safely(
                logger.bind(run_id=self.info["run_id"], task="-"),
                "WARNING",
                "removed {} temporary file{} left by an interrupted run: {}",
                len(removed),
                "" if len(removed) == 1 else "s",
                ", ".join(p.name for p in removed),
            )

    def _acquire_blocking(self, timeout: float) -> list[Path]:
        """In a worker thread: lock, record who holds it, remove leftovers; all or nothing."""
        self._lock.acquire(timeout=timeout, poll_interval=0.02)
        try:
            self._write_info()
            removed = []
            for directory in self.cleanup:
                for path in temporary_files(directory):
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    removed.append(path)
            return removed
        except BaseException:
            self._lock.release()
            raise

    def _write_info(self) -> None:
        info = self.workdir / INFO_NAME
        tmp = info.with_name(f"{INFO_NAME}.{os.getpid()}.part")
        try:
            tmp.write_text(json.dumps(self.info) + "\n", encoding="utf-8")
            os.replace(tmp, info)
        except BaseException:  # a full disk, say: leave no half-written .part behind
            tmp.unlink(missing_ok=True)
            raise

    def read_holder(self) -> dict[str, Any] | None:
        """What the holding run wrote to ``.lock.info``, or ``None`` (missing or unreadable)."""
        try:
            value = json.loads((self.workdir / INFO_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def release(self) -> None:
        """Remove ``.lock.info`` and release the lock; does nothing when it is not held.

        Quick, non-blocking system calls, safe to make on the event loop and from
        ``finally`` blocks (no ``await``, so cancellation cannot interrupt it).
        """
        if not self._held:
            return
        self._held = False
        try:
            (self.workdir / INFO_NAME).unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            self._lock.release()

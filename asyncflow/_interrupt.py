"""Interrupting a command-line run: SIGINT (Ctrl-C) and SIGTERM, with a grace period.

:class:`SignalGuard` runs the pipeline next to a watcher task. The watcher listens with
``anyio.open_signal_receiver``; on the first SIGINT or SIGTERM it cancels the run's cancel
scope, so every running task is cancelled through anyio: its ``finally`` blocks run, and
cleanup it awaits under ``CancelScope(shield=True)`` (a checkpoint being written, say)
completes. The watcher then waits ``grace`` seconds. If the run has not wound down by
then, the shielded cleanup is abandoned: the process prints the summary and exits at once
(``os._exit``). A second signal during the grace period does the same immediately; it is
caught by a plain ``signal.signal`` handler, so it works even when a task blocks the
event loop. Exit codes are ``128 + signal number``: 130 for SIGINT, 143 for SIGTERM.

Nothing written before the signal is lost: a checkpoint is complete once its file has its
final name (``os.replace`` is atomic), and a write cut short leaves only a temporary
``.<task>.json.<hex>.tmp`` file, which no run loads as a checkpoint and the next run
removes (see :mod:`asyncflow._lock`).

An interrupted run never returns a :class:`~asyncflow.RunResult`, so
:class:`~asyncflow._tracker.TaskTracker` builds the summary from the run's record.

The command line's other ways out live here too, so that none of them prints a raw
traceback or hangs: :func:`describe_error` (an exception group as one line),
:func:`route_asyncio_logging` (asyncio's own error reports to the log file) and
:func:`exit_without_abandoned_threads` (no waiting at exit for a timed-out thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, NoReturn, TypeVar

import anyio
from anyio.abc import TaskStatus
from loguru import logger

from ._errors import TaskTimeoutError
from ._events import TaskState
from ._result import RunResult
from ._tracker import TaskTracker

__all__ = [
    "DEFAULT_GRACE",
    "SignalGuard",
    "describe_error",
    "exit_code",
    "exit_without_abandoned_threads",
    "route_asyncio_logging",
]

T = TypeVar("T")

DEFAULT_GRACE = 5.0
"""Seconds a cancelled run may spend on cleanup before it is abandoned (the CLI's ``--grace``).

Below the 10 s that ``docker stop`` and Kubernetes leave between SIGTERM and SIGKILL, so
the summary gets printed before a container runtime kills the process."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: signal.Signals) -> int:
    """The shell's exit code for a process ended by ``signum``: ``128 + signum``."""
    return 128 + int(signum)


class _ToLoguru(logging.Handler):
    """Forwards stdlib log records to loguru: the first line to the console, the traceback
    (``exc_info``) to the run's log file only."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().splitlines()[0] if record.getMessage() else record.name
        level = record.levelname if record.levelname in ("DEBUG", "INFO", "WARNING", "ERROR") else "ERROR"
        logger.opt(exception=record.exc_info).bind(task="-").log(level, "{}: {}", record.name, message)


def route_asyncio_logging() -> None:
    """Send the ``asyncio`` stdlib logger to loguru instead of raw stderr.

    When a task raises ``SystemExit`` or ``KeyboardInterrupt``, asyncio lets it escape the
    event loop and then reports the task groups it unwinds ("unhandled exception during
    asyncio.run() shutdown") with a raw exception-group traceback on stderr. Routed here,
    the console shows one line and the traceback goes to the run's log file.
    """
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.handlers[:] = [_ToLoguru()]
    asyncio_logger.propagate = False


def exit_without_abandoned_threads(result: RunResult, code: int) -> int:
    """Return ``code``, or end the process with it now if a thread would keep it alive.

    A plain ``def`` task that timed out keeps running in its worker thread (a thread cannot
    be killed); on asyncio those threads are not daemons, and neither is a thread that the
    pipeline's module started itself (at import, say), so the interpreter would wait for
    them at exit and the command line would hang after its summary. Instead this says
    which threads are left behind (the timed-out tasks, and the other threads by name),
    flushes the output and the log file, and exits with ``os._exit(code)``, which does not
    wait for them. Threads that are ending anyway get up to 0.2 s to do so.
    """
    left = [
        name
        for name, error in result.errors.items()
        if isinstance(error, TaskTimeoutError) and error.thread_abandoned
    ]
    others = _foreign_threads()
    if not left and not others:
        return code
    if left:
        print(
            f"asyncflow: exiting without waiting for the worker thread{'s' if len(left) > 1 else ''} "
            f"that {', '.join(left)} left behind when {'they' if len(left) > 1 else 'it'} timed out",
            file=sys.stderr,
        )
    if others:
        names = ", ".join(repr(t.name) for t in others)
        print(
            f"asyncflow: exiting without waiting for {len(others)} non-daemon "
            f"thread{'s' if len(others) > 1 else ''} still running: {names} (started by the "
            "pipeline's code, not by asyncflow; make them daemon threads or join them)",
            file=sys.stderr,
        )
    logger.remove()  # closes the log file's sink
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _foreign_threads(wait: float = 0.2) -> list[threading.Thread]:
    """The live non-daemon threads other than the main thread, the event loops' worker
    threads (which abandoned tasks keep busy; named by the timed-out tasks instead) and
    Dask's (see :data:`_OURS`), after
    giving each up to ``wait`` seconds in all to end."""
    deadline = time.monotonic() + wait
    found = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive() and not thread.name.startswith(_OURS):
            found.append(thread)
    return found


_OURS = ("AnyIO worker thread", "Dask-")
"""Name prefixes of threads asyncflow's own dependencies start: the event loops' workers
and Dask's (``Dask-Offload``, an idle pool ``distributed`` keeps for ``--executor dask``)."""


def describe_error(exc: BaseException) -> str:
    """``exc`` in one line: ``Type: message``; an exception group becomes the list of its
    leaf exceptions (``2 errors: ValueError: a; KeyError: 'b'``), never the raw group."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)
    parts = [f"{type(e).__name__}: {e}".rstrip(": ") for e in leaves]
    if len(parts) == 1:
        return parts[0]
    return f"{len(parts)} errors: " + "; ".join(parts)


class SignalGuard:
    """Runs one pipeline run so that SIGINT and SIGTERM interrupt it cleanly.

    Use one guard per run, from the main thread (only it receives signals).

    Args:
        tracker: the run's :class:`TaskTracker` (also passed to the run as a listener).
        grace: seconds the cancelled tasks get for their cleanup (>= 0).
        render: turns a :class:`~asyncflow.RunResult` into the summary text printed when
            the process has to exit without returning.
        log_file: the run's log file, named in the last line printed.
        on_abandon: called (synchronously, exceptions ignored) just before the process
            exits without waiting for the run, e.g. to write the run record.
    """

    def __init__(
        self,
        tracker: TaskTracker,
        *,
        grace: float = DEFAULT_GRACE,
        render: Callable[[RunResult], str],
        log_file: os.PathLike[str] | str,
        on_abandon: Callable[[], object] = lambda: None,
    ) -> None:
        self.tracker = tracker
        self.on_abandon = on_abandon
        self.grace = grace
        self.render = render
        self.log_file = log_file
        self.received: signal.Signals | None = None
        """The first signal received, or ``None``."""
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def exit_code(self) -> int:
        """130 after SIGINT, 143 after SIGTERM, 0 when no signal arrived."""
        return exit_code(self.received) if self.received is not None else 0

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T | None:
        """Await ``fn()``; return its value, or ``None`` when a signal cancelled it.

        Raises:
            Exception: whatever ``fn()`` raised, unwrapped.
            KeyboardInterrupt: a task raised it (the run re-raises it), unwrapped.
        """
        value: T | None = None
        error: Exception | KeyboardInterrupt | None = None
        try:
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as run_scope:
                    await tg.start(self._watch, run_scope)
                    try:
                        value = await fn()
                    except (Exception, KeyboardInterrupt) as exc:  # a task's KeyboardInterrupt too
                        error = exc
                tg.cancel_scope.cancel()
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous.clear()
        if error is not None:
            raise error
        return None if run_scope.cancelled_caught else value

    async def _watch(self, run_scope: anyio.CancelScope, *, task_status: TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(*_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                self.received = signum
                break
        # From here on a second signal ends the process at once, even if the loop is stuck.
        for each in _SIGNALS:
            self._previous[each] = signal.signal(each, self._on_second_signal)
        name = self.received.name if self.received is not None else "a signal"
        self.tracker.interrupted_by = name
        logger.bind(run_id=self.tracker.run_id, task="-").warning(
            "received {}: cancelling the running tasks; they have {:g} s to clean up "
            "(send it again to stop at once)",
            name,
            self.grace,
        )
        run_scope.cancel()
        await anyio.sleep(self.grace)
        running = [n for n, s in self.tracker.states.items() if s is TaskState.RUNNING]
        logger.bind(run_id=self.tracker.run_id, task="-").error(
            "the cleanup of {} did not finish within the {:g} s grace period; abandoning it",
            ", ".join(running) or "the run",
            self.grace,
        )
        self._exit_now(f"its cleanup did not finish within the {self.grace:g} s grace period")

    def _on_second_signal(self, signum: int, frame: FrameType | None) -> None:
        self._exit_now(f"stopped at once by a second {signal.Signals(signum).name}")

    def _exit_now(self, why: str) -> NoReturn:
        """Print the summary and the reason, then end the process without further cleanup.

        Writes with ``os.write``: this may run inside a signal handler, where buffered
        ``print`` could be re-entered. Log lines already written are on disk (loguru's
        file sink is line-buffered).
        """
        code = self.exit_code or 1
        with contextlib.suppress(Exception):
            self.on_abandon()
        try:
            summary = self.render(self.tracker.result(abandoned=why))
        except Exception as exc:  # never let a rendering bug keep the process alive
            summary = f"(no summary: {type(exc).__name__}: {exc})"
        line = (
            f"asyncflow: interrupted by {self.tracker.interrupted_by}; {why}; exiting without "
            f"waiting further (checkpoints written so far are kept; log: {self.log_file})"
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                stream.flush()  # what was printed before; RuntimeError: a re-entered buffer
        for fd, text in ((1, summary), (2, line)):  # the real stdout, even under redirect_stdout
            with contextlib.suppress(OSError):
                os.write(fd, (text + "\n").encode("utf-8", "replace"))
        os._exit(code)

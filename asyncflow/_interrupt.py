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

An interrupted run never returns a :class:`~asyncflow.RunResult`, so the summary is built
by :class:`TaskTracker`, an event listener that keeps the last known state of every task.

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
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import FrameType
from typing import Any, NoReturn, TypeVar

import anyio
from anyio.abc import TaskStatus
from loguru import logger

from ._errors import TaskTimeoutError
from ._events import (
    Event,
    RunStarted,
    TaskCached,
    TaskCancelled,
    TaskFailed,
    TaskSkipped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
)
from ._result import RunResult, TaskRun

__all__ = [
    "DEFAULT_GRACE",
    "SignalGuard",
    "TaskTracker",
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
    """Return ``code``, or end the process with it now if a timed-out thread still runs.

    A plain ``def`` task that timed out keeps running in its worker thread (a thread cannot
    be killed); on asyncio those threads are not daemons, so the interpreter would wait for
    them at exit and the command line would hang after its summary. Instead this says
    which tasks' threads are left behind, flushes the output and the log file, and exits
    with ``os._exit(code)``, which does not wait for them.
    """
    left = [
        name
        for name, error in result.errors.items()
        if isinstance(error, TaskTimeoutError) and error.thread_abandoned
    ]
    if not left:
        return code
    print(
        f"asyncflow: exiting without waiting for the worker thread{'s' if len(left) > 1 else ''} "
        f"that {', '.join(left)} left behind when {'they' if len(left) > 1 else 'it'} timed out",
        file=sys.stderr,
    )
    logger.remove()  # closes the log file's sink
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


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


class TaskTracker:
    """An event listener that keeps every task's last known state, in definition order.

    It builds the summary of a run that ends without a :class:`~asyncflow.RunResult`
    (interrupted, or stopped by an exception that is not a task failure).

    Args:
        pipeline: the pipeline's name.
        tasks: every task name, in definition order.
        params: the run's parameters.
    """

    def __init__(self, pipeline: str, tasks: Sequence[str], params: Mapping[str, Any]) -> None:
        self.pipeline = pipeline
        self.params = dict(params)
        self.run_id = "-"
        self.states = dict.fromkeys(tasks, TaskState.PENDING)
        self.attempts = dict.fromkeys(tasks, 0)
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.errors: dict[str, BaseException] = {}
        self.reasons: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.interrupted_by: str | None = None
        """Set by :class:`SignalGuard` to the signal's name when it cancels the run."""
        self._mono0 = 0.0
        self._wall0 = time.time()

    def __call__(self, event: Event) -> None:
        """Record ``event``."""
        if isinstance(event, RunStarted):
            self.run_id, self._mono0, self._wall0 = event.run_id, event.time, time.time()
            if event.upstream:  # a partial run (--only ...): just its tasks
                in_run = set(event.upstream)
                self.states = {name: s for name, s in self.states.items() if name in in_run}
            return
        task: str | None = getattr(event, "task", None)
        if task is None or task not in self.states:
            return
        if isinstance(event, TaskStarted):
            self.states[task] = TaskState.RUNNING
            self.attempts[task] = event.attempt
            self.started.setdefault(task, event.time)
            if event.cache_key is not None:
                self.keys[task] = event.cache_key
            return
        if isinstance(event, TaskSucceeded):
            self.states[task] = TaskState.SUCCEEDED
        elif isinstance(event, TaskCached):
            self.states[task] = TaskState.CACHED
            self.started.setdefault(task, event.time)
            self.keys[task] = event.cache_key
        elif isinstance(event, TaskFailed):
            self.states[task] = TaskState.FAILED
            self.errors[task] = event.error
        elif isinstance(event, TaskSkipped):
            self.states[task] = TaskState.SKIPPED
            self.reasons[task] = event.reason
        elif isinstance(event, TaskCancelled):
            self.states[task] = TaskState.CANCELLED
            self.reasons[task] = self._interrupted_reason(task) or event.reason
        else:
            return
        self.finished[task] = event.time

    def _interrupted_reason(self, task: str, abandoned: str | None = None) -> str | None:
        if self.interrupted_by is None:
            return None
        if task not in self.started:
            return f"interrupted by {self.interrupted_by} before it started"
        if abandoned is not None:
            return f"interrupted by {self.interrupted_by} while running; {abandoned}"
        return f"interrupted by {self.interrupted_by} while running"

    @property
    def cancelled(self) -> list[str]:
        """The tasks that did not finish: cancelled, still running or never started."""
        unfinished = (TaskState.PENDING, TaskState.RUNNING, TaskState.CANCELLED)
        return [name for name, state in self.states.items() if state in unfinished]

    def result(self, *, abandoned: str | None = None, stopped_by: str | None = None) -> RunResult:
        """The run as far as the events tell; unfinished tasks count as CANCELLED.

        Args:
            abandoned: why the cleanup of tasks still running was given up, if it was.
            stopped_by: the error that stopped the run, if one did (it becomes the reason of
                every task it cancelled).
        """
        wall0, mono0 = self._wall0, self._mono0

        def wall(t: float | None) -> float | None:
            return None if t is None else wall0 + (t - mono0)

        tasks = {}
        for name, state in list(self.states.items()):
            reason = self.reasons.get(name)
            if state is TaskState.PENDING or state is TaskState.RUNNING:
                reason = self._interrupted_reason(name, abandoned if state is TaskState.RUNNING else None)
                reason = reason or "the run stopped before it finished"
                state = TaskState.CANCELLED
            if stopped_by is not None and state is TaskState.CANCELLED:
                when = "while it was running" if name in self.started else "before it started"
                reason = f"the run was stopped by {stopped_by} {when}"
            start, end = self.started.get(name), self.finished.get(name)
            tasks[name] = TaskRun(
                name=name,
                state=state,
                attempts=self.attempts[name],
                started_at=wall(start),
                finished_at=wall(end),
                duration=None if start is None or end is None else end - start,
                error=self.errors.get(name),
                cache_key=self.keys.get(name),
                reason=reason,
            )
        now = time.time()
        return RunResult(
            run_id=self.run_id,
            pipeline=self.pipeline,
            params=self.params,
            started_at=wall0,
            finished_at=now,
            duration=now - wall0,
            tasks=tasks,
        )


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
        """
        value: T | None = None
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as run_scope:
                    await tg.start(self._watch, run_scope)
                    try:
                        value = await fn()
                    except Exception as exc:
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

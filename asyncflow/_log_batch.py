"""The command line's routine log lines, handed to loguru in batches.

A loguru record costs about 20 µs (finding the caller's frame, building the record,
formatting it for each sink), which made the CLI's two lines per task (``attempt 1
started`` in ``run.log``, ``succeeded ...`` on both sinks) cost ten times the run itself.
When every loguru sink is one the command line added (:func:`register_sinks`), the
:class:`~asyncflow._logging.LogListener` queues those routine lines (an attempt started,
a task succeeded or was cached) in a :class:`LineBatch` instead, and hands them to loguru
as one record per batch, which the CLI's sink formats render line by line, each with its
own time, level and task, in the same text a record of its own would have. Every other
line (retries, failures, skips, a mapped task's summary, the run's start and end) first
flushes the batch, then is logged as a record of its own, so the order is kept.

A batch is flushed when a line that is not routine comes (also a task's own
``context.logger`` line: :func:`flush_queued` is the CLI's loguru patcher), when it holds
:data:`MAX_LINES` lines, when its oldest line is :data:`MAX_AGE` seconds old (checked by
a daemon thread, so a line is never held back while a long task runs), and when the run
ends.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from loguru import logger

from ._events import Event, TaskCached, TaskStarted, TaskSucceeded

__all__ = [
    "LEVELS",
    "MAX_AGE",
    "MAX_LINES",
    "Line",
    "LineBatch",
    "batching_sinks_only",
    "flush_queued",
    "register_sinks",
    "routine_message",
]

MAX_LINES = 512
"""Lines a batch holds before it is flushed."""
MAX_AGE = 0.1
"""Seconds a queued line may wait before its batch is flushed (a tenth of a second: the
console still reads as live)."""

ROUTINE = (TaskStarted, TaskSucceeded, TaskCached)
"""The events whose lines are queued: two or three per task."""

Line = tuple[str, str, int, str, str, str]
"""A batched line: ``(ISO 8601 local time to the millisecond with its UTC offset,
HH:MM:SS.mmm, level number, level name padded to 7 characters, task, message)``."""
_sinks: set[int] = set()
_live: weakref.WeakSet[LineBatch] = weakref.WeakSet()


def register_sinks(ids: Iterable[int]) -> None:
    """Record the loguru sinks (by id) whose formats render batches (the CLI's own)."""
    _sinks.clear()
    _sinks.update(ids)


def batching_sinks_only() -> int | None:
    """The lowest level of loguru's sinks when every one renders batches (then a run's
    routine lines are queued), else ``None``."""
    try:
        core = logger._core  # type: ignore[attr-defined]
        handlers = set(core.handlers)
        lowest = int(core.min_level)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - another loguru
        return None
    return lowest if handlers and handlers <= _sinks else None


def flush_queued(record: Any) -> None:
    """A loguru patcher: before any record that is not a batch (a task's own
    ``context.logger`` line, a warning), flush the queued lines, so the log keeps its order."""
    if "batch" not in record["extra"]:
        for batch in list(_live):
            batch.flush()


def _started(event: TaskStarted) -> str:
    return f"attempt {event.attempt} started"


def _succeeded(event: TaskSucceeded) -> str:
    return f"succeeded on attempt {event.attempt} in {event.duration:.3f} s"


def _cached(event: TaskCached) -> str:
    return f"cached (checkpoint matches cache key {event.cache_key[:12]}…)"


_KINDS: dict[type[Event], tuple[int, str, Callable[[Any], str]]] = {
    TaskStarted: (10, "DEBUG  ", _started),
    TaskSucceeded: (20, "INFO   ", _succeeded),
    TaskCached: (20, "INFO   ", _cached),
}
"""``{routine event type: (loguru level number, its name padded to 7 as loguru's
``{level: <7}``, the line's message)}``."""
LEVELS = {kind: level for kind, (level, _, _) in _KINDS.items()}
"""The loguru level number of each routine event's line (DEBUG 10, INFO 20)."""


def routine_message(event: Event) -> str:
    """The message of a routine event's line (the same whether batched or not).

    Raises:
        TypeError: ``event`` is not one of :data:`ROUTINE`.
    """
    kind = _KINDS.get(type(event))
    if kind is None:
        raise TypeError(f"not a routine event: {type(event).__name__}")
    return kind[2](event)


class LineBatch:
    """Routine log lines of one run, waiting to be handed to loguru as one record.

    A line is its event: its level is the event's (:data:`LEVELS`), its message is
    rendered only when the batch is flushed, and its time is the event's ``time`` (the
    run's clock) plus the wall clock's offset from that clock, taken at the first line
    and again at each flush from the event loop and at each event that is not routine
    (:meth:`sync`), so that it stays within a few microseconds of the wall time the
    line would have had as a record of its own. (Under a virtual clock, see
    :mod:`asyncflow.testing`, line times follow virtual time between syncs.)
    :meth:`add` runs on the event loop; :meth:`flush` on the event loop or the flusher
    thread, under a lock.

    Args:
        run_id: the run's id (bound to the batch's records).
        min_level: the lowest level a sink takes (loguru's, when the run starts); lines
            below it are not queued.

    Attributes:
        queued: the routine event types whose lines are at or above ``min_level`` (the
            only ones :meth:`add` is given).
    """

    def __init__(self, run_id: str, min_level: int = 0) -> None:
        self.run_id = run_id
        self.min_level = min_level
        self.queued = frozenset(kind for kind, level in LEVELS.items() if level >= min_level)
        self._lines: deque[Event] = deque()
        self._offset = 0.0  # the wall clock (time.time()) minus the run's clock, in seconds
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        _live.add(self)

    def add(self, event: Event) -> None:
        """Queue ``event``'s line (``event`` is one of :attr:`queued`)."""
        lines = self._lines
        lines.append(event)
        if len(lines) >= MAX_LINES:
            self.sync(event.time)
            self.flush()
        elif self._thread is None:  # the first line: start the thread that flushes old ones
            self.sync(event.time)
            self._thread = threading.Thread(target=self._flush_old, name="asyncflow-log", daemon=True)
            self._thread.start()

    def sync(self, now: float) -> None:
        """Take the wall clock's offset from the run's clock, which reads ``now`` (seconds)."""
        self._offset = time.time() - now

    def flush(self) -> None:
        """Hand every queued line to loguru, as one record at the highest level among them.

        The record's ``extra["batch"]`` holds the lines (see :data:`Line`), for the CLI's
        sink formats (see :mod:`asyncflow._log_sinks`). Lines of the same millisecond share their time's
        text (made once: ``datetime.isoformat`` was a third of the cost of a line).
        """
        with self._lock:
            lines = self._lines
            if not lines:
                return
            queued = [lines.popleft() for _ in range(len(lines))]
            zone = datetime.now().astimezone().tzinfo  # as loguru's own record times
            batch: list[Line] = []
            append, kinds = batch.append, _KINDS
            last, stamp, clock, top, top_name = -1, "", "", 0, ""
            offset = self._offset
            for event in queued:
                wall = event.time + offset
                ms = round(wall * 1e6) // 1000  # as datetime rounds to the microsecond
                if ms != last:
                    when = datetime.fromtimestamp(wall, zone)
                    last, stamp = ms, when.isoformat(timespec="milliseconds")
                    clock = stamp[11:23]  # HH:MM:SS.mmm
                level, name, message = kinds[type(event)]
                if level > top:
                    top, top_name = level, name
                append((stamp, clock, level, name, event.task, message(event)))  # type: ignore[attr-defined]
            logger.bind(run_id=self.run_id, task="-", batch=batch).log(
                top_name.rstrip(), "{} log lines", len(batch)
            )

    def close(self) -> None:
        """Flush what is queued and stop the flusher thread."""
        self._stopped = True
        self._wake.set()
        self.flush()
        _live.discard(self)

    def _flush_old(self) -> None:
        while not self._stopped:
            try:
                age = time.time() - self._lines[0].time - self._offset
            except IndexError:  # none queued (or the event loop flushed them just now)
                age = None
            if age is None:
                self._wake.wait(MAX_AGE)
            elif age < 0:  # the run's clock ran ahead of the wall's (a virtual clock): go by waits
                self._wake.wait(MAX_AGE)
                self.flush()
            elif age >= MAX_AGE:
                self.flush()
            else:
                self._wake.wait(MAX_AGE - age)

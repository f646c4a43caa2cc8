"""The command line's routine log lines, handed to loguru in batches.

A loguru record costs about 20 µs (finding the caller's frame, building the record,
formatting it for each sink), which made the CLI's two lines per task (``attempt 1
started`` in ``run.log``, ``succeeded ...`` on both sinks) cost ten times the run itself.
When every loguru sink is one the command line added (:func:`register_sinks`), the
:class:`~asyncflow._logging.LogListener` queues those routine lines (an attempt started,
a task succeeded or was cached) in a :class:`LineBatch` instead, as their events, and
hands them to loguru as one record per batch: the sinks' :data:`Render` function (see
:func:`asyncflow._log_sinks.batch_renderer`) writes every line of the batch, each with its
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
from typing import Any

from loguru import logger

from ._context import sink_failed
from ._events import Event, TaskCached, TaskStarted, TaskSucceeded

__all__ = [
    "CACHED",
    "LEVELS",
    "MAX_AGE",
    "MAX_LINES",
    "STARTED",
    "SUCCEEDED",
    "LineBatch",
    "Render",
    "batching_sinks_only",
    "flush_queued",
    "register_sinks",
    "routine_message",
]

MAX_LINES = 1024
"""Lines a batch holds before it is flushed."""
MAX_AGE = 0.1
"""Seconds a queued line may wait before its batch is flushed (a tenth of a second: the
console still reads as live)."""

ROUTINE = (TaskStarted, TaskSucceeded, TaskCached)
"""The events whose lines are queued: two or three per task."""

Render = Callable[[list[Event], float, str], tuple[str, Any]]
"""How the sinks want a batch: ``render(events, offset, run_id) -> (level, payload)``, given
the batch's routine events in order, the seconds to add to an event's ``time`` (the run's
clock) for the wall clock's (``time.time()``), and the run's id; it returns the loguru
level name of the batch's record (the highest among its lines) and what the record
carries in ``extra["batch"]`` for the sinks' formats to write."""
_sinks: set[int] = set()
_render: Render | None = None
_live: weakref.WeakSet[LineBatch] = weakref.WeakSet()


def register_sinks(ids: Iterable[int], render: Render | None = None) -> None:
    """Record the loguru sinks (by id) whose formats write batches (the CLI's own), and the
    function that makes a batch's record for them (required when ``ids`` is not empty).

    Raises:
        ValueError: sinks without a ``render``.
    """
    ids = set(ids)
    if ids and render is None:
        raise ValueError("sinks that write batches need the function that renders them")
    global _render
    _sinks.clear()
    _sinks.update(ids)
    _render = render if ids else None


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


STARTED = "attempt %d started"
"""The message of an attempt's start (``%`` its number, from 1)."""
SUCCEEDED = "succeeded on attempt %d in %.3f s"
"""The message of a success (``%`` (the attempt's number, its duration in seconds))."""
CACHED = "cached (checkpoint matches cache key %s…)"
"""The message of a cache hit (``%`` the cache key's first 12 hex digits)."""


def _started(event: TaskStarted) -> str:
    """``attempt 2 started``."""
    return STARTED % event.attempt


def _succeeded(event: TaskSucceeded) -> str:
    """``succeeded on attempt 1 in 0.012 s`` (the attempt's duration, in seconds)."""
    return SUCCEEDED % (event.attempt, event.duration)


def _cached(event: TaskCached) -> str:
    """``cached (checkpoint matches cache key 3f2a9c41d0e8…)`` (its first 12 hex digits)."""
    return CACHED % event.cache_key[:12]


_KINDS: dict[type[Event], tuple[int, Callable[[Any], str]]] = {
    TaskStarted: (10, _started),
    TaskSucceeded: (20, _succeeded),
    TaskCached: (20, _cached),
}
"""``{routine event type: (loguru level number, the line's message)}``."""
LEVELS = {kind: level for kind, (level, _) in _KINDS.items()}
"""The loguru level number of each routine event's line (DEBUG 10, INFO 20)."""


def routine_message(event: Event) -> str:
    """The message of a routine event's line (the same whether batched or not).

    Raises:
        TypeError: ``event`` is not one of :data:`ROUTINE`.
    """
    kind = _KINDS.get(type(event))
    if kind is None:
        raise TypeError(f"not a routine event: {type(event).__name__}")
    return kind[1](event)


class LineBatch:
    """Routine log lines of one run, waiting to be handed to loguru as one record.

    A line is its event: its level is the event's (:data:`LEVELS`), its text is written
    only when the batch is flushed (by ``render``), and its time is the event's ``time``
    (the run's clock) plus the wall clock's offset from that clock, taken at the first line
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
        render: makes the batch's record (see :data:`Render`); by default the one
            registered with the sinks (:func:`register_sinks`).

    Raises:
        ValueError: no ``render``, and none registered.

    Attributes:
        queued: the routine event types whose lines are at or above ``min_level`` (the
            only ones :meth:`add` is given).
    """

    def __init__(self, run_id: str, min_level: int = 0, render: Render | None = None) -> None:
        render = render if render is not None else _render
        if render is None:
            raise ValueError("no function renders the batch: no sink that writes batches was registered")
        self.run_id = run_id
        self.min_level = min_level
        self.queued = frozenset(kind for kind, level in LEVELS.items() if level >= min_level)
        self._render = render
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
        if len(lines) >= MAX_LINES or self._thread is None:
            self._full(event.time)

    def listener(self, fast: set[type[Event]], slow: Callable[[Event], None]) -> Callable[[Event], None]:
        """A listener that queues the line of an event whose type is in ``fast`` (a set the
        caller may change at any time: put only :attr:`queued` types in it, once the batch
        has a line) and hands every other event to ``slow``: the hot path of a run's log,
        one call per event with no attribute lookups (0.12 µs per task where the two
        method calls it replaces took 0.21, fed 20,000 events).
        A failure to flush a full batch drops the lines, never the run (see
        :func:`asyncflow._context.sink_failed`)."""
        lines, append, full, limit = self._lines, self._lines.append, self._full, MAX_LINES

        def listen(event: Event) -> None:
            if type(event) in fast:
                append(event)
                if len(lines) >= limit:
                    try:
                        full(event.time)
                    except Exception as exc:
                        sink_failed(exc)
            else:
                slow(event)

        return listen

    def _full(self, now: float) -> None:
        """The batch is full, or got its first line: then start the thread that flushes old
        lines."""
        self.sync(now)
        if self._thread is None:
            self._thread = threading.Thread(target=self._flush_old, name="asyncflow-log", daemon=True)
            self._thread.start()
        else:
            self.flush()

    def sync(self, now: float) -> None:
        """Take the wall clock's offset from the run's clock, which reads ``now`` (seconds)."""
        self._offset = time.time() - now

    def flush(self) -> None:
        """Hand every queued line to loguru, as one record (see :data:`Render`)."""
        with self._lock:
            lines = self._lines
            if not lines:
                return
            pop = lines.popleft
            queued = [pop() for _ in range(len(lines))]
            level, payload = self._render(queued, self._offset, self.run_id)
            logger.bind(run_id=self.run_id, task="-", batch=payload).log(level, "{} log lines", len(queued))

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

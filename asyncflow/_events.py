"""Task states and the events a run emits.

The runner is the only producer of events; logging, progress displays and run records are
listeners that consume them. A listener is any callable taking one :class:`Event`; it is
called synchronously, in the order listeners were given, right where the event happens, so
it must be quick and must not block. A listener that raises is disabled for the rest of the
run and the error is logged: an observer can never break a run.

Every event is a frozen dataclass built with keywords only, so new fields can be added
without breaking a listener. ``time`` is the event loop's monotonic clock
(``anyio.current_time()``) in seconds; subtract two events' times for a duration.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._frozen import positional_builder

__all__ = [
    "AttemptFailed",
    "Event",
    "Listener",
    "RunFinished",
    "RunStarted",
    "TaskCached",
    "TaskCancelled",
    "TaskFailed",
    "TaskMapped",
    "TaskSkipped",
    "TaskStarted",
    "TaskState",
    "TaskSucceeded",
    "instance_of",
]


class TaskState(enum.Enum):
    """The state of one task in one run. Every task ends a run in exactly one final state."""

    PENDING = "pending"
    """Not started yet (waiting for upstream tasks or a concurrency slot)."""
    RUNNING = "running"
    """An attempt is running or waiting out a retry backoff."""
    SUCCEEDED = "succeeded"
    """Final: ran and returned a result."""
    FAILED = "failed"
    """Final: its last attempt raised."""
    SKIPPED = "skipped"
    """Final: never started because an upstream task failed or was skipped."""
    CACHED = "cached"
    """Final: not run; its result was loaded from a checkpoint with a matching cache key."""
    CANCELLED = "cancelled"
    """Final: cancelled by ``fail_fast`` or by the caller before it could finish."""

    @property
    def is_final(self) -> bool:
        """True for the states a task can end a run in."""
        return self not in (TaskState.PENDING, TaskState.RUNNING)

    @property
    def is_ok(self) -> bool:
        """True for SUCCEEDED and CACHED: the task has a result that downstream tasks can use."""
        return self in (TaskState.SUCCEEDED, TaskState.CACHED)


STATE_ORDER = (
    TaskState.SUCCEEDED,
    TaskState.CACHED,
    TaskState.FAILED,
    TaskState.SKIPPED,
    TaskState.CANCELLED,
    TaskState.RUNNING,
    TaskState.PENDING,
)
"""The order in which counts by state are told (the run summary, ``--show-run``, the timeline)."""


def describe_counts(counts: Mapping[TaskState, int]) -> str:
    """``"197 succeeded, 3 failed"``: the non-zero counts in :data:`STATE_ORDER`, or ``"none"``."""
    return ", ".join(f"{counts[s]} {s.value}" for s in STATE_ORDER if counts.get(s)) or "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events.

    Attributes:
        run_id: the id of the run that emitted the event.
        time: the event loop's monotonic clock when it happened, in seconds.
    """

    run_id: str
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    """A run began. ``tasks`` is the number of tasks in the run.

    ``params`` is the run's parameters (defaults applied); ``upstream`` maps every task of
    the run, in definition order, to the names of its upstream tasks. ``upstream`` is a
    read-only view computed on access, so a listener that ignores it costs nothing.
    """

    pipeline: str
    tasks: int
    params: Mapping[str, Any] = field(default_factory=dict)
    upstream: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    """A run ended. ``ok`` is True when no task failed or was cancelled;
    ``counts`` maps each final :class:`TaskState` to how many tasks ended in it.

    It is always the last event of a run that emitted :class:`RunStarted`, also when the
    caller cancels the run (then ``ok`` is False and the unfinished tasks count as
    cancelled; the cancellation propagates right after)."""

    pipeline: str
    ok: bool
    duration: float
    counts: dict[TaskState, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStarted(Event):
    """Attempt number ``attempt`` (1-based) of ``task`` started. ``cache_key`` is the task's
    cache key (hex SHA-256) when the run uses checkpoints, else ``None``."""

    task: str
    attempt: int
    cache_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFailed(Event):
    """Attempt ``attempt`` of ``task`` raised ``error``.

    ``retry_in`` is the backoff wait in seconds before the next attempt, or ``None`` when
    there will be no further attempt (a :class:`TaskFailed` follows).
    """

    task: str
    attempt: int
    error: BaseException
    retry_in: float | None

    @property
    def will_retry(self) -> bool:
        """True when another attempt follows after ``retry_in`` seconds."""
        return self.retry_in is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSucceeded(Event):
    """``task`` succeeded on attempt ``attempt``; ``duration`` covers all its attempts and
    backoff waits, in seconds."""

    task: str
    attempt: int
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFailed(Event):
    """``task`` failed for good after ``attempts`` attempts; ``error`` is the last one's."""

    task: str
    attempts: int
    error: BaseException
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSkipped(Event):
    """``task`` will not run because ``upstream`` (an upstream task) failed or was skipped."""

    task: str
    upstream: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCached(Event):
    """``task`` was not run: its checkpoint matches ``cache_key`` and its result was loaded."""

    task: str
    cache_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskMapped(Event):
    """Mapped task ``task`` (see :func:`~asyncflow.each`) was expanded into its instances.

    ``instances`` names them in item order (``task[0]``, ``task[1]``, ...); each then
    emits the events of a task of its own. ``over`` names the upstream tasks it is mapped
    over. The mapped task itself ends with :class:`TaskSucceeded` (``attempt`` 0) or
    :class:`TaskCached` once every instance succeeded or was cached (at once for no
    items), or with :class:`TaskFailed` or :class:`TaskSkipped` once every instance
    ended, when some did not succeed.
    """

    task: str
    instances: tuple[str, ...]
    over: tuple[str, ...]

    @property
    def count(self) -> int:
        """The number of instances (of items)."""
        return len(self.instances)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCancelled(Event):
    """``task`` was cancelled (``fail_fast`` or the caller) before it finished."""

    task: str
    reason: str


# The events a run emits per task, built positionally at half the cost of their
# keyword-only __init__ (see asyncflow._frozen.positional_builder), in field order:
build_started = positional_builder(TaskStarted)
"""``(run_id, time, task, attempt, cache_key) -> TaskStarted``"""
build_succeeded = positional_builder(TaskSucceeded)
"""``(run_id, time, task, attempt, duration) -> TaskSucceeded``"""
build_cached = positional_builder(TaskCached)
"""``(run_id, time, task, cache_key) -> TaskCached``"""


def instance_of(name: str) -> tuple[str, int] | None:
    """Split an instance's name, ``"fetch[3]"``, into its mapped task's name and its index,
    ``("fetch", 3)``; ``None`` for any other name (a task of the graph).

    Unambiguous because a task's name is a Python identifier: only an instance's name
    holds ``[``. Listeners use it to place an instance's events under its mapped task
    (see :class:`TaskMapped`) without a lookup table per instance.
    """
    if not name.endswith("]"):
        return None
    task, bracket, index = name[:-1].partition("[")
    if not bracket or not (index.isascii() and index.isdigit()):
        return None
    return task, int(index)


class Listener(Protocol):
    """Anything callable with one :class:`Event`: a function, a bound method
    (``events.append``), an :class:`~asyncflow.EventStream`, a :class:`~asyncflow.RunRecorder`.

    It is called synchronously, in the order listeners were given, right where the event
    happens, so it must be quick and must not block; its return value is ignored. If it
    raises an ``Exception``, it is disabled for the rest of the run and the error logged.
    """

    def __call__(self, event: Event, /) -> object:
        """Receive one event."""
        ...

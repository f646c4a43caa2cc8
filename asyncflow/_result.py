"""What a run hands back: a frozen :class:`RunResult` with one :class:`TaskRun` per task.

Failures are data first: a run with failed tasks returns normally, and
:meth:`RunResult.raise_for_failures` turns them into one :class:`~asyncflow.RunFailedError`
when the caller prefers an exception (like httpx's ``Response.raise_for_status``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import RunFailedError
from ._events import TaskState

__all__ = ["RunResult", "TaskRun"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRun:
    """What happened to one task in one run.

    Attributes:
        name: the task's name.
        state: its final :class:`TaskState`.
        attempts: attempts started (0 for cached, skipped and never-started tasks).
        started_at: when its first attempt started (or its checkpoint was loaded), in
            seconds since the Unix epoch; ``None`` if it never started.
        finished_at: when it reached its final state, in seconds since the Unix epoch;
            ``None`` if it never started.
        duration: ``finished_at - started_at`` in seconds (attempts and backoff waits
            included), or ``None``.
        error: the exception of its last attempt (FAILED), with its traceback; else ``None``.
        result: its result (SUCCEEDED or CACHED), as decoded from its JSON checkpoint when
            it is checkpointed; else ``None``.
        cache_key: its cache key (hex SHA-256) when the run used checkpoints, else ``None``.
        reason: why it was SKIPPED or CANCELLED, in words; else ``None``.
    """

    name: str
    state: TaskState
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    error: BaseException | None = None
    result: Any = None
    cache_key: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RunResult:
    """The outcome of one run of a pipeline.

    Attributes:
        run_id: the run's id (``YYYYmmddTHHMMSS-xxxxxx``, UTC, random suffix).
        pipeline: the pipeline's name.
        params: the run's parameters after defaults were applied.
        started_at, finished_at: in seconds since the Unix epoch.
        duration: the run's wall time in seconds.
        tasks: ``{task name: TaskRun}`` in definition order.
    """

    run_id: str
    pipeline: str
    params: Mapping[str, Any]
    started_at: float
    finished_at: float
    duration: float
    tasks: Mapping[str, TaskRun]

    def __repr__(self) -> str:
        # Short on purpose: a run of 100k tasks must not print (or pay for) 100k reprs.
        return (
            f"<RunResult {self.run_id} pipeline={self.pipeline!r} tasks={len(self.tasks)} "
            f"duration={self.duration:.3f}s>"
        )

    @property
    def ok(self) -> bool:
        """True when every task SUCCEEDED or was CACHED."""
        return all(t.state.is_ok for t in self.tasks.values())

    def by_state(self, state: TaskState) -> list[str]:
        """The names of the tasks that ended in ``state``, in definition order."""
        return [name for name, t in self.tasks.items() if t.state is state]

    @property
    def counts(self) -> dict[TaskState, int]:
        """How many tasks ended in each state that occurred."""
        counts: dict[TaskState, int] = {}
        for t in self.tasks.values():
            counts[t.state] = counts.get(t.state, 0) + 1
        return counts

    @property
    def errors(self) -> dict[str, BaseException]:
        """``{task name: exception}`` for every FAILED task."""
        return {n: t.error for n, t in self.tasks.items() if t.error is not None}

    def raise_for_failures(self) -> RunResult:
        """Return ``self`` if the run is :attr:`ok`, else raise.

        Raises:
            RunFailedError: some task FAILED, was SKIPPED or CANCELLED. Its ``.errors``
                maps each failed task to its exception (chained as ``__cause__`` is the
                first one); a run with only cancellations has empty ``.errors``.
        """
        if self.ok:
            return self
        errors = self.errors
        if not errors:
            states = ", ".join(f"{n}: {t.state.value}" for n, t in self.tasks.items() if not t.state.is_ok)
            raise RunFailedError({}) from RuntimeError(f"tasks did not finish: {states}")
        raise RunFailedError(errors) from next(iter(errors.values()))

"""The summary of a command-line run that ends without a :class:`~asyncflow.RunResult`.

:class:`TaskTracker` listens to the run beside its :class:`~asyncflow.RunRecorder` and,
when a signal or an error that is not a task failure stops the run, builds the
:class:`~asyncflow.RunResult` the summary is printed from (see
:mod:`asyncflow._interrupt`, which uses it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ._events import Event, TaskCancelled, TaskFailed, TaskState
from ._recorder import RunRecorder
from ._records import RunRecord
from ._result import RunResult, TaskRun

__all__ = ["TaskTracker"]


class TaskTracker:
    """The summary of a run that ends without a :class:`~asyncflow.RunResult`.

    Interrupted, or stopped by an exception that is not a task failure. What each task did
    comes from the run's :class:`~asyncflow.RunRecorder` (the record keeps it anyway); as
    an event listener of its own the tracker keeps only what a record does not: each
    failed task's exception, and which tasks a signal cancelled.

    Args:
        recorder: the run's recorder (also among the run's listeners).
        pipeline: the pipeline's name.
        tasks: every task name, in definition order (the summary before the run started).
        params: the run's parameters.
    """

    def __init__(
        self, recorder: RunRecorder, pipeline: str, tasks: Sequence[str], params: Mapping[str, Any]
    ) -> None:
        self.recorder = recorder
        self.pipeline = pipeline
        self.params = dict(params)
        self._tasks = list(tasks)
        self._errors: dict[str, BaseException] = {}
        self._cancelled_by_signal: set[str] = set()
        self.interrupted_by: str | None = None
        """Set by :class:`SignalGuard` to the signal's name when it cancels the run."""

    def __call__(self, event: Event) -> None:
        """Keep a failed task's exception; note a task cancelled after a signal."""
        if isinstance(event, TaskFailed):
            self._errors[event.task] = event.error
        elif isinstance(event, TaskCancelled) and self.interrupted_by is not None:
            self._cancelled_by_signal.add(event.task)

    def raised_by(self, error: BaseException) -> str | None:
        """The name of the task whose failure was ``error`` itself, or ``None``."""
        return next((name for name, e in self._errors.items() if e is error), None)

    @property
    def run_id(self) -> str:
        """The run's id, ``"-"`` before it started."""
        return self.recorder.run_id or "-"

    def _record(self) -> RunRecord | None:
        return self.recorder.record() if self.recorder.run_id is not None else None

    @property
    def states(self) -> dict[str, TaskState]:
        """Every task's last known state (of a partial run: its tasks only)."""
        record = self._record()
        if record is None:
            return dict.fromkeys(self._tasks, TaskState.PENDING)
        return {name: t.state for name, t in record.tasks.items()}

    @property
    def cancelled(self) -> list[str]:
        """The tasks that did not finish: cancelled, still running or never started."""
        unfinished = (TaskState.PENDING, TaskState.RUNNING, TaskState.CANCELLED)
        return [name for name, state in self.states.items() if state in unfinished]

    def _interrupted_reason(self, started: bool, abandoned: str | None = None) -> str | None:
        if self.interrupted_by is None:
            return None
        if not started:
            return f"interrupted by {self.interrupted_by} before it started"
        if abandoned is not None:
            return f"interrupted by {self.interrupted_by} while running; {abandoned}"
        return f"interrupted by {self.interrupted_by} while running"

    def result(self, *, abandoned: str | None = None, stopped_by: str | None = None) -> RunResult:
        """The run as far as the events tell; unfinished tasks count as CANCELLED.

        Args:
            abandoned: why the cleanup of tasks still running was given up, if it was.
            stopped_by: the error that stopped the run, if one did (it becomes the reason of
                every task it cancelled).
        """
        record = self._record()
        records = record.tasks if record is not None else {}
        tasks = {}
        for name in records if record is not None else self._tasks:
            t = records.get(name)
            state = t.state if t is not None else TaskState.PENDING
            started = t is not None and t.started_at is not None
            reason = t.reason if t is not None else None
            if state is TaskState.CANCELLED and name in self._cancelled_by_signal:
                reason = self._interrupted_reason(started)
            if state is TaskState.PENDING or state is TaskState.RUNNING:
                reason = self._interrupted_reason(started, abandoned if state is TaskState.RUNNING else None)
                reason = reason or "the run stopped before it finished"
                state = TaskState.CANCELLED
            if stopped_by is not None and state is TaskState.CANCELLED:
                when = "while it was running" if started else "before it started"
                reason = f"the run was stopped by {stopped_by} {when}"
            tasks[name] = TaskRun(
                name=name,
                state=state,
                attempts=len(t.attempts) if t is not None else 0,
                started_at=t.started_at if t is not None else None,
                finished_at=t.finished_at if t is not None else None,
                duration=t.duration if t is not None else None,
                error=self._errors.get(name),
                cache_key=t.cache_key if t is not None else None,
                reason=reason,
                instances=t.instances if t is not None else None,
                parent=t.parent if t is not None else None,
            )
        now = time.time()
        started_at = record.started_at if record is not None else now
        return RunResult(
            run_id=self.run_id,
            pipeline=self.pipeline,
            params=self.params,
            started_at=started_at,
            finished_at=now,
            duration=now - started_at,
            tasks=tasks,
        )

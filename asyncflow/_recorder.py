"""The run recorder: a listener that turns a run's events into its :class:`RunRecord`.

:class:`RunRecorder` keeps, per task, its attempts (start, end, outcome, error) from the
event stream, and builds the record (:mod:`asyncflow._records`) on demand, also for a run
that is cancelled or abandoned. At :class:`~asyncflow.TaskMapped` it adds the instances as
tasks of their own (with their parent, index and upstream) and marks the mapped task.
:func:`save_after_run` writes it asynchronously after a run; :func:`save_now` writes it
synchronously when the process must exit at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from loguru import logger

from ._context import log_safely
from ._dist import DISTRIBUTION
from ._events import (
    AttemptFailed,
    Event,
    RunFinished,
    RunStarted,
    TaskCached,
    TaskCancelled,
    TaskFailed,
    TaskMapped,
    TaskSkipped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
)
from ._files import dumps_json, write_json
from ._records import RECORD_FILE, AttemptRecord, AttemptState, CacheStatus, RunRecord, TaskRecord

__all__ = ["RunRecorder", "save_after_run", "save_now"]


class _Attempt:
    __slots__ = ("backoff", "end", "error", "error_type", "number", "start", "state")

    def __init__(self, number: int, start: float) -> None:
        self.number, self.start = number, start
        self.end: float | None = None
        self.state = AttemptState.RUNNING
        self.error_type: str | None = None
        self.error: str | None = None
        self.backoff: float | None = None


class _Task:
    __slots__ = (
        "attempts",
        "cache",
        "cache_key",
        "duration",
        "end",
        "error",
        "error_type",
        "index",
        "instances",
        "over",
        "parent",
        "reason",
        "start",
        "state",
        "upstream",
    )

    def __init__(
        self, upstream: tuple[str, ...] = (), parent: str | None = None, index: int | None = None
    ) -> None:
        self.upstream = upstream
        self.parent, self.index = parent, index
        self.instances: tuple[str, ...] | None = None
        self.over: tuple[str, ...] = ()
        self.state = TaskState.PENDING
        self.cache: CacheStatus | None = None
        self.cache_key: str | None = None
        self.reason: str | None = None
        self.error_type: str | None = None
        self.error: str | None = None
        self.start: float | None = None
        self.end: float | None = None
        self.duration: float | None = None
        self.attempts: list[_Attempt] = []

    def open_attempt(self) -> _Attempt | None:
        if self.attempts and self.attempts[-1].end is None:
            return self.attempts[-1]
        return None


class RunRecorder:
    """An event listener that builds the :class:`RunRecord` of one run.

    Pass it in ``listeners=[...]`` of one run, then ``await recorder.save(directory)``
    (or read :meth:`record`). ``Pipeline.run(record=True)`` does this for you and saves to
    ``<workdir>/runs``. Each event costs O(1); :class:`~asyncflow.RunStarted` costs one
    pass over the run's tasks (to list them with their upstream names), and
    :class:`~asyncflow.TaskMapped` one pass over the new instances.
    """

    def __init__(self) -> None:
        self._run_id: str | None = None
        self._pipeline = ""
        self._params: dict[str, Any] = {}
        self._versions: dict[str, str] = {}
        self._offset = 0.0
        self._start = 0.0
        self._last = 0.0
        self._end: float | None = None
        self._ok = False
        self._tasks: dict[str, _Task] = {}

    @property
    def run_id(self) -> str | None:
        """The id of the recorded run, or ``None`` before its RunStarted event."""
        return self._run_id

    def __call__(self, event: Event) -> None:
        """Take in one event of the run.

        Raises:
            RuntimeError: a second run's RunStarted arrived (use one recorder per run);
                the runner then disables this listener and logs the error.
        """
        self._last = max(self._last, event.time)
        if isinstance(event, RunStarted):
            if self._run_id is not None:
                raise RuntimeError(
                    f"this RunRecorder already records run {self._run_id}; use one recorder per run"
                )
            self._start_run(event)
            return
        name = getattr(event, "task", None)
        if name is None:
            if isinstance(event, RunFinished):
                self._end, self._ok = event.time, event.ok
            return
        task = self._tasks.get(name)
        if task is None:  # not announced by RunStarted: record it all the same
            task = self._tasks[name] = _Task()
        t = event.time
        if isinstance(event, TaskMapped):
            self._expand(task, event)
        elif isinstance(event, TaskStarted):
            task.state = TaskState.RUNNING
            if task.start is None:
                task.start = t
            if event.cache_key is not None:
                task.cache, task.cache_key = "miss", event.cache_key
            task.attempts.append(_Attempt(event.attempt, t))
        elif isinstance(event, AttemptFailed):
            attempt = task.open_attempt()
            if attempt is not None:
                attempt.end = t
                attempt.state = AttemptState.FAILED if event.retry_in is None else AttemptState.RETRYING
                attempt.error_type, attempt.error = type(event.error).__name__, str(event.error)
                attempt.backoff = event.retry_in
        elif isinstance(event, TaskSucceeded):
            attempt = task.open_attempt()
            if attempt is not None:
                attempt.end, attempt.state = t, AttemptState.SUCCEEDED
            task.state, task.end, task.duration = TaskState.SUCCEEDED, t, event.duration
            task.start = t - event.duration  # from when it became ready, cache key included
        elif isinstance(event, TaskFailed):
            error_type, error = type(event.error).__name__, str(event.error)
            attempt = task.open_attempt()
            if attempt is not None:  # failed after its attempt returned (a CheckpointError)
                attempt.end, attempt.state = t, AttemptState.FAILED
                attempt.error_type, attempt.error = error_type, error
            task.state, task.end, task.duration = TaskState.FAILED, t, event.duration
            task.error_type, task.error = error_type, error
            task.start = t - event.duration
        elif isinstance(event, TaskCached):
            task.state, task.cache, task.cache_key = TaskState.CACHED, "hit", event.cache_key
            if task.instances is None or task.start is None:
                task.start = t
            task.end = t
            task.duration = t - task.start  # 0, but for a mapped task: while its instances loaded
        elif isinstance(event, TaskSkipped):
            task.state, task.reason, task.end = TaskState.SKIPPED, event.reason, t
            if task.instances is not None and task.start is not None:  # after its instances ended
                task.duration = t - task.start
        elif isinstance(event, TaskCancelled):
            task.state, task.reason, task.end = TaskState.CANCELLED, event.reason, t
            attempt = task.open_attempt()
            if attempt is not None:
                attempt.end, attempt.state = t, AttemptState.CANCELLED
            if task.start is not None:
                task.duration = t - task.start

    def _expand(self, task: _Task, event: TaskMapped) -> None:
        """Mapped task ``task`` expanded: mark it, and add its instances as tasks."""
        task.state = TaskState.RUNNING
        task.start = event.time
        task.instances, task.over = event.instances, event.over
        tasks = self._tasks
        over = set(event.over)
        # An instance depends on the upstream instance at its index when it is chained to
        # a mapped task, else on the same tasks as its mapped task.
        chained = [
            u for u in task.upstream if u in over and (up := tasks.get(u)) is not None and up.instances
        ]
        for k, instance in enumerate(event.instances):
            upstream = task.upstream
            if chained:
                upstream = tuple(f"{u}[{k}]" if u in chained else u for u in upstream)
            tasks[instance] = _Task(upstream, event.task, k)

    def _start_run(self, event: RunStarted) -> None:
        self._offset = time.time() - event.time
        self._run_id, self._pipeline = event.run_id, event.pipeline
        self._start = self._last = event.time
        self._params = {key: _jsonable(value) for key, value in event.params.items()}
        self._versions = {**_static_versions(), "backend": _backend()}
        self._tasks = {name: _Task(tuple(ups)) for name, ups in event.upstream.items()}

    def record(self) -> RunRecord:
        """A snapshot of the record so far (complete once RunFinished was seen).

        Raises:
            RuntimeError: no run has started yet.
        """
        if self._run_id is None:
            raise RuntimeError("no run has started yet: pass the recorder in listeners=[...] of a run")
        offset = self._offset

        def wall(t: float) -> float:
            return t + offset

        end = self._end if self._end is not None else self._last
        tasks = {}
        for name, t in self._tasks.items():
            tasks[name] = TaskRecord(
                name=name,
                state=t.state,
                upstream=t.upstream,
                cache=t.cache,
                cache_key=t.cache_key,
                reason=t.reason,
                error_type=t.error_type,
                error=t.error,
                started_at=None if t.start is None else wall(t.start),
                finished_at=None if t.end is None else wall(t.end),
                duration=t.duration,
                parent=t.parent,
                index=t.index,
                instances=t.instances,
                over=t.over,
                attempts=tuple(
                    AttemptRecord(
                        attempt=a.number,
                        state=a.state,
                        started_at=wall(a.start),
                        finished_at=None if a.end is None else wall(a.end),
                        error_type=a.error_type,
                        error=a.error,
                        backoff=a.backoff,
                    )
                    for a in t.attempts
                ),
            )
        return RunRecord(
            run_id=self._run_id,
            pipeline=self._pipeline,
            params=dict(self._params),
            versions=dict(self._versions),
            started_at=wall(self._start),
            finished_at=wall(end),
            duration=end - self._start,
            ok=self._end is not None and self._ok,
            finished=self._end is not None,
            tasks=tasks,
        )

    async def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the record to ``<directory>/<run id>/record.json`` atomically and return
        that path. Writes what is known, so it also works for a run that did not finish.

        The directory is created if missing. The write is shielded from cancellation, so
        it can be awaited while the run is being cancelled.

        Raises:
            RuntimeError: no run has started yet.
            OSError: the directory or the file cannot be written.
        """
        record = self.record()
        path = Path(directory) / record.run_id / RECORD_FILE
        with anyio.CancelScope(shield=True):
            await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
            await write_json(path, record.to_json())
        return path


def save_now(recorder: RunRecorder, directory: str | os.PathLike[str]) -> Path | None:
    """Write the record synchronously, for a process that must exit at once.

    The command line calls it when a run's cleanup overruns its grace period and the event
    loop cannot be awaited any more. Same file and atomicity as :meth:`RunRecorder.save`
    (temporary file, fsync, ``os.replace``). Never raises: returns ``None`` when no run has
    started or the file cannot be written.
    """
    if recorder.run_id is None:
        return None
    try:
        record = recorder.record()
        path = Path(directory) / record.run_id / RECORD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(dumps_json(record.to_json()) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path
    except (OSError, TypeError, ValueError):
        return None


async def save_after_run(recorder: RunRecorder, directory: Path) -> Path | None:
    """Save ``recorder``'s record if a run started; for ``Pipeline.run(record=True)``.

    Never raises an ``OSError``: a record that cannot be written is logged as an error
    (observers never break a run). Returns the path written, or ``None``.
    """
    if recorder.run_id is None:
        return None
    try:
        return await recorder.save(directory)
    except OSError as exc:
        log_safely(
            logger.bind(run_id=recorder.run_id, task="-"),
            "ERROR",
            "the run record could not be written: {}",
            exc,
        )
        return None


def _jsonable(value: Any) -> Any:
    try:
        dumps_json(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


@functools.cache
def _static_versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return {
        "asyncflow": version(DISTRIBUTION),
        "python": platform.python_version(),
        "anyio": version("anyio"),
    }


def _backend() -> str:
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    return "unknown"

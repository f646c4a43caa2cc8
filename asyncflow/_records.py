"""Run records: what one run did, kept as ``<workdir>/runs/<run id>/record.json``.

A :class:`RunRecorder` is an event listener: it learns everything from the run's events
(:mod:`asyncflow._events`) and nothing from anywhere else. As a listener it is called
synchronously and cannot await, so it only collects; its async :meth:`RunRecorder.save`
writes the file afterwards through asyncflow's atomic JSON writer
(:func:`asyncflow._files.write_json`: aiofiles on asyncio, anyio's file API on trio).
``Pipeline.run(record=True)`` does both (the command line always records); an embedding
application can also pass a recorder in ``listeners=[...]`` and save it itself.

Times: events carry the event loop's monotonic clock. At :class:`~asyncflow.RunStarted` the
recorder takes ``offset = time.time() - event.time`` and every time in the record is
``event.time + offset``, in seconds since the Unix epoch.

The file (``record_version`` 1; every key that holds a time or a duration ends in ``_s``)::

    {"record_version": 1, "run_id": "...", "pipeline": "prices", "status": "ok",
     "ok": true, "finished": true,
     "started_at_s": 1714557603.25, "finished_at_s": 1714557603.66, "duration_s": 0.41,
     "params": {...}, "versions": {"asyncflow": "0.1.0", "python": "3.11.9",
                                   "anyio": "4.6.0", "backend": "asyncio"},
     "counts": {"succeeded": 11, "failed": 1},
     "tasks": {"ingest": {"state": "succeeded", "upstream": [], "cache": "miss",
               "cache_key": "9f2c...", "reason": null, "error_type": null, "error": null,
               "started_at_s": ..., "finished_at_s": ..., "duration_s": 0.012,
               "attempts": [{"attempt": 1, "state": "succeeded", "started_at_s": ...,
                             "finished_at_s": ..., "duration_s": 0.011,
                             "error_type": null, "error": null, "backoff_s": null}]}}}

``cache`` is ``"hit"`` when the task's checkpoint was loaded, ``"miss"`` when it ran with
a cache key, ``null`` when the run kept no checkpoints or the task never started.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
    TaskSkipped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
)
from ._files import dumps_json, read_json, write_json

__all__ = [
    "RECORD_FILE",
    "AttemptRecord",
    "AttemptState",
    "RunRecord",
    "RunRecorder",
    "TaskRecord",
    "list_records",
    "read_record",
    "save_after_run",
]

RECORD_FILE = "record.json"
"""The name of a run record's file inside ``<workdir>/runs/<run id>/``."""
RECORD_VERSION = 1

CacheStatus = Literal["hit", "miss"]


class AttemptState(enum.Enum):
    """How one attempt of a task ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """It raised and no attempt followed."""
    RETRYING = "retrying"
    """It raised and another attempt followed after a backoff wait."""
    CANCELLED = "cancelled"
    RUNNING = "running"
    """No end is known: the record was written while it ran."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One attempt of one task.

    Attributes:
        attempt: its number, 1-based.
        state: how it ended.
        started_at, finished_at: seconds since the Unix epoch (``finished_at`` is ``None``
            while RUNNING).
        error_type, error: the exception's class name and message, for FAILED and
            RETRYING attempts; else ``None``.
        backoff: the wait before the next attempt, in seconds (RETRYING only).
    """

    attempt: int
    state: AttemptState
    started_at: float
    finished_at: float | None = None
    error_type: str | None = None
    error: str | None = None
    backoff: float | None = None

    @property
    def duration(self) -> float | None:
        """``finished_at - started_at`` in seconds, or ``None`` while RUNNING."""
        return None if self.finished_at is None else self.finished_at - self.started_at


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """What one task did in one run.

    Attributes:
        name: the task's name.
        state: its final :class:`~asyncflow.TaskState` (PENDING or RUNNING only in the
            record of a run that did not finish).
        upstream: the names of its upstream tasks.
        cache: ``"hit"`` (loaded from its checkpoint), ``"miss"`` (ran with a cache key) or
            ``None`` (no checkpoints, or it never started).
        cache_key: its cache key (hex SHA-256), or ``None``.
        reason: why it was SKIPPED or CANCELLED, in words; else ``None``.
        error_type, error: the class name and message of the exception that FAILED it.
        started_at, finished_at: seconds since the Unix epoch, or ``None`` (a skipped task
            has only ``finished_at``: when it was skipped).
        duration: its attempts and backoff waits, in seconds, or ``None``.
        attempts: every attempt, in order.
    """

    name: str
    state: TaskState
    upstream: tuple[str, ...] = ()
    cache: CacheStatus | None = None
    cache_key: str | None = None
    reason: str | None = None
    error_type: str | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    attempts: tuple[AttemptRecord, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """What one run did: the content of ``record.json``.

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        params: the run's parameters (values that are not JSON are kept as their repr).
        versions: ``{"asyncflow", "python", "anyio", "backend"}`` version strings; backend
            is ``"asyncio"`` or ``"trio"``.
        started_at: seconds since the Unix epoch.
        finished_at: seconds since the Unix epoch: the run's end, or the last event seen
            when it did not finish.
        duration: ``finished_at - started_at``, in seconds.
        ok: True when every task succeeded or was cached.
        finished: True when the run's :class:`~asyncflow.RunFinished` was seen.
        tasks: ``{task name: TaskRecord}`` in definition order.
    """

    run_id: str
    pipeline: str
    params: Mapping[str, Any]
    versions: Mapping[str, str]
    started_at: float
    finished_at: float
    duration: float
    ok: bool
    finished: bool
    tasks: Mapping[str, TaskRecord]

    @property
    def status(self) -> str:
        """``"ok"``; ``"failed"`` (a task failed or was skipped); ``"cancelled"`` (tasks
        were cancelled, none failed); or ``"interrupted"`` (the run did not finish)."""
        if not self.finished:
            return "interrupted"
        if self.ok:
            return "ok"
        states = {t.state for t in self.tasks.values()}
        if TaskState.CANCELLED in states and TaskState.FAILED not in states:
            return "cancelled"
        return "failed"

    @property
    def counts(self) -> dict[TaskState, int]:
        """How many tasks ended in each state that occurred, in first-seen order."""
        counts: dict[TaskState, int] = {}
        for t in self.tasks.values():
            counts[t.state] = counts.get(t.state, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (the layout is in the module docstring)."""
        return {
            "record_version": RECORD_VERSION,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "ok": self.ok,
            "finished": self.finished,
            "started_at_s": _s(self.started_at),
            "finished_at_s": _s(self.finished_at),
            "duration_s": _s(self.duration),
            "params": dict(self.params),
            "versions": dict(self.versions),
            "counts": {state.value: n for state, n in self.counts.items()},
            "tasks": {name: _task_json(t) for name, t in self.tasks.items()},
        }

    @classmethod
    def from_json(cls, doc: Any) -> RunRecord:
        """Rebuild a record from what :meth:`to_json` returned (read back from JSON).

        Raises:
            ValueError: ``doc`` is not a run record, or a field is missing or has the
                wrong type (the message names the field).
        """
        d = _Doc(doc, "record")
        version = d.get("record_version", int)
        if version != RECORD_VERSION:
            raise ValueError(
                f"unsupported record_version {version!r} (this asyncflow reads {RECORD_VERSION})"
            )
        tasks = {}
        for name, raw in d.get("tasks", dict).items():
            t = _Doc(raw, f"tasks.{name}")
            attempts = []
            for k, raw_attempt in enumerate(t.get("attempts", list)):
                a = _Doc(raw_attempt, f"tasks.{name}.attempts[{k}]")
                attempts.append(
                    AttemptRecord(
                        attempt=a.get("attempt", int),
                        state=a.enum("state", AttemptState),
                        started_at=a.get("started_at_s", float),
                        finished_at=a.opt("finished_at_s", float),
                        error_type=a.opt("error_type", str),
                        error=a.opt("error", str),
                        backoff=a.opt("backoff_s", float),
                    )
                )
            cache = t.opt("cache", str)
            if cache not in (None, "hit", "miss"):
                raise ValueError(f"tasks.{name}.cache must be 'hit', 'miss' or null, not {cache!r}")
            tasks[name] = TaskRecord(
                name=name,
                state=t.enum("state", TaskState),
                upstream=tuple(t.get("upstream", list)),
                cache="hit" if cache == "hit" else "miss" if cache == "miss" else None,
                cache_key=t.opt("cache_key", str),
                reason=t.opt("reason", str),
                error_type=t.opt("error_type", str),
                error=t.opt("error", str),
                started_at=t.opt("started_at_s", float),
                finished_at=t.opt("finished_at_s", float),
                duration=t.opt("duration_s", float),
                attempts=tuple(attempts),
            )
        return cls(
            run_id=d.get("run_id", str),
            pipeline=d.get("pipeline", str),
            params=d.get("params", dict),
            versions=d.get("versions", dict),
            started_at=d.get("started_at_s", float),
            finished_at=d.get("finished_at_s", float),
            duration=d.get("duration_s", float),
            ok=d.get("ok", bool),
            finished=d.get("finished", bool),
            tasks=tasks,
        )


def _s(seconds: float | None) -> float | None:
    """Seconds rounded to the microsecond, for a readable file."""
    return None if seconds is None else round(seconds, 6)


def _task_json(t: TaskRecord) -> dict[str, Any]:
    return {
        "state": t.state.value,
        "upstream": list(t.upstream),
        "cache": t.cache,
        "cache_key": t.cache_key,
        "reason": t.reason,
        "error_type": t.error_type,
        "error": t.error,
        "started_at_s": _s(t.started_at),
        "finished_at_s": _s(t.finished_at),
        "duration_s": _s(t.duration),
        "attempts": [
            {
                "attempt": a.attempt,
                "state": a.state.value,
                "started_at_s": _s(a.started_at),
                "finished_at_s": _s(a.finished_at),
                "duration_s": _s(a.duration),
                "error_type": a.error_type,
                "error": a.error,
                "backoff_s": _s(a.backoff),
            }
            for a in t.attempts
        ],
    }


class _Doc:
    """Typed access to one JSON object, with errors that name the field."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise ValueError(f"{where} must be a JSON object, not {type(doc).__name__}")
        self.doc, self.where = doc, where

    def get(self, key: str, kind: type[Any]) -> Any:
        if key not in self.doc:
            raise ValueError(f"{self.where} has no {key!r}")
        return self._check(key, self.doc[key], kind)

    def opt(self, key: str, kind: type[Any]) -> Any:
        value = self.doc.get(key)
        return None if value is None else self._check(key, value, kind)

    def enum(self, key: str, kind: type[enum.Enum]) -> Any:
        value = self.get(key, str)
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{self.where}.{key} has an unknown value {value!r}") from None

    def _check(self, key: str, value: Any, kind: type[Any]) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{self.where}.{key} must be {kind.__name__}, not {type(value).__name__}")
        return value


# -- collecting ---------------------------------------------------------------------------------


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
        "reason",
        "start",
        "state",
        "upstream",
    )

    def __init__(self, upstream: tuple[str, ...] = ()) -> None:
        self.upstream = upstream
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
    pass over the run's tasks (to list them with their upstream names).
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
        if isinstance(event, TaskStarted):
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
            task.start = task.end = t
            task.duration = 0.0
        elif isinstance(event, TaskSkipped):
            task.state, task.reason, task.end = TaskState.SKIPPED, event.reason, t
        elif isinstance(event, TaskCancelled):
            task.state, task.reason, task.end = TaskState.CANCELLED, event.reason, t
            attempt = task.open_attempt()
            if attempt is not None:
                attempt.end, attempt.state = t, AttemptState.CANCELLED
            if task.start is not None:
                task.duration = t - task.start

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


# -- reading ------------------------------------------------------------------------------------


async def read_record(path: str | os.PathLike[str]) -> RunRecord:
    """Read a ``record.json`` file.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it does not exist).
        ValueError: it is not valid JSON or not a run record (the message names the field).
    """
    return RunRecord.from_json(await read_json(path))


async def list_records(workdir: str | os.PathLike[str]) -> list[RunRecord]:
    """Every readable run record under ``<workdir>/runs/``, newest first (by start time).

    Run folders without a readable ``record.json`` are left out (and logged at DEBUG).
    Returns an empty list when there is no ``runs`` folder.
    """
    runs = anyio.Path(workdir) / "runs"
    records = []
    paths = sorted([path async for path in runs.glob(f"*/{RECORD_FILE}")])
    for path in paths:
        try:
            records.append(await read_record(path))
        except (OSError, ValueError) as exc:
            logger.debug("skipping run record {}: {}", path, exc)
    records.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
    return records

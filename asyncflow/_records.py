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

Mapped tasks (see :func:`~asyncflow.each`). Every instance is a task of the record, named
``fetch[3]``, after the graph's tasks, with its own attempts and two more keys:
``"parent": "fetch", "index": 3``; its ``upstream`` names the upstream instance it is
chained to (``"fetch[3]"`` for ``parse[3]``) or the task it is mapped over. An expanded
mapped task has ``"mapped": {"over": ["urls"], "instances": 200}`` (its instances are
``fetch[0]`` to ``fetch[199]``); it has no attempts, and ``counts`` leaves it out (it
counts the instances, like :attr:`RunResult.counts <asyncflow.RunResult.counts>`). These
keys were added within ``record_version`` 1: a record without them (written before
mapped tasks existed) reads back as before, and an older reader ignores them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._events import TaskState
from ._json_doc import JsonObject

__all__ = [
    "RECORD_FILE",
    "AttemptRecord",
    "AttemptState",
    "RunRecord",
    "TaskRecord",
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
        duration: its attempts and backoff waits, in seconds, or ``None``. For an expanded
            mapped task: from its expansion until its last instance ended.
        attempts: every attempt, in order (none for a mapped task: its instances have them).
        parent, index: for an instance of a mapped task, that task's name and the
            instance's position in item order (0-based); else ``None``.
        instances: for an expanded mapped task, its instances' names in item order
            (``("fetch[0]", ...)``, possibly empty); ``None`` for any other task.
        over: for an expanded mapped task, the upstream tasks it is mapped over; else ``()``.
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
    parent: str | None = None
    index: int | None = None
    instances: tuple[str, ...] | None = None
    over: tuple[str, ...] = ()

    @property
    def is_mapped(self) -> bool:
        """True for an expanded mapped task (its :attr:`instances` are in the record)."""
        return self.instances is not None


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
        tasks: ``{task name: TaskRecord}`` in definition order, then the instances of
            mapped tasks in the order they were made (see :meth:`instances`).
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
        """How many tasks ended in each state that occurred, in first-seen order. Each
        instance of a mapped task counts as a task; the expanded mapped task (their
        summary) does not."""
        counts: dict[TaskState, int] = {}
        for t in self.tasks.values():
            if t.instances is None:
                counts[t.state] = counts.get(t.state, 0) + 1
        return counts

    def instances(self, name: str) -> list[TaskRecord]:
        """The records of the instances of mapped task ``name``, in item order (``[]`` for
        a task that is not mapped or was never expanded; an instance missing from a
        hand-edited record is left out).

        Raises:
            KeyError: there is no task ``name`` in the record.
        """
        names = self.tasks[name].instances or ()
        return [self.tasks[n] for n in names if n in self.tasks]

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
        d = JsonObject(doc, "record")
        version = d.get("record_version", int)
        if version != RECORD_VERSION:
            raise ValueError(
                f"unsupported record_version {version!r} (this asyncflow reads {RECORD_VERSION})"
            )
        tasks = {}
        for name, raw in d.get("tasks", dict).items():
            t = JsonObject(raw, f"tasks.{name}")
            attempts = []
            for k, raw_attempt in enumerate(t.get("attempts", list)):
                a = JsonObject(raw_attempt, f"tasks.{name}.attempts[{k}]")
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
            mapped = t.opt("mapped", dict)
            instances = over = None
            if mapped is not None:
                m = JsonObject(mapped, f"tasks.{name}.mapped")
                count = m.get("instances", int)
                instances = tuple(f"{name}[{k}]" for k in range(count))
                over = tuple(str(u) for u in m.get("over", list))
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
                parent=t.opt("parent", str),
                index=t.opt("index", int),
                instances=instances,
                over=over or (),
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
    doc: dict[str, Any] = {
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
    if t.parent is not None:
        doc["parent"], doc["index"] = t.parent, t.index
    if t.instances is not None:
        doc["mapped"] = {"over": list(t.over), "instances": len(t.instances)}
    return doc

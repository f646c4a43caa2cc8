"""A run's timeline in the Chrome trace-event format, for Perfetto and ``chrome://tracing``.

The HTML timeline (:mod:`asyncflow._timeline`) draws every attempt as an SVG bar, which
gets heavy past a few thousand tasks; trace viewers zoom through millions of events.
:func:`chrome_trace` builds the JSON Object Format of the trace-event specification
(``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``) from a
:class:`~asyncflow.RunRecord` alone, like the HTML page.

Layout: one process (``pid`` 1, named ``<pipeline> <run id>``); thread ``tid`` 0 is the
run, and each task is one thread, ``tid`` 1, 2, ... in definition order (named after the
task, sorted in that order). Events (``ts`` and ``dur`` in microseconds since the run
started; the start on the wall clock is ``otherData.started_at_s``, Unix seconds):

* ``"ph": "X"`` (complete) events: the run (``cat`` ``"run"``, on tid 0); per task that
  ran, the task from its start to its end (``cat`` ``"task"``); nested in it, one per
  attempt (``cat`` ``"attempt"``, ``name`` ``"<task> #<n>"``, ``args``: ``attempt``,
  ``state``, ``error``, ``backoff_s``) and one per backoff wait after a retried attempt
  (``cat`` ``"backoff"``). An attempt still running when the record was written ends at
  the record's end.
* ``"ph": "i"`` (instant, thread scope) events for tasks that did not run: ``cached``,
  ``skipped``, ``cancelled`` (``args``: ``reason``, ``cache_key``).
* ``"ph": "M"`` metadata events naming the process and the threads.

Mapped tasks (see :func:`~asyncflow.each`): each instance is a task, so a thread of its
own (``fetch[3]``), sorted right after its mapped task's thread; its events' ``args``
add ``parent`` (the mapped task) and ``index``. An expanded mapped task has no attempts;
its thread holds one complete event (``cat`` ``"mapped"``) from its expansion until its
last instance ended, with ``args`` ``over``, ``instances`` and ``counts`` (per state).
"""

from __future__ import annotations

from typing import Any

from ._records import RunRecord, TaskRecord

__all__ = ["PID", "chrome_trace"]

PID = 1
"""The process id of every event: one run is one process."""


def chrome_trace(record: RunRecord) -> dict[str, Any]:
    """The Chrome trace-event JSON document of ``record`` (see the module docstring).

    Returns a JSON-ready dict; ``json.dumps`` it into a ``.json`` file and open that in
    https://ui.perfetto.dev or ``chrome://tracing``.
    """
    t0 = record.started_at

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 3)

    events: list[dict[str, Any]] = [
        _meta("process_name", 0, name=f"{record.pipeline} {record.run_id}"),
        _meta("thread_name", 0, name="run"),
        _meta("thread_sort_index", 0, sort_index=0),
        {
            "name": f"run {record.pipeline}",
            "cat": "run",
            "ph": "X",
            "ts": 0.0,
            "dur": us(record.finished_at),
            "pid": PID,
            "tid": 0,
            "args": {"run_id": record.run_id, "status": record.status, "params": dict(record.params)},
        },
    ]
    for tid, task in enumerate(_in_order(record), start=1):
        events.append(_meta("thread_name", tid, name=task.name))
        events.append(_meta("thread_sort_index", tid, sort_index=tid))
        if task.instances is not None:
            events.extend(_mapped_events(record, task, tid, us))
        else:
            events.extend(_task_events(task, tid, us, record.finished_at))
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "run_id": record.run_id,
            "pipeline": record.pipeline,
            "status": record.status,
            "started_at_s": record.started_at,
            "duration_s": record.duration,
            "versions": dict(record.versions),
        },
    }


def _in_order(record: RunRecord) -> list[TaskRecord]:
    """The tasks in definition order, each mapped task followed by its instances (and
    instances whose mapped task is not in the record last)."""
    out: list[TaskRecord] = []
    placed: set[str] = set()
    for task in record.tasks.values():
        if task.parent is not None:
            continue
        out.append(task)
        for instance in record.instances(task.name):
            out.append(instance)
            placed.add(instance.name)
    out.extend(t for t in record.tasks.values() if t.parent is not None and t.name not in placed)
    return out


def _mapped_events(record: RunRecord, task: TaskRecord, tid: int, us: Any) -> list[dict[str, Any]]:
    start = task.started_at
    end = task.finished_at if task.finished_at is not None else record.finished_at
    if start is None:
        return []
    counts: dict[str, int] = {}
    for instance in record.instances(task.name):
        counts[instance.state.value] = counts.get(instance.state.value, 0) + 1
    return [
        {
            "name": f"{task.name}[*]",
            "cat": "mapped",
            "ph": "X",
            "ts": us(start),
            "dur": max(0.0, us(end) - us(start)),
            "pid": PID,
            "tid": tid,
            "args": {
                "state": task.state.value,
                "over": list(task.over),
                "instances": len(task.instances or ()),
                "counts": counts,
                "cache": task.cache,
                "error": None if task.error_type is None else f"{task.error_type}: {task.error}",
                "reason": task.reason,
            },
        }
    ]


def _meta(kind: str, tid: int, **args: Any) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": PID, "tid": tid, "args": args}


def _task_events(task: TaskRecord, tid: int, us: Any, run_end: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    common = {"pid": PID, "tid": tid}
    lineage = {} if task.parent is None else {"parent": task.parent, "index": task.index}
    if not task.attempts:  # cached, skipped or cancelled before it started
        at = task.finished_at if task.finished_at is not None else task.started_at
        if at is not None:
            args = {"state": task.state.value, "reason": task.reason, "cache_key": task.cache_key, **lineage}
            events.append(
                {"name": task.state.value, "cat": "task", "ph": "i", "s": "t", "ts": us(at), **common}
                | {"args": args}
            )
        return events
    start = task.started_at if task.started_at is not None else task.attempts[0].started_at
    end = task.finished_at if task.finished_at is not None else run_end
    events.append(
        {
            "name": task.name,
            "cat": "task",
            "ph": "X",
            "ts": us(start),
            "dur": max(0.0, us(end) - us(start)),
            **common,
            "args": {
                "state": task.state.value,
                "attempts": len(task.attempts),
                "cache": task.cache,
                "cache_key": task.cache_key,
                "error": None if task.error_type is None else f"{task.error_type}: {task.error}",
                "reason": task.reason,
                **lineage,
            },
        }
    )
    for attempt in task.attempts:
        finished = attempt.finished_at if attempt.finished_at is not None else run_end
        events.append(
            {
                "name": f"{task.name} #{attempt.attempt}",
                "cat": "attempt",
                "ph": "X",
                "ts": us(attempt.started_at),
                "dur": max(0.0, us(finished) - us(attempt.started_at)),
                **common,
                "args": {
                    "attempt": attempt.attempt,
                    "state": attempt.state.value,
                    "error": None if attempt.error_type is None else f"{attempt.error_type}: {attempt.error}",
                    "backoff_s": attempt.backoff,
                },
            }
        )
        if attempt.backoff is not None and attempt.finished_at is not None:
            events.append(
                {
                    "name": "backoff",
                    "cat": "backoff",
                    "ph": "X",
                    "ts": us(attempt.finished_at),
                    "dur": round(attempt.backoff * 1e6, 3),
                    **common,
                    "args": {"after_attempt": attempt.attempt, "backoff_s": attempt.backoff},
                }
            )
    return events

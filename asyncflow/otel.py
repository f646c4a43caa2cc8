"""OpenTelemetry traces of pipeline runs: :class:`OpenTelemetryListener`.

Needs the ``otel`` extra, ``pip install 'asyncflow-dag[otel]'``, which is
``opentelemetry-api`` only: the SDK, its span processors and exporters are the
application's choice (the command line's ``--otel`` sets up the OTLP exporter). Without a
configured SDK the API's no-op tracer makes every span free.

One listener emits, per run it observes (by run id, so one listener may serve several
runs, also at once):

* one **run** span, ``run <pipeline>``, from :class:`~asyncflow.RunStarted` to
  :class:`~asyncflow.RunFinished`, a child of the span current where the run was started;
* one **task** span per task, ``task <task>``, a child of the run span, from its first
  attempt's start to its final state (a cached, skipped or never-started task's span
  lasts zero seconds), with a link to the task span of each of its upstream tasks (the
  data flow, from :attr:`RunStarted.upstream <asyncflow.RunStarted>`);
* one **attempt** span per attempt, ``attempt <task>``, a child of its task span.

A mapped task (see :func:`~asyncflow.each`) opens its task span at
:class:`~asyncflow.TaskMapped` and ends it with its last instance; each instance
(``fetch[3]``) has a task span of its own, ``task fetch[3]``, a child of its mapped task's
span, linked to the span of the upstream instance it is chained to (``task fetch[3]`` for
``parse[3]``) or else to its mapped task's upstream tasks; its attempts are children of
its span as for any task. The mapped task's span has ``mapped`` (True), ``instances``
(their number) and ``over`` (the upstream tasks it is mapped over).

Attributes (all prefixed ``asyncflow.``): ``run_id`` and ``pipeline`` on every span;
``task`` on task and attempt spans; ``state`` (a :class:`~asyncflow.TaskState` value on
task spans; ``succeeded``/``retrying``/``failed``/``cancelled`` on attempts; ``ok``,
``failed`` or ``cancelled`` on the run); ``attempt`` (1-based) on attempt spans and
``attempts`` on task spans; ``cache_hit`` (bool) and ``cache_key`` (hex SHA-256, when the
run keeps checkpoints); ``retry_delay_s`` (the backoff wait after a retried attempt, in
seconds); ``error.type`` and ``error.message``, with the exception recorded as a span
event and the span's status ERROR; ``reason`` for skipped and cancelled tasks; ``tasks``
and one ``count.<state>`` per final state on the run span.

Times: events carry the event loop's monotonic clock; at :class:`~asyncflow.RunStarted`
the listener takes ``offset = time.time() - event.time`` (as the run record does, see
:mod:`asyncflow._records`) and stamps every span with ``event.time + offset`` in
nanoseconds since the Unix epoch, so spans sit on the wall clock and durations are the
runner's own. Under a virtual clock (:mod:`asyncflow.testing`) durations are virtual too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, Span, Status, StatusCode, Tracer, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        f"asyncflow.otel needs the opentelemetry-api package ({exc}); "
        "install it with: pip install 'asyncflow-dag[otel]'"
    ) from exc

from . import __version__
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
    TaskSucceeded,
    instance_of,
)

__all__ = ["INSTRUMENTATION_NAME", "OpenTelemetryListener"]

INSTRUMENTATION_NAME = "asyncflow"
"""The instrumentation scope name of asyncflow's tracer."""

_P = "asyncflow."


@dataclass(slots=True, kw_only=True)
class _Run:
    """The open spans of one run."""

    run_id: str
    pipeline: str
    offset_ns: int
    """Added to an event's time in nanoseconds: nanoseconds since the Unix epoch."""
    upstream: Mapping[str, tuple[str, ...]]
    span: Span
    tasks: dict[str, Span] = field(default_factory=dict)
    attempts: dict[str, tuple[int, Span]] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    mapped: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """``{expanded mapped task: the upstream tasks it is mapped over}``."""


class OpenTelemetryListener:
    """A run listener that emits OpenTelemetry spans (see the module docstring for the layout).

    Args:
        tracer_provider: the :class:`opentelemetry.trace.TracerProvider` to get the tracer
            from; ``None`` (default) uses the global one (``trace.set_tracer_provider``),
            looked up when the listener is created.

    Pass it in ``listeners=[...]`` of :meth:`Pipeline.run <asyncflow.Pipeline.run>`. Like
    every listener it is called synchronously; it only creates and ends spans (the
    SDK's span processor does the exporting). Spans still open when a run ends (its
    ``RunFinished`` was never seen, say) stay unended; the runner always sends
    ``RunFinished``, also when the run is cancelled.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer: Tracer = trace.get_tracer(
            INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        self._runs: dict[str, _Run] = {}

    def __repr__(self) -> str:
        return f"<OpenTelemetryListener, {len(self._runs)} runs open>"

    def __call__(self, event: Event) -> None:
        """Take one event: open, annotate or end the matching spans."""
        if isinstance(event, RunStarted):
            self._start_run(event)
            return
        run = self._runs.get(event.run_id)
        if run is None:  # a run this listener did not see start
            return
        ns = self._ns(run, event.time)
        if isinstance(event, RunFinished):
            self._finish_run(run, event, ns)
            return
        name: str = getattr(event, "task", "")
        if isinstance(event, TaskMapped):
            run.mapped[name] = event.over
            span = self._task_span(run, name, ns, None, cache_hit=None)
            span.set_attribute(_P + "mapped", True)
            span.set_attribute(_P + "instances", event.count)
            span.set_attribute(_P + "over", list(event.over))
        elif isinstance(event, TaskStarted):
            hit = None if event.cache_key is None else False
            task = self._task_span(run, name, ns, event.cache_key, cache_hit=hit)
            attempt = self._tracer.start_span(
                f"attempt {name}",
                context=trace.set_span_in_context(task),
                attributes=self._base(run, name) | {_P + "attempt": event.attempt},
                start_time=ns,
            )
            run.attempts[name] = (event.attempt, attempt)
            task.set_attribute(_P + "attempts", event.attempt)
        elif isinstance(event, AttemptFailed):
            state = "failed" if event.retry_in is None else "retrying"
            self._end_attempt(run, name, state, ns, event.error, retry_in=event.retry_in)
        elif isinstance(event, TaskSucceeded):
            self._end_attempt(run, name, "succeeded", ns)
            self._end_task(run, name, "succeeded", ns)
        elif isinstance(event, TaskFailed):
            self._end_attempt(run, name, "failed", ns, event.error)  # one still open
            task = self._end_task(run, name, "failed", ns, end=False)
            task.set_attribute(_P + "attempts", event.attempts)
            _set_error(task, event.error, ns)
            task.end(end_time=ns)
        elif isinstance(event, TaskCached):
            span = self._task_span(run, name, ns, event.cache_key, cache_hit=True)
            if name in run.mapped:  # its span opened at TaskMapped: all instances were cached
                span.set_attribute(_P + "cache_hit", True)
                span.set_attribute(_P + "cache_key", event.cache_key)
            self._end_task(run, name, "cached", ns)
        elif isinstance(event, TaskSkipped):
            self._task_span(run, name, ns, None, cache_hit=None)
            self._end_task(run, name, "skipped", ns, reason=event.reason)
        elif isinstance(event, TaskCancelled):
            self._end_attempt(run, name, "cancelled", ns)
            self._task_span(run, name, ns, None, cache_hit=None)
            self._end_task(run, name, "cancelled", ns, reason=event.reason)

    # -- spans --------------------------------------------------------------------------

    @staticmethod
    def _ns(run: _Run, t: float) -> int:
        return run.offset_ns + round(t * 1e9)

    @staticmethod
    def _base(run: _Run, task: str | None = None) -> dict[str, Any]:
        attributes: dict[str, Any] = {_P + "run_id": run.run_id, _P + "pipeline": run.pipeline}
        if task is not None:
            attributes[_P + "task"] = task
        return attributes

    def _start_run(self, event: RunStarted) -> None:
        offset_ns = time.time_ns() - round(event.time * 1e9)
        run = _Run(
            run_id=event.run_id,
            pipeline=event.pipeline,
            offset_ns=offset_ns,
            upstream=dict(event.upstream),
            span=trace.INVALID_SPAN,
        )
        run.span = self._tracer.start_span(
            f"run {event.pipeline}",
            attributes=self._base(run) | {_P + "tasks": event.tasks},
            start_time=self._ns(run, event.time),
        )
        self._runs[event.run_id] = run

    def _finish_run(self, run: _Run, event: RunFinished, ns: int) -> None:
        del self._runs[run.run_id]
        for _, span in run.attempts.values():  # none are left open by the runner; be safe
            span.end(end_time=ns)
        for name, span in run.tasks.items():
            if name not in run.ended:
                span.end(end_time=ns)
        counts = {state.value: n for state, n in event.counts.items()}
        state = (
            "ok" if event.ok else "failed" if counts.get("failed") or counts.get("skipped") else "cancelled"
        )
        run.span.set_attribute(_P + "state", state)
        for key, n in counts.items():
            run.span.set_attribute(f"{_P}count.{key}", n)
        if not event.ok:
            summary = ", ".join(f"{n} {key}" for key, n in counts.items())
            run.span.set_status(Status(StatusCode.ERROR, f"run {state}: {summary}"))
        run.span.end(end_time=ns)

    def _task_span(
        self, run: _Run, name: str, ns: int, cache_key: str | None, *, cache_hit: bool | None
    ) -> Span:
        span = run.tasks.get(name)
        if span is None:
            parent = run.span
            upstream = run.upstream.get(name, ())
            instance = instance_of(name) if run.mapped else None
            if instance is not None and instance[0] in run.tasks:
                mapped, k = instance
                parent = run.tasks[mapped]
                over = run.mapped.get(mapped, ())
                upstream = tuple(
                    f"{up}[{k}]" if up in over and up in run.mapped else up
                    for up in run.upstream.get(mapped, ())
                )
            links = [
                Link(run.tasks[up].get_span_context(), {_P + "upstream": up})
                for up in upstream
                if up in run.tasks
            ]
            attributes = self._base(run, name)
            if cache_hit is not None:
                attributes[_P + "cache_hit"] = cache_hit
            if cache_key is not None:
                attributes[_P + "cache_key"] = cache_key
            span = run.tasks[name] = self._tracer.start_span(
                f"task {name}",
                context=trace.set_span_in_context(parent),
                attributes=attributes,
                links=links,
                start_time=ns,
            )
        return span

    def _end_task(
        self, run: _Run, name: str, state: str, ns: int, *, reason: str | None = None, end: bool = True
    ) -> Span:
        span = self._task_span(run, name, ns, None, cache_hit=None)
        span.set_attribute(_P + "state", state)
        if reason is not None:
            span.set_attribute(_P + "reason", reason)
        run.ended.add(name)
        if end:
            span.end(end_time=ns)
        return span

    def _end_attempt(
        self,
        run: _Run,
        name: str,
        state: str,
        ns: int,
        error: BaseException | None = None,
        *,
        retry_in: float | None = None,
    ) -> None:
        open_attempt = run.attempts.pop(name, None)
        if open_attempt is None:
            return
        _, span = open_attempt
        span.set_attribute(_P + "state", state)
        if retry_in is not None:
            span.set_attribute(_P + "retry_delay_s", retry_in)
        if error is not None:
            _set_error(span, error, ns)
        span.end(end_time=ns)


def _set_error(span: Span, error: BaseException, ns: int) -> None:
    """Mark ``span`` failed with ``error``: attributes, an exception event, status ERROR."""
    span.set_attribute(_P + "error.type", type(error).__name__)
    span.set_attribute(_P + "error.message", str(error))
    span.record_exception(error, timestamp=ns, escaped=True)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))

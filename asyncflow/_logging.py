"""Logging: a listener that turns run events into loguru records.

The library never adds a sink: ``asyncflow/__init__.py`` calls ``logger.disable("asyncflow")``
as loguru advises for libraries, so an embedding application sees nothing until it calls
``logger.enable("asyncflow")``. Every record carries ``run_id`` and ``task`` in
``record["extra"]`` (``task`` is ``"-"`` for run-level lines).

Only the command line adds sinks (:mod:`asyncflow._log_sinks`); with only those, the
routine lines go to loguru in batches (:mod:`asyncflow._log_batch`).
"""

from __future__ import annotations

from loguru import logger

from ._context import sink_failed
from ._events import (
    AttemptFailed,
    Event,
    Listener,
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
from ._log_batch import LEVELS, ROUTINE, LineBatch, batching_sinks_only, routine_message

__all__ = ["LogListener"]

_LEVELS: dict[type[Event], int] = {
    **LEVELS,  # the routine lines': TaskStarted DEBUG, TaskSucceeded and TaskCached INFO
    TaskMapped: 20,
    RunStarted: 20,
    RunFinished: 20,
    AttemptFailed: 30,
    TaskSkipped: 30,
    TaskCancelled: 30,
    TaskFailed: 40,
}
"""The lowest loguru level each event may be logged at (DEBUG 10, INFO 20, WARNING 30, ERROR 40)."""
_QUEUED = frozenset(ROUTINE)


def _wanted(level: int) -> bool:
    """Whether a record of ``level`` from asyncflow would reach any loguru sink.

    Asks loguru's core the three questions its own ``_log`` asks (is there a handler, is
    the level at or above the lowest handler's, is ``asyncflow`` enabled), so that a run
    with logging disabled (the library default) or with no DEBUG sink pays nothing per
    event. Should loguru's internals change, it answers ``True`` and loguru decides.
    """
    try:
        core = logger._core  # type: ignore[attr-defined]
        if not core.handlers or level < core.min_level:
            return False
        enabled = core.enabled.get(__name__)
        if enabled is None:
            dotted = __name__ + "."
            enabled = next((on for prefix, on in core.activation_list if dotted.startswith(prefix)), True)
        return bool(enabled)
    except AttributeError:  # pragma: no cover - another loguru
        return True


class LogListener:
    """An event listener that logs each event through loguru (module ``asyncflow``).

    Levels: attempts started DEBUG; successes, cache hits, a mapped task's expansion
    (``mapped over urls: 200 instances``) and run start INFO; failed attempts that will be
    retried WARNING; task failures ERROR (with the traceback); skips and cancellations
    WARNING; the run's end INFO when ok, else ERROR.

    A mapped task (see :func:`~asyncflow.each`) ends in words about its instances
    (``all 200 instances done in 1.234 s: 197 succeeded, 3 cached``; ``failed:
    MappingError: ...``), not about attempts it never made. One listener serves one run.

    Args:
        batch: where the routine lines (an attempt started, a task succeeded or was
            cached) are queued, to reach loguru in batches; ``None`` (the default): each
            line is a record of its own. See :meth:`for_run`.
    """

    def __init__(self, batch: LineBatch | None = None) -> None:
        self._groups: dict[str, list[int]] = {}
        """``{expanded mapped task: [instances succeeded, instances cached, instances]}``."""
        self._batch = batch
        self._fast: set[type[Event]] = set()
        """The event types :attr:`listen` queues without a call: the batch's, once it has
        a line, and while no mapped task is expanded (then each line is counted first)."""
        self.listen: Listener = self.__call__ if batch is None else batch.listener(self._fast, self.__call__)
        """The fastest way to call this listener: with a batch, a function that queues a
        routine line itself and hands any other event to :meth:`__call__`."""

    @classmethod
    def for_run(cls, run_id: str) -> LogListener:
        """The listener of run ``run_id``: batching its routine lines when every loguru
        sink is one of the command line's (they render batches), else not. Call
        :meth:`close` when the run ends."""
        lowest = batching_sinks_only()
        return cls(LineBatch(run_id, lowest) if lowest is not None else None)

    def close(self) -> None:
        """Hand the lines still queued to loguru (the run ended); stop the batch's thread."""
        if self._batch is not None:
            self._batch.close()

    @staticmethod
    def wanted() -> bool:
        """Whether any event of a run would be logged now: asyncflow is enabled in loguru
        and some sink takes ERROR records. When not, a run adds no log listener at all,
        so no event is even built (the embedded default costs nothing)."""
        return _wanted(40)

    def __call__(self, event: Event) -> None:
        """Log ``event``; a loguru sink that raises (``catch=False``) drops the line, never
        the run (see :func:`asyncflow._context.sink_failed`)."""
        try:
            self._log(event)
        except Exception as exc:
            sink_failed(exc)

    def _log(self, event: Event) -> None:
        group: list[int] | None = None  # when a mapped task ends: its instances' counts
        if isinstance(event, TaskMapped):  # counted whatever the level: the summary line needs it
            self._groups[event.task] = [0, 0, event.count]
            self._fast.clear()
        elif self._groups and isinstance(event, TaskSucceeded | TaskCached | TaskFailed | TaskSkipped):
            group = self._groups.pop(event.task, None)
            parent = instance_of(event.task) if group is None else None
            counted = None if parent is None else self._groups.get(parent[0])
            if counted is not None and isinstance(event, TaskSucceeded | TaskCached):
                counted[0 if isinstance(event, TaskSucceeded) else 1] += 1
        batch = self._batch
        if batch is not None and group is None and type(event) in _QUEUED:  # a routine line
            if type(event) in batch.queued:  # (else below every sink's level)
                batch.add(event)
                if not self._groups:
                    self._fast.update(batch.queued)  # the next ones go straight to the batch
            return
        level = _LEVELS.get(type(event), 40)
        if not _wanted(level):
            return  # no sink would keep the line: build nothing (the default when embedded)
        task = getattr(event, "task", "-")
        if batch is not None:
            batch.sync(event.time)
            batch.flush()  # what is queued comes first
        log = logger.bind(run_id=event.run_id, task=task)
        if isinstance(event, TaskStarted):
            log.debug(routine_message(event))
        elif isinstance(event, TaskMapped):
            over = " and ".join(event.over)
            log.info("mapped over {}: {}", over, _instances(event.count))
        elif isinstance(event, TaskSucceeded) and group is not None:
            succeeded, cached, count = group
            if count == 0:
                log.info("succeeded with no instances (an empty list)")
            elif cached:
                log.info(
                    "{} done in {:.3f} s: {} succeeded, {} cached",
                    _all(count),
                    event.duration,
                    succeeded,
                    cached,
                )
            else:
                log.info("{} succeeded in {:.3f} s", _all(count), event.duration)
        elif isinstance(event, TaskSucceeded):
            log.info(routine_message(event))
        elif isinstance(event, TaskCached) and group is not None:
            log.info("cached ({} cached)", _all(group[2]))
        elif isinstance(event, TaskCached):
            log.info(routine_message(event))
        elif isinstance(event, AttemptFailed):
            error = f"{type(event.error).__name__}: {event.error}"
            if event.retry_in is not None:
                log.warning(
                    "attempt {} failed ({}); retrying in {:.3f} s", event.attempt, error, event.retry_in
                )
            else:
                log.warning("attempt {} failed ({})", event.attempt, error)
        elif isinstance(event, TaskFailed) and event.attempts == 0:  # before any attempt, or a mapped task
            raised = event.error.__traceback__ is not None  # a mapped task's MappingError was never raised
            log.opt(exception=event.error if raised else None).error(
                "failed: {}: {}", type(event.error).__name__, event.error
            )
        elif isinstance(event, TaskFailed):
            log.opt(exception=event.error).error(
                "failed after {} attempt{}: {}: {}",
                event.attempts,
                "" if event.attempts == 1 else "s",
                type(event.error).__name__,
                event.error,
            )
        elif isinstance(event, TaskSkipped):
            log.warning("skipped: {}", event.reason)
        elif isinstance(event, TaskCancelled):
            log.warning("cancelled: {}", event.reason)
        elif isinstance(event, RunStarted):
            tasks = f"{event.tasks} task{'' if event.tasks == 1 else 's'}"
            log.info("run {} of pipeline {!r} started ({})", event.run_id, event.pipeline, tasks)
        elif isinstance(event, RunFinished):
            counts = ", ".join(f"{n} {s.value}" for s, n in event.counts.items())
            log.log(
                "INFO" if event.ok else "ERROR",
                "run {} finished in {:.3f} s: {}",
                event.run_id,
                event.duration,
                counts,
            )


def _instances(n: int) -> str:
    return f"{n} instance{'' if n == 1 else 's'}"


def _all(n: int) -> str:
    return "its 1 instance" if n == 1 else f"all {n} instances"

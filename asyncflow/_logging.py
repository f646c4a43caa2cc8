"""Logging: a listener that turns run events into loguru records, and the CLI's sinks.

The library never adds a sink: ``asyncflow/__init__.py`` calls ``logger.disable("asyncflow")``
as loguru advises for libraries, so an embedding application sees nothing until it calls
``logger.enable("asyncflow")``. Every record carries ``run_id`` and ``task`` in
``record["extra"]`` (``task`` is ``"-"`` for run-level lines).

Only the command line calls :func:`add_cli_sinks`.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from ._context import sink_failed
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

__all__ = ["CONSOLE_FORMAT", "FILE_FORMAT", "LogFile", "LogListener", "add_cli_sinks", "log_file_failure"]

CONSOLE_FORMAT = (
    "<green>{extra[clock]}</green> <level>{level: <7}</level> <cyan>{extra[task]}</cyan> {message}"
)
"""The console line: ``HH:MM:SS.mmm LEVEL task message`` (``clock`` is set by the sink's
format function, see :func:`_console_format`)."""
FILE_FORMAT = "{extra[stamp]} {level: <7} run={extra[run_id]} task={extra[task]} {message}"
"""The ``run.log`` line: ISO 8601 time to the millisecond with the UTC offset
(``2026-12-02T15:09:10.123+00:00``), level, run id, task, message."""


def _console_format(record: Any) -> str:
    """The console sink's format: the clock, made with one f-string (loguru's own
    ``{time:HH:mm:ss.SSS}`` formatter cost about 8 µs a line, more than the rest of it).

    A callable format gets no ``{exception}`` appended: one line on the console;
    tracebacks go to the log file.
    """
    t = record["time"]
    record["extra"]["clock"] = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond // 1000:03d}"
    return CONSOLE_FORMAT + "\n"


def _file_format(record: Any) -> str:
    """The log file's format: the time by ``datetime.isoformat`` (the same text as loguru's
    ``{time:YYYY-MM-DDTHH:mm:ss.SSSZZ}``, at a fraction of its cost), then the traceback."""
    record["extra"]["stamp"] = record["time"].isoformat(timespec="milliseconds")
    return FILE_FORMAT + "\n{exception}"


_LEVELS: dict[type[Event], int] = {
    TaskStarted: 10,
    TaskSucceeded: 20,
    TaskCached: 20,
    TaskMapped: 20,
    RunStarted: 20,
    RunFinished: 20,
    AttemptFailed: 30,
    TaskSkipped: 30,
    TaskCancelled: 30,
    TaskFailed: 40,
}
"""The lowest loguru level each event may be logged at (DEBUG 10, INFO 20, WARNING 30, ERROR 40)."""


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
    """

    def __init__(self) -> None:
        self._groups: dict[str, list[int]] = {}
        """``{expanded mapped task: [instances succeeded, instances cached, instances]}``."""

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
        elif self._groups and isinstance(event, TaskSucceeded | TaskCached | TaskFailed | TaskSkipped):
            group = self._groups.pop(event.task, None)
            parent = instance_of(event.task) if group is None else None
            counted = None if parent is None else self._groups.get(parent[0])
            if counted is not None and isinstance(event, TaskSucceeded | TaskCached):
                counted[0 if isinstance(event, TaskSucceeded) else 1] += 1
        if not _wanted(_LEVELS.get(type(event), 40)):
            return  # no sink would keep the line: build nothing (the default when embedded)
        task = getattr(event, "task", "-")
        log = logger.bind(run_id=event.run_id, task=task)
        if isinstance(event, TaskStarted):
            log.debug("attempt {} started", event.attempt)
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
            log.info("succeeded on attempt {} in {:.3f} s", event.attempt, event.duration)
        elif isinstance(event, TaskCached) and group is not None:
            log.info("cached ({} cached)", _all(group[2]))
        elif isinstance(event, TaskCached):
            log.info("cached (checkpoint matches cache key {}…)", event.cache_key[:12])
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
            log.info("run {} of pipeline {!r} started ({} tasks)", event.run_id, event.pipeline, event.tasks)
        elif isinstance(event, RunFinished):
            counts = ", ".join(f"{n} {s.value}" for s, n in event.counts.items())
            level = "INFO" if event.ok else "ERROR"
            log.log(level, "run {} finished in {:.3f} s: {}", event.run_id, event.duration, counts)


def _instances(n: int) -> str:
    return f"{n} instance{'' if n == 1 else 's'}"


def _all(n: int) -> str:
    return "its 1 instance" if n == 1 else f"all {n} instances"


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the write, so that a later
    redirection is followed (a live progress display prints log lines above itself)."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class LogFile:
    """A loguru sink that appends to one file, and that a full disk cannot break.

    The file (and its missing parent folders) appear with the first line, so a run that
    never starts leaves no empty log behind. When a write fails (``ENOSPC``, ``EIO``, a
    removed folder), the sink stops writing, keeps the error in :attr:`failure`, and
    removes what it created if nothing was written: no loguru "Logging error" traceback,
    no empty ``run.log`` to point at.

    Args:
        path: the log file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failure: OSError | None = None
        """The error that stopped this sink, or ``None``."""
        self._file: TextIO | None = None
        self._created: list[Path] = []
        self._written = False

    def write(self, message: str) -> None:
        """Append ``message`` and flush; after a failure, do nothing."""
        if self.failure is not None:
            return
        try:
            if self._file is None:
                missing = [p for p in reversed(self.path.parents) if not p.exists()]
                for folder in missing:
                    folder.mkdir()
                    self._created.append(folder)
                if not self.path.exists():
                    self._created.append(self.path)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            self._file.write(message)
            self._file.flush()
            self._written = True
        except OSError as exc:
            self.failure = exc
            self._abandon()

    def _abandon(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._written:
            return
        for created in reversed(self._created):  # the file first, then its folders
            with contextlib.suppress(OSError):
                created.unlink() if created == self.path else created.rmdir()

    def stop(self) -> None:
        """Close the file (loguru calls this when the sink is removed)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


_log_file: LogFile | None = None


def log_file_failure() -> OSError | None:
    """Why the command line's log file could not be written (``None``: it could, or none)."""
    return _log_file.failure if _log_file is not None else None


def add_cli_sinks(*, level: str, log_file: Path | None, json_lines: bool = False) -> list[int]:
    """Enable asyncflow's logging and add the command line's sinks.

    Removes loguru's default sink, then adds stderr at ``level`` (colored when stderr is a
    terminal; tracebacks are left to the log file) and, if ``log_file`` is given, a
    DEBUG-level file sink with full tracebacks.

    Args:
        level: a loguru level name for the console, e.g. ``"INFO"``.
        log_file: the per-run log file, or ``None``.
        json_lines: write the console sink as loguru's JSON serialization.

    Returns:
        the ids of the added sinks, for ``logger.remove``.

    Raises:
        ValueError: ``level`` is not a loguru level name.
    """
    logger.enable("asyncflow")
    logger.remove()
    logger.configure(extra={"run_id": "-", "task": "-"})

    ids = [
        logger.add(
            _CurrentStderr(),
            level=level,
            format=_console_format if not json_lines else "{message}",
            colorize=None if not json_lines else False,
            serialize=json_lines,
            backtrace=False,
            diagnose=False,
        )
    ]
    global _log_file
    _log_file = None
    if log_file is not None:
        # A LogFile: it appears with the first line, so a run that never starts (refused
        # by the workdir lock, say) leaves no empty log behind, and a full disk stops it
        # quietly (see log_file_failure) instead of a traceback per line.
        _log_file = LogFile(log_file)
        ids.append(
            logger.add(
                _log_file,
                level="DEBUG",
                format=_file_format,
                backtrace=False,
                diagnose=False,
                colorize=False,
            )
        )
    return ids

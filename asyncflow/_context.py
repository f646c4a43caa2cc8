"""The run context a task receives when it declares a ``context`` parameter."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunContext", "TaskLogger", "log_safely", "sink_failed", "task_logger"]

_sink_failure_reported = False


def sink_failed(exc: BaseException) -> None:
    """Note that a loguru sink raised ``exc`` (one added with ``catch=False``) while asyncflow
    logged: logging never breaks a run, so the line is dropped. Says so on ``sys.stderr``
    once per process, as loguru itself does for a sink that fails with ``catch=True``."""
    global _sink_failure_reported
    if _sink_failure_reported:
        return
    _sink_failure_reported = True
    with contextlib.suppress(Exception):  # stderr itself is gone: nothing left to tell
        print(
            f"asyncflow: a loguru sink raised {type(exc).__name__}: {exc}; the log lines it "
            "could not take are dropped and the run goes on (add the sink with catch=True "
            "to see each failure)",
            file=sys.stderr,
        )


def log_safely(bound: Any, level: str, message: str, *args: Any, exception: Any = None) -> None:
    """Log ``message`` (loguru ``{}`` formatting with ``args``) at ``level`` through the bound
    loguru logger ``bound``, attributed to the caller; a sink that raises is reported by
    :func:`sink_failed`, never raised. ``exception``: as loguru's ``opt(exception=...)``."""
    try:
        bound.opt(depth=1, exception=exception).log(level, message, *args)
    except Exception as exc:
        sink_failed(exc)


class TaskLogger:
    """The logger a task gets as ``context.logger``: loguru's, bound to the run and task.

    Its methods are loguru's (``trace``, ``debug``, ``info``, ``success``, ``warning``,
    ``error``, ``critical``, ``exception``, ``log``, ``bind``), with loguru's ``{}``
    formatting. Records carry ``run_id`` and ``task`` in ``record["extra"]`` and are
    emitted from the ``asyncflow`` module, so they follow asyncflow's logging switch like
    the runner's own lines: silent in an application until it calls
    ``logger.enable("asyncflow")``, shown by the command line. A sink that raises (added
    with ``catch=False``) never fails the task: the line is dropped (see :func:`sink_failed`).
    """

    __slots__ = ("_logger",)

    def __init__(self, bound: Any) -> None:
        self._logger = bound

    def trace(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at TRACE level."""
        try:
            self._logger.trace(message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at DEBUG level."""
        try:
            self._logger.debug(message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at INFO level."""
        try:
            self._logger.info(message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def success(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at SUCCESS level."""
        try:
            self._logger.success(message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at WARNING level."""
        try:
            self._logger.warning(message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at ERROR level."""
        try:
            self._logger.error(message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def critical(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at CRITICAL level."""
        try:
            self._logger.critical(message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at ERROR level with the exception being handled."""
        try:
            self._logger.exception(message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def log(self, level: int | str, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at ``level`` (a loguru level name or number)."""
        try:
            self._logger.log(level, message, *args, **kwargs)
        except Exception as exc:
            sink_failed(exc)

    def bind(self, **extra: Any) -> TaskLogger:
        """A logger that also adds ``extra`` to ``record["extra"]``."""
        return TaskLogger(self._logger.bind(**extra))


def task_logger(run_id: str, task: str) -> TaskLogger:
    """The :class:`TaskLogger` of ``task`` in run ``run_id``."""
    from loguru import logger

    return TaskLogger(logger.bind(run_id=run_id, task=task))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunContext:
    """Facts about the current run, for a task that declares ``context``.

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        task: the name of the task receiving this context.
        attempt: the number of the current attempt, starting at 1.
        workdir: the run's working directory (created before the first task starts); write
            outputs such as reports here.
        params: the run's parameters (read-only).
        logger: a :class:`TaskLogger`: loguru's logger bound with ``run_id`` and ``task``;
            silent until the application enables ``"asyncflow"`` logging (the command
            line does).
    """

    run_id: str
    pipeline: str
    task: str
    attempt: int
    workdir: Path
    params: Mapping[str, Any]
    logger: TaskLogger

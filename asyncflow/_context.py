"""The run context a task receives when it declares a ``context`` parameter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunContext", "TaskLogger", "task_logger"]


class TaskLogger:
    """The logger a task gets as ``context.logger``: loguru's, bound to the run and task.

    Its methods are loguru's (``trace``, ``debug``, ``info``, ``success``, ``warning``,
    ``error``, ``critical``, ``exception``, ``log``, ``bind``), with loguru's ``{}``
    formatting. Records carry ``run_id`` and ``task`` in ``record["extra"]`` and are
    emitted from the ``asyncflow`` module, so they follow asyncflow's logging switch like
    the runner's own lines: silent in an application until it calls
    ``logger.enable("asyncflow")``, shown by the command line.
    """

    __slots__ = ("_logger",)

    def __init__(self, bound: Any) -> None:
        self._logger = bound

    def trace(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at TRACE level."""
        self._logger.trace(message, *args, **kwargs)

    def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at DEBUG level."""
        self._logger.debug(message, *args, **kwargs)

    def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at INFO level."""
        self._logger.info(message, *args, **kwargs)

    def success(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at SUCCESS level."""
        self._logger.success(message, *args, **kwargs)

    def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at WARNING level."""
        self._logger.warning(message, *args, **kwargs)

    def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at ERROR level."""
        self._logger.error(message, *args, **kwargs)

    def critical(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at CRITICAL level."""
        self._logger.critical(message, *args, **kwargs)

    def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at ERROR level with the exception being handled."""
        self._logger.exception(message, *args, **kwargs)

    def log(self, level: int | str, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message`` at ``level`` (a loguru level name or number)."""
        self._logger.log(level, message, *args, **kwargs)

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

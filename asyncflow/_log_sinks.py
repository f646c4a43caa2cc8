"""The command line's loguru sinks: the console and the run's ``run.log``.

Only the command line calls :func:`add_cli_sinks`. Both sinks render the batches of
routine lines :mod:`asyncflow._log_batch` hands to loguru, line by line, in the text a
record of each line's own would have.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from ._log_batch import Line, flush_queued, register_sinks

__all__ = ["CONSOLE_FORMAT", "FILE_FORMAT", "LogFile", "add_cli_sinks", "log_file_failure"]

CONSOLE_FORMAT = (
    "<green>{extra[clock]}</green> <level>{level: <7}</level> <cyan>{extra[task]}</cyan> {message}"
)
"""The console line: ``HH:MM:SS.mmm LEVEL task message`` (``clock`` is set by the sink's
format function, see :func:`_console_format`)."""
FILE_FORMAT = "{extra[stamp]} {level: <7} run={extra[run_id]} task={extra[task]} {message}"
"""The ``run.log`` line: ISO 8601 time to the millisecond with the UTC offset
(``2026-12-02T15:09:10.123+00:00``), level, run id, task, message."""


def _clock(t: datetime) -> str:
    return f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond // 1000:03d}"


# The ANSI codes loguru writes for the console format's markup: <green>, <cyan>, and
# <level> for DEBUG (<blue><bold>) and INFO (<bold>), the levels of batched lines.
_GREEN, _CYAN, _RESET = "\x1b[32m", "\x1b[36m", "\x1b[0m"
_LEVEL_COLOR = {10: "\x1b[34m\x1b[1m", 20: "\x1b[1m"}


def _console_text(batch: list[Line], min_level: int) -> str:
    return "".join([f"{c} {n} {t} {m}\n" for _, c, level, n, t, m in batch if level >= min_level])


def _console_text_colored(batch: list[Line], min_level: int) -> str:
    g, y, r, colors = _GREEN, _CYAN, _RESET, _LEVEL_COLOR
    return "".join(
        [
            f"{g}{c}{r} {colors[level]}{n}{r} {y}{t}{r} {m}\n"
            for _, c, level, n, t, m in batch
            if level >= min_level
        ]
    )


def _file_text(batch: list[Line], run_id: str) -> str:
    run = f"run={run_id} task="
    return "".join([f"{s} {n} {run}{t} {m}\n" for s, _, _, n, t, m in batch])


def _console_format(min_level: int, colored: bool) -> Callable[[Any], str]:
    """The console sink's format for ``min_level`` (a loguru level number): the clock made
    with one f-string (loguru's own ``{time:HH:mm:ss.SSS}`` cost about 8 µs a line, more
    than the rest of it); a batch of lines (see :mod:`asyncflow._log_batch`) rendered
    line by line, in the same text and colors.

    A callable format gets no ``{exception}`` appended: one line on the console;
    tracebacks go to the log file.
    """
    text = _console_text_colored if colored else _console_text

    def console_format(record: Any) -> str:
        extra = record["extra"]
        batch = extra.get("batch")
        if batch is not None:
            extra["text"] = text(batch, min_level)
            return "{extra[text]}"
        extra["clock"] = _clock(record["time"])
        return CONSOLE_FORMAT + "\n"

    return console_format


def _file_format(record: Any) -> str:
    """The log file's format: the time by ``datetime.isoformat`` (the same text as loguru's
    ``{time:YYYY-MM-DDTHH:mm:ss.SSSZZ}``, at a fraction of its cost), then the traceback;
    a batch of lines rendered line by line, in the same text."""
    extra = record["extra"]
    batch = extra.get("batch")
    if batch is not None:
        extra["text"] = _file_text(batch, extra["run_id"])
        return "{extra[text]}"
    extra["stamp"] = record["time"].isoformat(timespec="milliseconds")
    return FILE_FORMAT + "\n{exception}"


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
    # The patcher writes the queued routine lines before any other record (see
    # asyncflow._log_batch), so that a task's own lines follow its "attempt started".
    logger.configure(extra={"run_id": "-", "task": "-"}, patcher=flush_queued if not json_lines else None)

    stream = _CurrentStderr()
    colored = not json_lines and stream.isatty()  # what loguru decides for this stream
    ids = [
        logger.add(
            stream,
            level=level,
            format=_console_format(logger.level(level).no, colored) if not json_lines else "{message}",
            colorize=colored,
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
    register_sinks(ids if not json_lines else ())  # JSON lines: one record per line, unbatched
    return ids

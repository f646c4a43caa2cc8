"""The command line's loguru sinks: the console and the run's ``run.log``.

Only the command line calls :func:`add_cli_sinks`. Both sinks write the batches of
routine lines :mod:`asyncflow._log_batch` hands to loguru: :func:`batch_renderer` writes
each line of a batch, in the text a record of the line's own would have.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from loguru import logger

from ._events import Event, TaskStarted, TaskSucceeded
from ._log_batch import CACHED, STARTED, SUCCEEDED, Render, flush_queued, register_sinks
from ._progress import stderr_is_terminal

__all__ = [
    "CONSOLE_FORMAT",
    "FILE_FORMAT",
    "BatchText",
    "LogFile",
    "add_cli_sinks",
    "batch_renderer",
    "log_file_failure",
]

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


class BatchText(NamedTuple):
    """A batch of routine lines as the CLI's sinks write them (``extra["batch"]`` of the
    batch's record): each a ``str`` of whole lines, each line ending in a newline."""

    console: str
    """The lines at or above the console's level, as :data:`CONSOLE_FORMAT` writes them."""
    file: str
    """Every line, as :data:`FILE_FORMAT` writes them (empty when there is no log file)."""


def batch_renderer(console_level: int, *, colored: bool, file: bool) -> Render:
    """The :data:`~asyncflow._log_batch.Render` of the CLI's sinks: one pass over a batch's
    events writes the console's lines (those at or above ``console_level``, a loguru level
    number; ``colored``: with loguru's ANSI codes for the format's markup) and, if
    ``file``, the log file's, as :class:`BatchText`.

    Lines of the same millisecond share the text before their task (time, level, run id),
    made once (``datetime.isoformat`` was a third of the cost of a line): events come in
    the run's clock order, so a line reuses the text until its time reaches the next
    millisecond's, one comparison per line. A line's time is rounded to the microsecond
    first, as ``datetime`` rounds loguru's own record times. The messages are
    :mod:`asyncflow._log_batch`'s, as a record of the line's own has them.
    """
    g, y, r, colors = _GREEN, _CYAN, _RESET, _LEVEL_COLOR
    debug_console, info_console = console_level <= 10, console_level <= 20

    def render(events: list[Event], offset: float, run_id: str) -> tuple[str, BatchText]:
        zone = datetime.now().astimezone().tzinfo  # as loguru's own record times
        run = f"run={run_id} task="
        console: list[str] = []
        written: list[str] = []
        say, write = console.append, written.append
        started, succeeded, cached = STARTED, SUCCEEDED, CACHED
        first_started, first_instant = STARTED % 1, SUCCEEDED % (1, 0.0)
        start, end, top = 0.0, -1.0, 10
        file_debug = file_info = console_debug = console_info = ""
        for event in events:
            now = event.time
            if not start <= now < end:  # another millisecond (in the run's clock)
                wall = now + offset
                ms = round(wall * 1e6) // 1000
                stamp = datetime.fromtimestamp(wall, zone).isoformat(timespec="milliseconds")
                clock = stamp[11:23]  # HH:MM:SS.mmm
                start, end = (ms - 0.0005) / 1000 - offset, (ms + 0.9995) / 1000 - offset
                file_debug, file_info = f"{stamp} DEBUG   {run}", f"{stamp} INFO    {run}"
                if colored:
                    console_debug = f"{g}{clock}{r} {colors[10]}DEBUG  {r} {y}"
                    console_info = f"{g}{clock}{r} {colors[20]}INFO   {r} {y}"
                else:
                    console_debug, console_info = f"{clock} DEBUG   ", f"{clock} INFO    "
            task = event.task  # type: ignore[attr-defined]
            # Most lines of a wide fan-out are about first attempts of tasks under half a
            # millisecond: their messages are made once (a float's text is the costliest
            # part of a line).
            if type(event) is TaskStarted:
                attempt = event.attempt
                message = first_started if attempt == 1 else started % attempt
                file_head, console_head, to_console = file_debug, console_debug, debug_console
            else:
                if type(event) is TaskSucceeded:
                    attempt, duration = event.attempt, event.duration
                    if attempt == 1 and 0.0 <= duration < 0.0005:  # what "%.3f" writes as 0.000
                        message = first_instant
                    else:
                        message = succeeded % (attempt, duration)
                else:
                    message = cached % event.cache_key[:12]  # type: ignore[attr-defined]
                file_head, console_head, to_console, top = file_info, console_info, info_console, 20
            line = f"{task} {message}\n"
            if file:
                write(file_head)
                write(line)
            if to_console:
                say(console_head)
                say(f"{task}{r} {message}\n" if colored else line)
        return ("INFO" if top == 20 else "DEBUG"), BatchText("".join(console), "".join(written))

    return render


def _console_format(record: Any) -> str:
    """The console sink's format: the clock made with one f-string (loguru's own
    ``{time:HH:mm:ss.SSS}`` cost about 8 µs a line, more than the rest of it); a batch of
    lines (see :mod:`asyncflow._log_batch`) as :func:`batch_renderer` wrote them.

    A callable format gets no ``{exception}`` appended: one line on the console;
    tracebacks go to the log file.
    """
    extra = record["extra"]
    batch = extra.get("batch")
    if batch is not None:
        extra["text"] = batch.console
        return "{extra[text]}"
    extra["clock"] = _clock(record["time"])
    return CONSOLE_FORMAT + "\n"


def _file_format(record: Any) -> str:
    """The log file's format: the time by ``datetime.isoformat`` (the same text as loguru's
    ``{time:YYYY-MM-DDTHH:mm:ss.SSSZZ}``, at a fraction of its cost), then the traceback;
    a batch of lines as :func:`batch_renderer` wrote them."""
    extra = record["extra"]
    batch = extra.get("batch")
    if batch is not None:
        extra["text"] = batch.file
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
    terminal that takes control characters, see
    :func:`asyncflow._progress.stderr_is_terminal`, and ``NO_COLOR`` is unset or empty;
    tracebacks are left to the log file) and, if ``log_file`` is given, a
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
    # Colors on a terminal that takes them (as the live display decides), unless NO_COLOR
    # is set (https://no-color.org: present and not empty).
    colored = not json_lines and stderr_is_terminal() and not os.environ.get("NO_COLOR")
    ids = [
        logger.add(
            stream,
            level=level,
            format=_console_format if not json_lines else "{message}",
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
    if json_lines:
        register_sinks(())  # JSON lines: one record per line, unbatched
    else:
        render = batch_renderer(logger.level(level).no, colored=colored, file=log_file is not None)
        register_sinks(ids, render)
    return ids

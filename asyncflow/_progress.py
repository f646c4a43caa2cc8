"""Live progress on a terminal: an event listener that draws the run with ``rich``.

:class:`ProgressDisplay` learns everything from the run's events. It keeps a few counters
and the set of running tasks (O(1) per event, under a lock) and lets ``rich.live.Live``
redraw them from its own refresh thread, a few times a second::

    ⠹ prices  7/12 tasks done  ━━━━━━━━━━━━━━━━━━━━━━━━━╺━━━━━━━━━━━━━━  1.4 s
      6 succeeded · 1 cached · 0 failed · 0 skipped · 1 retry
      running (3): fit_AAPL 0.4 s · fit_AMZN (attempt 2) 0.1 s · clean_IBM 0.0 s
      ! fit_GOOG attempt 1 failed (ValueError: no data); retrying in 0.20 s

Mapped tasks (see :func:`~asyncflow.each`) count by their instances. Until it is expanded,
a mapped task counts as one task of the total (:attr:`RunStarted.tasks
<asyncflow.RunStarted>` counts it once); at :class:`~asyncflow.TaskMapped` it is replaced
by its instances (the total grows by their number less one), each of which counts as one
task, and its own final event (the summary of its instances) is not counted again. A
mapped task that never expands (skipped, cancelled, or failed on a result that is not a
list) counts as the one task it is. So ``done`` reaches ``total`` when the run ends,
and the counts per state are those of :attr:`RunResult.counts <asyncflow.RunResult.counts>`.
While instances run, a line shows each open mapped task's progress::

      mapped: fetch 140/200 · parse 96/200

While it is live, whatever is written to ``sys.stderr`` (the command line's log lines)
and, when it is a terminal, ``sys.stdout`` is printed above it. The command line uses it
only when stderr is a terminal; elsewhere (CI, pipes) it logs plain lines instead.

``rich`` is imported when a display is created, not when asyncflow is imported, so that
``import asyncflow`` and ``python -m asyncflow --help`` stay fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

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
    TaskState,
    TaskSucceeded,
    instance_of,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["ProgressDisplay", "terminal_display"]

_SHOWN_RUNNING = 6
"""Running tasks named on the display; the rest are counted."""
_SHOWN_NOTES = 4
"""Retries and failures kept on the display, the newest last."""
_SHOWN_MAPPED = 4
"""Open mapped tasks whose progress is shown (the earliest expanded); the rest are counted."""


class ProgressDisplay:
    """A listener that shows a run's progress live on a terminal, with ``rich``.

    It shows tasks done out of the total, a progress bar, the elapsed time, counts per
    final state and of retries, the running tasks (with their attempt number and how long
    they have run, in seconds), the instances done of each mapped task still running,
    and the latest retries and failures. The instances of a mapped task count as tasks,
    the mapped task itself not once it is expanded (see the module docstring). The display starts at
    :class:`~asyncflow.RunStarted` and stops at :class:`~asyncflow.RunFinished`, leaving
    its last frame on the screen; call :meth:`close` (or use it as a context manager) to
    stop it when the run is interrupted.

    Args:
        console: the ``rich.console.Console`` to draw on; default: one on stderr.
        refresh_per_second: redraws per second (the elapsed times tick between events).

    One display serves one run at a time.
    """

    def __init__(self, console: Console | None = None, *, refresh_per_second: float = 8.0) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self._refresh = refresh_per_second
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._pipeline = ""
        self._total = 0
        self._done = 0
        self._counts: dict[TaskState, int] = {}
        self._retries = 0
        self._running: dict[str, tuple[int, float]] = {}
        """``{task: (attempt, time.monotonic() when the attempt started)}``, in start order."""
        self._notes: deque[tuple[str, str]] = deque(maxlen=_SHOWN_NOTES)
        self._mapped: dict[str, list[int]] = {}
        """``{expanded mapped task: [instances ended, instances]}``, in expansion order."""
        self._open_mapped: dict[str, None] = {}
        """The expanded mapped tasks that have not ended, in expansion order."""
        self._started = time.monotonic()
        self._finished: float | None = None
        self._ok = True

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, event: Event) -> None:
        """Take in one event of the run (O(1); the redraw happens in rich's thread)."""
        now = time.monotonic()
        with self._lock:
            if isinstance(event, RunStarted):
                self._pipeline, self._total, self._started = event.pipeline, event.tasks, now
                self._done, self._retries, self._finished = 0, 0, None
                self._counts.clear()
                self._running.clear()
                self._notes.clear()
                self._mapped.clear()
                self._open_mapped.clear()
            elif isinstance(event, TaskMapped):
                self._mapped[event.task] = [0, event.count]
                self._open_mapped[event.task] = None
                self._total += event.count - 1  # the mapped task gives way to its instances
            elif isinstance(event, TaskStarted):
                self._running[event.task] = (event.attempt, now)
            elif isinstance(event, AttemptFailed):
                self._running.pop(event.task, None)
                if event.retry_in is not None:
                    self._retries += 1
                    self._notes.append(
                        (
                            "yellow",
                            f"! {event.task} attempt {event.attempt} failed ({_error(event.error)}); "
                            f"retrying in {event.retry_in:.2f} s",
                        )
                    )
            elif isinstance(event, TaskSucceeded | TaskCached | TaskSkipped | TaskCancelled | TaskFailed):
                self._ended(event)
            elif isinstance(event, RunFinished):
                self._finished, self._ok = now, event.ok
        if isinstance(event, RunStarted):
            self._start()
        elif isinstance(event, RunFinished):
            self.close()

    def _ended(self, event: TaskSucceeded | TaskCached | TaskSkipped | TaskCancelled | TaskFailed) -> None:
        """Count a task's final event (under the lock)."""
        task = event.task
        self._running.pop(task, None)
        if task in self._mapped:  # an expanded mapped task: its instances were counted
            self._open_mapped.pop(task, None)
            return
        parent = instance_of(task)
        if parent is not None and parent[0] in self._mapped:
            self._mapped[parent[0]][0] += 1
        state = _FINAL[type(event)]
        self._counts[state] = self._counts.get(state, 0) + 1
        self._done += 1
        if isinstance(event, TaskFailed):
            n = event.attempts
            after = f" after {n} attempt{'' if n == 1 else 's'}" if n else ""  # 0: a mapped task
            self._notes.append(("red", f"✗ {task} failed{after} ({_error(event.error)})"))

    def _start(self) -> None:
        from rich.live import Live

        if self._live is not None:
            return
        self._live = Live(
            console=self.console,
            get_renderable=self.render,
            refresh_per_second=self._refresh,
            transient=False,
            redirect_stdout=self.console.is_terminal and _stdout_is_terminal(),
            redirect_stderr=True,
        )
        self._live.start()

    def close(self) -> None:
        """Draw the last frame and stop the display; does nothing when it is not running."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def abandon(self) -> None:
        """Give the terminal back at once, for a process about to end from a signal handler
        (a second Ctrl-C): show the cursor the live display hid, with one ``os.write`` to
        the console's file descriptor and none of rich's locks (the interrupted thread may
        hold them). Does nothing when the display is not running or its console has no
        file descriptor."""
        if self._live is None:
            return
        try:
            fd = self.console.file.fileno()
        except (AttributeError, OSError, ValueError):
            return
        with contextlib.suppress(OSError):
            os.write(fd, b"\x1b[?25h\n")  # show the cursor; what follows starts a line

    def render(self) -> RenderableType:
        """The current frame (a ``rich`` renderable); called by rich's refresh thread."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            now = time.monotonic()
            end = self._finished if self._finished is not None else now
            head = Table.grid(padding=(0, 1))
            head.add_column()
            head.add_column(no_wrap=True)
            head.add_column(ratio=1)
            head.add_column(no_wrap=True, justify="right")
            if self._finished is None:
                mark: Any = Spinner("dots", style="cyan")
            else:
                mark = Text("✓", style="green") if self._ok else Text("✗", style="red")
            head.add_row(
                mark,
                Text.assemble((self._pipeline, "bold"), f"  {self._done}/{self._total} tasks done"),
                ProgressBar(total=max(self._total, 1), completed=self._done),
                f"{end - self._started:.1f} s",
            )
            counts = [
                f"{self._counts.get(state, 0)} {state.value}"
                for state in (TaskState.SUCCEEDED, TaskState.CACHED, TaskState.FAILED, TaskState.SKIPPED)
            ]
            if self._counts.get(TaskState.CANCELLED):
                counts.append(f"{self._counts[TaskState.CANCELLED]} cancelled")
            counts.append(f"{self._retries} retr{'y' if self._retries == 1 else 'ies'}")
            lines: list[Any] = [head, Text("  " + " · ".join(counts), style="dim")]
            if self._running:
                shown = list(self._running.items())[:_SHOWN_RUNNING]
                names = " · ".join(
                    f"{task}{f' (attempt {attempt})' if attempt > 1 else ''} {now - since:.1f} s"
                    for task, (attempt, since) in shown
                )
                more = len(self._running) - len(shown)
                lines.append(
                    Text.assemble(
                        f"  running ({len(self._running)}): ",
                        (names, "cyan"),
                        f" · +{more} more" if more > 0 else "",
                        overflow="ellipsis",
                        no_wrap=True,
                    )
                )
            if self._open_mapped:
                groups = list(self._open_mapped)[:_SHOWN_MAPPED]
                progress = " · ".join(f"{g} {self._mapped[g][0]}/{self._mapped[g][1]}" for g in groups)
                more = len(self._open_mapped) - len(groups)
                lines.append(
                    Text.assemble(
                        "  mapped: ",
                        (progress, "cyan"),
                        f" · +{more} more" if more > 0 else "",
                        overflow="ellipsis",
                        no_wrap=True,
                    )
                )
            lines.extend(
                Text("  " + note, style=style, overflow="ellipsis", no_wrap=True)
                for style, note in self._notes
            )
        return Group(*lines)


_FINAL: dict[type[Event], TaskState] = {
    TaskSucceeded: TaskState.SUCCEEDED,
    TaskCached: TaskState.CACHED,
    TaskSkipped: TaskState.SKIPPED,
    TaskCancelled: TaskState.CANCELLED,
    TaskFailed: TaskState.FAILED,
}


def _error(error: BaseException) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= 80 else text[:79] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` is a terminal that takes control characters: a tty, and
    ``TERM`` is not ``dumb``. The command line's one test, for the live display and for
    colored log lines; anything else (CI logs, pipes, files) gets plain lines."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM") != "dumb"


def terminal_display() -> ProgressDisplay | None:
    """A :class:`ProgressDisplay` on stderr when :func:`stderr_is_terminal`, else ``None``."""
    return ProgressDisplay() if stderr_is_terminal() else None

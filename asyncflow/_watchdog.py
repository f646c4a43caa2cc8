"""The event-loop watchdog: warns, naming the task, when a coroutine task blocks the loop.

A coroutine task that calls blocking code (``time.sleep``, ``requests.get``, a long
computation) between two awaits holds the event loop: no other task, timeout or signal
handler runs until it returns. :func:`watch_loop` finds such tasks cheaply, with no cost
per task and nothing on the runner's hot path:

* a daemon thread pings the event loop every ``threshold`` seconds (asyncio's
  ``call_soon_threadsafe``, trio's ``TrioToken.run_sync_soon``) and waits ``threshold``
  seconds for the loop to run the ping;
* when the ping is late, the thread reads the loop thread's Python stack
  (``sys._current_frames``) and looks for the frame of a coroutine task's function (by its
  code object). The stack is read twice, when the ping is sent and when it is late: only
  when both show the same task at the same instruction is that task blamed, so a loop that
  is merely busy with many short steps blames nobody;
* the warning names the task and where it blocks (file, line, function); when the loop
  runs again, a second line says how long the task held it in all.

Off unless asked: ``Pipeline.run(warn_blocking=None)`` (the default) starts no thread; the
command line turns it on (``--warn-blocking``, default :data:`DEFAULT_WARN_BLOCKING`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import CodeType, FrameType

from loguru import logger

from ._context import log_safely
from ._graph import Graph

__all__ = ["DEFAULT_WARN_BLOCKING", "watch_loop"]

DEFAULT_WARN_BLOCKING = 0.25
"""Seconds a coroutine task may hold the event loop before the command line warns (its
``--warn-blocking`` default): long enough that a noisy machine does not raise false
alarms, short enough that a blocking call inside ``async def`` is always found."""


def _task_codes(graph: Graph) -> dict[CodeType, list[str]]:
    """``{code object: [task names]}`` of the coroutine tasks of ``graph``."""
    codes: dict[CodeType, list[str]] = {}
    for node in graph.nodes:
        if not node.task.is_async:
            continue
        fn = node.task.fn
        while isinstance(fn, functools.partial):
            fn = fn.func
        fn = inspect.unwrap(fn)
        code = getattr(fn, "__code__", None)
        if isinstance(code, CodeType):
            codes.setdefault(code, []).append(node.name)
    return codes


def _culprit(frame: FrameType | None, codes: dict[CodeType, list[str]]) -> tuple[FrameType, int] | None:
    """The innermost frame of a task's function on the stack ending at ``frame``, with
    its instruction offset; ``None`` when the stack is in no task."""
    while frame is not None:
        if frame.f_code in codes:
            return frame, frame.f_lasti
        frame = frame.f_back
    return None


def _where(frame: FrameType | None) -> str:
    """``file:line in function`` of the innermost frame, the blocking call's caller."""
    if frame is None:
        return "an unknown place"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _watch(
    ping: Callable[[Callable[[], object]], object],
    loop_thread: int,
    codes: dict[CodeType, list[str]],
    threshold: float,
    run_id: str,
    stop: threading.Event,
) -> None:
    """The watchdog thread's loop; see the module docstring."""
    late_since: float | None = None  # when the oldest ping still unanswered was sent
    late_answer: threading.Event | None = None
    while not stop.wait(threshold):
        if late_answer is not None and late_answer.is_set():
            late_since = late_answer = None
        answered = threading.Event()
        before = _culprit(sys._current_frames().get(loop_thread), codes)
        sent = time.monotonic()
        try:
            ping(answered.set)
        except Exception:  # the loop is closed or the run is over
            return
        if answered.wait(threshold) or stop.is_set():
            continue
        if late_since is None:
            late_since, late_answer = sent, answered
        top = sys._current_frames().get(loop_thread)
        now = _culprit(top, codes)
        if now is None or before is None or now[0] is not before[0] or now[1] != before[1]:
            continue  # busy with many steps, or outside any task: nobody to blame
        names = codes[now[0].f_code]
        who = repr(names[0]) if len(names) == 1 else "one of " + ", ".join(map(repr, names))
        bound = logger.bind(run_id=run_id, task=names[0] if len(names) == 1 else "-")
        log_safely(
            bound,
            "WARNING",
            "task {} has held the event loop for {:.2f} s without awaiting, at {}: every other "
            "task waits meanwhile; make it a plain def (it then runs in a worker thread) or move "
            "the blocking call to anyio.to_thread.run_sync",
            who,
            time.monotonic() - late_since,
            _where(top),
        )
        # Until the loop runs again: the ping answers, or (trio may run the run's last
        # steps before its ping callbacks) the run ends, which it cannot while blocked.
        while not answered.wait(0.01) and not stop.is_set():
            pass
        held = time.monotonic() - late_since
        log_safely(bound, "WARNING", "task {} held the event loop for {:.2f} s", who, held)
        if stop.is_set():
            return
        late_since = late_answer = None


@asynccontextmanager
async def watch_loop(graph: Graph, threshold: float, run_id: str) -> AsyncIterator[None]:
    """Watch the running event loop while the body runs; see the module docstring.

    Args:
        graph: the run's graph (its coroutine tasks are the ones that can be blamed).
        threshold: seconds (> 0) a task may hold the loop before a warning.
        run_id: the run's id, bound to the warnings.

    Raises:
        ValueError: ``threshold`` is not a positive finite number of seconds.
    """
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 < threshold < float("inf")
    ):
        raise ValueError(f"warn_blocking must be a positive number of seconds or None, not {threshold!r}")
    ping: Callable[[Callable[[], object]], object]
    try:
        ping = asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # not asyncio, so anyio runs on trio
        import trio

        ping = trio.lowlevel.current_trio_token().run_sync_soon
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch,
        args=(ping, threading.get_ident(), _task_codes(graph), float(threshold), run_id, stop),
        name="asyncflow event-loop watchdog",
        daemon=True,
    )
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        # At once unless it is logging: its last line belongs to this run, before it returns.
        watcher.join(1.0)

"""One attempt of one task: where it computes, under which time limit, and what counts as done.

The runner (:mod:`asyncflow._runner`) owns the retry loop and the events; this module owns
what happens between ``TaskStarted`` and the attempt's outcome:

* a coroutine task is awaited here, on the event loop, with no executor in between;
* a plain ``def`` task is awaited through its :data:`~asyncflow._executors.Submit`
  (a worker thread by default, else a process pool or a Dask cluster);
* a task with a ``timeout`` runs under ``anyio.move_on_after``; when the scope fires the
  attempt fails with :class:`~asyncflow.TaskTimeoutError`. The limit starts when the
  attempt starts computing: a plain ``def`` task first waits for one of the run's worker
  threads, outside the limit. A coroutine with a timeout is driven step by step
  (:func:`_stepped`, one clock read per step) so that one that blocked the event loop
  past its deadline and returned without awaiting fails too, saying how long it held
  the loop;
* a result that is itself awaitable (a forgotten ``await``) fails the attempt with
  :class:`~asyncflow.ForgottenAwaitError`, which is never retried.
"""

from __future__ import annotations

import inspect
import time
import types
from collections.abc import Coroutine, Generator
from typing import Any

import anyio
from loguru import logger

from ._context import log_safely
from ._errors import ForgottenAwaitError, TaskTimeoutError
from ._executors import Submit, WorkerThreads, submit_thread
from ._task import Task

__all__ = ["call_task", "checked_result", "run_attempt"]


async def run_attempt(
    task: Task, kwargs: dict[str, Any], submit: Submit | None, threads: WorkerThreads | None = None
) -> Any:
    """Run one attempt of ``task`` with ``kwargs`` under ``task.timeout`` and return its result.

    Args:
        task: the task.
        kwargs: its arguments, by parameter name (reused by the next attempt).
        submit: where a plain ``def`` task computes; ``None`` for a coroutine task.
        threads: the run's worker threads; when ``submit`` is theirs, the time limit
            starts once a thread is free (see :meth:`WorkerThreads.run_timed`).

    Raises:
        TaskTimeoutError: the attempt ran longer than ``task.timeout`` seconds; also when
            a coroutine returned after its deadline because it blocked the event loop
            (then a warning names the task and how long it held the loop).
        ForgottenAwaitError: the task returned an awaitable instead of a result.
        Exception: whatever the task raised.
    """
    timeout = task.timeout
    if timeout is None:
        return await call_task(task, kwargs, submit)
    if submit is None:
        return await _run_coroutine_timed(task, kwargs, timeout)
    if threads is not None and submit is threads.submit:
        return checked_result(task, await threads.run_timed(task, kwargs, timeout))
    with anyio.move_on_after(timeout):
        return await call_task(task, kwargs, submit)
    raise TaskTimeoutError(task.name, timeout, thread_abandoned=submit is submit_thread)


async def _run_coroutine_timed(task: Task, kwargs: dict[str, Any], limit: float) -> Any:
    """Await ``task``'s coroutine under ``limit`` seconds (its timeout), timing each of its steps.

    A coroutine that blocks the event loop past its deadline and then returns without
    awaiting again is never cancelled (cancellation arrives at an await); its result is
    refused here all the same, on both backends.
    """
    steps = _Steps()
    with anyio.move_on_after(limit) as scope:
        result = await _stepped(task.fn(**kwargs), steps)
        if anyio.current_time() < scope.deadline:
            return checked_result(task, result)
    if not scope.cancelled_caught or steps.longest >= limit:
        log_safely(
            logger.bind(task=task.name),
            "WARNING",
            "task {!r} held the event loop for {:.3g} s without awaiting (its timeout is {:g} s): "
            "a blocking call in async def stops every other task; make it a plain def, or "
            "move the blocking call to anyio.to_thread.run_sync",
            task.name,
            steps.longest,
            limit,
        )
        raise TaskTimeoutError(task.name, limit, held_loop=steps.longest)
    raise TaskTimeoutError(task.name, limit)


class _Steps:
    """The longest step (seconds between two awaits) of one coroutine, measured by :func:`_stepped`."""

    __slots__ = ("longest",)

    def __init__(self) -> None:
        self.longest = 0.0


@types.coroutine
def _stepped(coro: Coroutine[Any, Any, Any], steps: _Steps) -> Generator[Any, Any, Any]:
    """Drive ``coro`` step by step for the event loop, recording the longest step in ``steps``.

    Every value ``coro`` yields goes to the event loop unchanged, and whatever the loop
    sends or throws in goes back to ``coro``: asyncio and trio see the same coroutine.
    """
    clock = time.perf_counter
    send: Any = None
    error: BaseException | None = None
    try:
        while True:
            begin = clock()
            try:
                yielded = coro.send(send) if error is None else coro.throw(error)
            except StopIteration as stop:
                steps.longest = max(steps.longest, clock() - begin)
                return stop.value
            except BaseException:
                steps.longest = max(steps.longest, clock() - begin)
                raise
            steps.longest = max(steps.longest, clock() - begin)
            try:
                send, error = (yield yielded), None
            except GeneratorExit:
                raise
            except BaseException as exc:  # a cancellation or anything thrown in: coro's to handle
                send, error = None, exc
    finally:
        coro.close()


async def call_task(task: Task, kwargs: dict[str, Any], submit: Submit | None) -> Any:
    """Compute ``task.fn(**kwargs)`` where it belongs, with no time limit (see :func:`run_attempt`).

    Raises:
        ForgottenAwaitError: the task returned an awaitable instead of a result.
        Exception: whatever the task raised.
    """
    if submit is None:  # the event loop: the coroutine itself, no executor in between
        result = await task.fn(**kwargs)
    else:  # the executor seam: a worker thread (default), a process, a Dask cluster
        result = await submit(task, kwargs)
    return checked_result(task, result)


def checked_result(task: Task, result: Any) -> Any:
    """``result``, unless it is awaitable (a forgotten ``await``).

    Raises:
        ForgottenAwaitError: ``result`` is awaitable (a coroutine is closed first).
    """
    if hasattr(type(result), "__await__"):  # inspect.isawaitable, cheaper for plain data
        if inspect.iscoroutine(result):
            result.close()
        raise ForgottenAwaitError(
            task.name,
            f"task {task.name!r} returned {type(result).__name__} object instead of a "
            "result: an 'await' is missing in its body",
        )
    return result

"""One attempt of one task: where it computes, under which time limit, and what counts as done.

The runner (:mod:`asyncflow._runner`) owns the retry loop and the events; this module owns
what happens between ``TaskStarted`` and the attempt's outcome:

* a coroutine task is awaited here, on the event loop, with no executor in between;
* a plain ``def`` task is awaited through its :data:`~asyncflow._executors.Submit`
  (a worker thread by default, else a process pool or a Dask cluster);
* a task with a ``timeout`` runs under ``anyio.move_on_after``; when the scope fires the
  attempt fails with :class:`~asyncflow.TaskTimeoutError`;
* a result that is itself awaitable (a forgotten ``await``) fails the attempt with
  :class:`~asyncflow.ForgottenAwaitError`, which is never retried.
"""

from __future__ import annotations

import inspect
from typing import Any

import anyio

from ._errors import ForgottenAwaitError, TaskTimeoutError
from ._executors import Submit, submit_thread
from ._task import Task

__all__ = ["call_task", "run_attempt"]


async def run_attempt(task: Task, kwargs: dict[str, Any], submit: Submit | None) -> Any:
    """Run one attempt of ``task`` with ``kwargs`` and return its result.

    Args:
        task: the task.
        kwargs: its arguments, by parameter name (reused by the next attempt).
        submit: where a plain ``def`` task computes; ``None`` for a coroutine task.

    Raises:
        TaskTimeoutError: the attempt ran longer than ``task.timeout`` seconds.
        ForgottenAwaitError: the task returned an awaitable instead of a result.
        Exception: whatever the task raised.
    """
    if task.timeout is None:
        return await call_task(task, kwargs, submit)
    with anyio.move_on_after(task.timeout):
        return await call_task(task, kwargs, submit)
    raise TaskTimeoutError(task.name, task.timeout, thread_abandoned=submit is submit_thread)


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
    if hasattr(type(result), "__await__"):  # inspect.isawaitable, cheaper for plain data
        if inspect.iscoroutine(result):
            result.close()
        raise ForgottenAwaitError(
            task.name,
            f"task {task.name!r} returned {type(result).__name__} object instead of a "
            "result: an 'await' is missing in its body",
        )
    return result

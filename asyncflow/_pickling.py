"""The remote protocol of the process and Dask executors: calls and results as pickles.

A task sent to another process travels as one pickled ``(name, fn, kwargs)`` payload
(:func:`dump_call`), pickled on the caller's side so that a function or an argument that
cannot be pickled fails the task with a :class:`~asyncflow.TaskPicklingError` naming it,
before anything is sent. The worker runs :func:`run_pickled`, which pickles the result
itself, so a result that cannot be pickled fails the same way instead of breaking the
transport; :func:`load_result` and :func:`remote_error` turn what comes back into the
result or the task's error.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from collections.abc import Callable
from typing import Any

from ._context import RunContext, task_logger
from ._errors import ForgottenAwaitError, TaskPicklingError
from ._task import Task

__all__ = ["dump_call", "load_result", "pickle_dumps", "remote_error", "run_pickled"]


class _RemoteError(Exception):
    """Raised in a worker by :func:`run_pickled` for a failure of the protocol itself, not
    of the task; plain ``args`` so that it pickles back. ``kind`` is ``"load"`` (the payload
    could not be unpickled there), ``"result"`` (the result cannot be pickled) or
    ``"await"`` (the function returned an awaitable)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


def run_pickled(payload: bytes) -> bytes:
    """Run a call pickled by :func:`dump_call` and return its result, pickled.

    Runs in the worker (a process of the pool, a Dask worker). The task's own exceptions
    propagate unchanged; the protocol's failures raise ``_RemoteError``, which
    :func:`remote_error` turns back into an asyncflow error on the caller's side.
    """
    try:
        name, fn, kwargs = pickle.loads(payload)
    except Exception as exc:
        raise _RemoteError("load", f"{type(exc).__name__}: {exc}") from None
    context = kwargs.get("context")
    if isinstance(context, RunContext) and context.logger is None:
        kwargs["context"] = dataclasses.replace(context, logger=task_logger(context.run_id, name))
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise _RemoteError("await", type(result).__name__)
    try:
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise _RemoteError("result", f"{type(exc).__name__}: {exc}") from None


def dump_call(task: Task, kwargs: dict[str, Any], dumps: Callable[[Any], bytes], where: str) -> bytes:
    """Pickle ``task``'s call for :func:`run_pickled` with ``dumps``; ``where`` names the
    destination in the error message (``"a worker process"``).

    Raises:
        TaskPicklingError: the function or an argument cannot be pickled (chained).
    """
    context = kwargs.get("context")
    if isinstance(context, RunContext):
        # The logger stays behind (its sinks are this process's); the worker binds its own.
        kwargs = {**kwargs, "context": dataclasses.replace(context, logger=None)}  # type: ignore[arg-type]
    try:
        return dumps((task.name, task.fn, kwargs))
    except Exception as exc:
        raise TaskPicklingError(
            task.name,
            f"task {task.name!r} cannot be sent to {where}: its function or its arguments "
            f"cannot be pickled ({type(exc).__name__}: {exc}); define the function at module "
            "level (not a lambda or a nested function) and pass picklable arguments, or "
            "declare the task with executor='local'",
        ) from exc


def load_result(task: Task, data: bytes) -> Any:
    """Unpickle the result :func:`run_pickled` returned for ``task``.

    Raises:
        TaskPicklingError: it cannot be unpickled in this process (chained).
    """
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise TaskPicklingError(
            task.name,
            f"the result of task {task.name!r} cannot be unpickled here ({type(exc).__name__}: {exc})",
        ) from exc


def remote_error(task: Task, exc: BaseException, where: str) -> BaseException:
    """The asyncflow error for a ``_RemoteError`` raised by :func:`run_pickled` in
    ``where``; any other exception is returned unchanged (it is the task's own)."""
    if not isinstance(exc, _RemoteError):
        return exc
    name = task.name
    if exc.kind == "result":
        message = (
            f"the result of task {name!r} cannot be pickled to send it back from {where} "
            f"({exc.detail}); return plain data, or declare the task with executor='local'"
        )
    elif exc.kind == "await":
        return ForgottenAwaitError(
            name,
            f"task {name!r} returned {exc.detail} object instead of a result: an 'await' is "
            "missing in its body",
        )
    else:
        message = (
            f"task {name!r} cannot be unpickled in {where} ({exc.detail}); its module must be "
            "importable there (run from the directory that contains it, or install it on "
            "the workers)"
        )
    return TaskPicklingError(name, message)


# -- local worker processes -------------------------------------------------------------------


def pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


# -- choosing an executor ---------------------------------------------------------------------

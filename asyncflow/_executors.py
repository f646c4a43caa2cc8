"""Where a task's body runs: the executor seam.

The runner owns the DAG, the retries, the timeouts, the failure policy, the events and the
checkpoints; an executor only computes. Which executor runs a task is decided once per
task when a run starts:

* a coroutine task (``async def``) always runs on the event loop;
* a plain ``def`` task declared with ``executor="local"``, and every plain task of a run
  whose executor is :class:`LocalExecutor` (the default), runs in a worker thread
  (``anyio.to_thread.run_sync``) of the run's own :class:`WorkerThreads`, sized by
  ``Pipeline.run(threads=...)`` (default: :func:`default_threads`);
* every other plain task runs on the run's executor: :class:`ProcessExecutor` (a pool of
  local worker processes, anyio's ``to_process``) or :class:`~asyncflow.DaskExecutor`
  (a Dask cluster, :mod:`asyncflow._dask`).

The protocol. An :class:`Executor` is immutable configuration with a ``name``. Its
``open()`` is an async context manager that the runner enters once per run, before any
task starts (so a missing dependency or an unreachable cluster fails the run before
anything ran), and leaves after the last task ended. It yields a :data:`Submit` function:
``submit(task, kwargs)`` returns an awaitable of the task's result. The runner awaits it
inside its own cancel scopes, so a timeout or a cancellation reaches the executor as the
cancellation of that await, and the executor must stop the work (kill the process, cancel
the Dask future) before it re-raises. The runner awaits a coroutine task's own coroutine
with no executor in between, and :func:`submit_thread` returns anyio's thread call
unwrapped: the default path costs no extra coroutine or object per task.

Pickling. A task sent to another process travels as one pickled ``(name, fn, kwargs)``
payload, pickled on the caller's side so that a function or an argument that cannot be
pickled fails the task with a :class:`~asyncflow.TaskPicklingError` naming it, before
anything is sent. The worker runs :func:`run_pickled`, which pickles the result itself, so
a result that cannot be pickled fails the same way instead of breaking the transport.
A remote task that declares ``context`` receives it with a ``logger`` bound in the
worker's process (the caller's loguru sinks cannot travel): its lines go wherever that
process's loguru configuration sends them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Protocol, runtime_checkable

import anyio
import anyio.to_thread

from ._errors import ExecutorError, ForgottenAwaitError, TaskTimeoutError
from ._pickling import dump_call, load_result, pickle_dumps, remote_error, run_pickled
from ._task import Task

__all__ = [
    "DEFAULT_MAX_THREADS",
    "EXECUTOR_NAMES",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "Submit",
    "WorkerThreads",
    "default_threads",
    "dump_call",
    "load_result",
    "remote_error",
    "resolve_executor",
    "run_pickled",
    "submit_thread",
]

Submit = Callable[[Task, dict[str, Any]], Awaitable[Any]]
"""``submit(task, kwargs)``: an awaitable of ``task.fn(**kwargs)``'s result, computed by
one executor. ``kwargs`` belongs to the runner (it reuses it for the next attempt)."""

EXECUTOR_NAMES = ("local", "processes", "dask")
"""The executor names ``Pipeline.run(executor=...)`` and the CLI's ``--executor`` accept."""


@runtime_checkable
class Executor(Protocol):
    """Where the plain ``def`` tasks of a run compute; see :mod:`asyncflow._executors`.

    Implementations: :class:`LocalExecutor` (worker threads, the default),
    :class:`ProcessExecutor` (local worker processes) and :class:`~asyncflow.DaskExecutor`
    (a Dask cluster). Coroutine tasks, and tasks declared ``executor="local"``, always run
    in the caller's process whatever the run's executor.
    """

    @property
    def name(self) -> str:
        """A short name for logs and the command line, e.g. ``"processes"``."""
        ...

    def open(self) -> AbstractAsyncContextManager[Submit]:
        """Acquire what the executor needs for one run and yield its submit function.

        Entered once per run before any task starts and left when every task has ended
        (also on cancellation). Raises :class:`~asyncflow.ExecutorError` when the executor
        cannot be used, before any task runs.
        """
        ...


# -- local: the event loop and worker threads -------------------------------------------------


def _call_in_thread(task: Task, kwargs: dict[str, Any]) -> Any:
    result = task.fn(**kwargs)
    if inspect.isawaitable(result):
        # Raised here, not returned: trio's to_thread refuses a thread function that
        # returns a coroutine with its own TypeError, which would hide this one.
        raise _forgotten_await(task.name, result)
    return result


def submit_thread(task: Task, kwargs: dict[str, Any]) -> Awaitable[Any]:
    """Run a plain ``def`` task in one of anyio's worker threads, under anyio's default
    limiter (40 threads, shared by the whole process).

    Runs use their own :class:`WorkerThreads` instead; this stays for code that calls the
    :class:`LocalExecutor` directly. With a ``timeout`` the thread is abandoned when the
    attempt is cancelled (a thread cannot be killed); without one, cancellation waits for
    the function to return.
    """
    return anyio.to_thread.run_sync(
        functools.partial(_call_in_thread, task, dict(kwargs)),
        abandon_on_cancel=task.timeout is not None,
    )


DEFAULT_MAX_THREADS = 256
"""The most worker threads a run without ``max_concurrency`` and without ``threads=``
starts by default (see :func:`default_threads`): six times anyio's 40, yet bounded, since
each thread reserves a stack and a burst of tiny tasks runs slower on more threads than
it can use (measured: 1,000 no-op ``def`` tasks take about 1.4 times longer on 1,000
threads than on 100). Pass ``threads=`` (``--threads``) for more."""


def default_threads(thread_tasks: int, max_concurrency: int | None) -> int:
    """How many worker threads a run may use when ``Pipeline.run(threads=None)``.

    ``max_concurrency`` when it is set (so that it, not a hidden pool, limits the run);
    else ``thread_tasks`` (the plain ``def`` tasks of the run that compute in threads, so
    all of them can run at once), at least 40 (anyio's default) and at most
    :data:`DEFAULT_MAX_THREADS`. Threads are started on demand, so a large limit costs
    nothing until tasks need it.
    """
    if max_concurrency is not None:
        return max_concurrency
    return max(40, min(thread_tasks, DEFAULT_MAX_THREADS))


_NOT_STARTED, _STARTED, _GIVEN_UP = 0, 1, 2


class WorkerThreads:
    """The worker threads of one run: an ``anyio.CapacityLimiter`` of its own.

    The run's plain ``def`` tasks wait for one of ``size`` threads here, never in anyio's
    process-wide default pool of 40 threads (which the checkpoint store and other
    libraries share). Created inside the run's event loop.

    Args:
        size: the most threads computing tasks at once (a positive int).

    Raises:
        ValueError: ``size`` is not a positive int.
    """

    __slots__ = ("_unlimited", "limiter", "size", "submit")

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"threads must be a positive int or None, not {size!r}")
        self.size = size
        self.limiter = anyio.CapacityLimiter(size)
        self._unlimited = anyio.CapacityLimiter(math.inf)
        limiter = self.limiter

        def submit(task: Task, kwargs: dict[str, Any]) -> Awaitable[Any]:
            return anyio.to_thread.run_sync(
                functools.partial(_call_in_thread, task, dict(kwargs)),
                abandon_on_cancel=task.timeout is not None,
                limiter=limiter,
            )

        self.submit: Submit = submit
        """The :data:`Submit` of these threads (no time limit; see :meth:`run_timed`)."""

    async def run_timed(self, task: Task, kwargs: dict[str, Any], limit: float) -> Any:
        """Run ``task`` in a thread with a time limit that starts when a thread is free.

        Waiting for a free thread is not part of ``limit`` (the task's timeout, in seconds): the limit
        starts once this attempt holds a thread. When it expires before the thread began
        the function, the function never runs.

        Raises:
            TaskTimeoutError: the attempt ran out of time; ``started`` and
                ``thread_abandoned`` say whether the thread had begun the function (and is
                left running) or never did.
            Exception: whatever the task raised.
        """
        kwargs = dict(kwargs)  # an abandoned thread keeps its own copy
        state = [_NOT_STARTED]
        lock = threading.Lock()

        def call() -> Any:
            with lock:
                if state[0] == _GIVEN_UP:
                    return None
                state[0] = _STARTED
            return _call_in_thread(task, kwargs)

        async with self.limiter:  # waiting for a thread: the time limit has not started
            try:
                with anyio.move_on_after(limit):
                    return await anyio.to_thread.run_sync(
                        call, abandon_on_cancel=True, limiter=self._unlimited
                    )
            finally:  # timed out or cancelled before a thread began it: it must never run
                with lock:
                    started = state[0] == _STARTED
                    if not started:
                        state[0] = _GIVEN_UP
        raise TaskTimeoutError(task.name, limit, thread_abandoned=started, started=started)


def _forgotten_await(task: str, result: object) -> ForgottenAwaitError:
    if inspect.iscoroutine(result):
        result.close()
    return ForgottenAwaitError(
        task,
        f"task {task!r} returned {type(result).__name__} object instead of a result: an "
        "'await' is missing in its body",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class LocalExecutor:
    """Run plain ``def`` tasks in anyio's worker threads (the default; CLI ``--executor local``).

    Threads share the interpreter's GIL: right for blocking I/O and for code that releases
    the GIL (numpy, compression), not for pure-Python CPU work, which
    :class:`ProcessExecutor` or :class:`~asyncflow.DaskExecutor` spread over cores.
    """

    name: ClassVar[str] = "local"

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Submit]:
        """Yield :func:`submit_thread`; nothing to acquire or release."""
        yield submit_thread


def _ready() -> bool:
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessExecutor:
    """Run plain ``def`` tasks in a pool of local worker processes (CLI ``--executor processes``).

    Built on anyio's process workers (``anyio.to_process.run_sync``), so it works on asyncio
    and on trio. Workers are started on demand and reused, and stay for the life of the
    event loop (anyio's pool), so consecutive runs in one program reuse them.

    A timeout or a cancellation kills the worker process running the attempt (SIGKILL;
    anyio's ``cancellable=True``) and a fresh one replaces it for the next task.

    Limits (anyio's): calls and results travel with the standard library's :mod:`pickle`,
    so a task's function must be a module-level function (or a ``functools.partial`` of
    one) of a module the worker can import, not a lambda or a nested function; a worker
    re-imports the program's main script as ``__mp_main__``, so that script must guard its
    own work with ``if __name__ == "__main__":``; workers discard what a task prints on
    stdout or stderr.

    Args:
        max_workers: the most worker processes running tasks at once; ``None`` (default)
            for anyio's default process limiter, the number of CPUs.

    Raises:
        ValueError: ``max_workers`` is not a positive int.
    """

    max_workers: int | None = None
    name: ClassVar[str] = "processes"

    def __post_init__(self) -> None:
        workers = self.max_workers
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise ValueError(f"max_workers must be a positive int or None, not {workers!r}")

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Submit]:
        """Start one worker process (so that a broken environment fails the run before
        any task runs) and yield the submit function.

        Raises:
            ExecutorError: a worker process cannot start, e.g. because re-importing the main
                script raised (chained).
        """
        import anyio.to_process  # here: ~10 ms of imports that a run without processes skips

        limiter = anyio.CapacityLimiter(self.max_workers) if self.max_workers is not None else None
        try:
            await anyio.to_process.run_sync(_ready, cancellable=True, limiter=limiter)
        except anyio.BrokenWorkerProcess as exc:
            cause = exc.__cause__
            detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
            raise ExecutorError(
                "the process executor could not start a worker process" + detail + " (a worker "
                "re-imports the main script as __mp_main__: guard its work with "
                "if __name__ == '__main__': and use absolute imports)"
            ) from exc

        async def submit(task: Task, kwargs: dict[str, Any]) -> Any:
            payload = dump_call(task, kwargs, pickle_dumps, "a worker process")
            try:
                data = await anyio.to_process.run_sync(
                    run_pickled, payload, cancellable=True, limiter=limiter
                )
            except Exception as exc:
                error = remote_error(task, exc, "a worker process")
                if error is exc:
                    raise
                raise error from None
            return load_result(task, data)

        yield submit


def resolve_executor(spec: Executor | str | None) -> Executor | None:
    """The executor for ``Pipeline.run(executor=spec)``: ``None`` (the default: threads,
    with no executor to open), a name of :data:`EXECUTOR_NAMES`, or an :class:`Executor`.

    ``"dask"`` means a :class:`~asyncflow.DaskExecutor` that starts a local cluster for the
    run.

    Raises:
        ValueError: an unknown name (the message suggests the closest one) or an object
            that is not an :class:`Executor`.
    """
    if spec is None or isinstance(spec, Executor):
        return spec
    if spec == "local":
        return LocalExecutor()
    if spec == "processes":
        return ProcessExecutor()
    if spec == "dask":
        from ._dask import DaskExecutor

        return DaskExecutor()
    if isinstance(spec, str):
        close = difflib.get_close_matches(spec, EXECUTOR_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown executor {spec!r}{hint} (choose one of {', '.join(map(repr, EXECUTOR_NAMES))} "
            "or pass an Executor)"
        )
    raise ValueError(
        f"executor must be one of {', '.join(map(repr, EXECUTOR_NAMES))} or an Executor "
        f"(with name and open()), not {spec!r}"
    )

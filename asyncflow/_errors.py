"""The asyncflow exception tree.

Every error asyncflow raises on purpose derives from :class:`AsyncflowError`::

    AsyncflowError
     ├── PipelineDefinitionError (also ValueError)   raised before anything runs
     │    ├── DuplicateTaskError                     two tasks share a name
     │    ├── InvalidTaskNameError                   a name that is not an identifier
     │    ├── UnknownDependencyError                 depends on a task that is not defined
     │    ├── UnboundParameterError                  a parameter that matches nothing
     │    ├── CycleError                             the tasks form a cycle (``.cycle``)
     │    └── ParamError                             a run parameter that is not declared
     ├── TaskError                                   raised inside one task (``.task``)
     │    ├── TaskTimeoutError (also TimeoutError)   an attempt ran past ``timeout``
     │    ├── ForgottenAwaitError (also TypeError)   a task returned an un-awaited coroutine
     │    ├── CheckpointError                        a result could not be checkpointed
     │    └── TaskPicklingError                      a call or result could not be pickled
     ├── CheckpointReadError (also OSError)          a checkpoint exists but cannot be read
     ├── MissingCheckpointError                      a partial run needs results never saved
     ├── ExecutorError                               an executor cannot be used (before tasks run)
     ├── WorkdirLockedError                          another run holds the working directory
     └── RunFailedError                              raised by ``RunResult.raise_for_failures()``

Definition errors are also :class:`ValueError` so that code which validates input the
ordinary way catches them. Errors about one task carry the task's name in ``.task``; the
original exception, where there is one, is chained as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "AsyncflowError",
    "CheckpointError",
    "CheckpointReadError",
    "CycleError",
    "DuplicateTaskError",
    "ExecutorError",
    "ForgottenAwaitError",
    "InvalidTaskNameError",
    "MappingError",
    "MissingCheckpointError",
    "ParamError",
    "PipelineDefinitionError",
    "RunFailedError",
    "TaskError",
    "TaskPicklingError",
    "TaskTimeoutError",
    "UnboundParameterError",
    "UnknownDependencyError",
    "WorkdirLockedError",
]


class AsyncflowError(Exception):
    """Base class of every exception asyncflow raises on purpose."""


class PipelineDefinitionError(AsyncflowError, ValueError):
    """The pipeline definition is invalid; raised before any task runs."""


class DuplicateTaskError(PipelineDefinitionError):
    """Two tasks in one pipeline have the same name."""


class InvalidTaskNameError(PipelineDefinitionError):
    """A task name is not a Python identifier.

    Names must be identifiers because dependencies are declared by parameter name and
    checkpoints are stored as ``<name>.json``.
    """


class UnknownDependencyError(PipelineDefinitionError):
    """A task depends on a task name that the pipeline does not define."""


class UnboundParameterError(PipelineDefinitionError):
    """A task parameter without a default matches no task, mapping or reserved name."""


class ParamError(PipelineDefinitionError):
    """A run parameter is not declared by the pipeline, or cannot be converted."""


class CycleError(PipelineDefinitionError):
    """The tasks' dependencies form a cycle.

    Attributes:
        cycle: the task names along the cycle, the first name repeated at the end
            (the convention of :class:`graphlib.CycleError`), e.g. ``("a", "b", "a")``.
    """

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle: tuple[str, ...] = tuple(cycle)
        super().__init__(f"tasks form a cycle: {' -> '.join(self.cycle)}")


class TaskError(AsyncflowError):
    """An error about one task.

    Attributes:
        task: the name of the task at fault.
    """

    def __init__(self, task: str, message: str) -> None:
        self.task = task
        super().__init__(message)


class MappingError(TaskError):
    """A mapped task (see :func:`~asyncflow.each`) could not be mapped, or an instance of
    it failed.

    Raised as the error of the mapped task itself: its upstream result is not a list,
    its zipped inputs have unequal lengths (the message names both inputs and their
    lengths), or some of its instances failed or were skipped (``failed`` lists them).

    Attributes:
        task: the mapped task's name.
        failed: the names of the instances that did not succeed (failed or skipped,
            ``task[k]``), in item order; ``()`` when the task itself could not be mapped.
    """

    def __init__(self, task: str, message: str, failed: Sequence[str] = ()) -> None:
        super().__init__(task, message)
        self.failed = tuple(failed)


class TaskTimeoutError(TaskError, TimeoutError):
    """One attempt of a task ran longer than its ``timeout``.

    The time limit starts when the attempt starts computing: for a plain ``def`` task,
    once a worker thread is free for it (waiting for one does not count).

    Attributes:
        task: the task's name.
        timeout: the limit that was exceeded, in seconds.
        thread_abandoned: True when the task is a plain ``def`` whose worker thread had
            begun the function: a thread cannot be killed, so it was left running.
        started: False when the attempt never began computing (its worker thread never
            got the function, which then never runs); True otherwise.
        held_loop: for a coroutine task that returned after its deadline without being
            cancelled, the longest time in seconds one step of it held the event loop
            without awaiting (a blocking call in ``async def``); else ``None``.
    """

    def __init__(
        self,
        task: str,
        timeout: float,
        *,
        thread_abandoned: bool = False,
        started: bool = True,
        held_loop: float | None = None,
    ) -> None:
        self.timeout = timeout
        self.thread_abandoned = thread_abandoned
        self.started = started
        self.held_loop = held_loop
        message = f"task {task!r} timed out after {timeout:g} s"
        if not started:
            message += " (it never started: no worker thread began it, and it will not run)"
        elif thread_abandoned:
            message += " (its worker thread could not be stopped and was left running)"
        elif held_loop is not None:
            message += (
                f" (it returned late: it held the event loop for {held_loop:.3g} s without "
                "awaiting; make it a plain def, or move the blocking call to "
                "anyio.to_thread.run_sync)"
            )
        super().__init__(task, message)


class ForgottenAwaitError(TaskError, TypeError):
    """A task returned a coroutine object: an ``await`` is missing in its body."""


class CheckpointError(TaskError):
    """A task's result cannot be stored as a JSON checkpoint (wrong type, NaN, disk error)."""


class CheckpointReadError(AsyncflowError, OSError):
    """A checkpoint store cannot be read: too many open files, no permission, an I/O error.

    Never treated as "no checkpoint" (that would silently run finished work again): the
    task whose checkpoint it is fails with a :class:`CheckpointError` chaining this one.
    A missing checkpoint is ``None``, and a corrupted one is a warning and ``None``.

    Attributes:
        task: the task whose checkpoint was being read, or ``None`` for the whole store.
        path: the file that could not be read.
    """

    def __init__(self, task: str | None, path: str, cause: OSError) -> None:
        self.task = task
        self.path = path
        what = f"the checkpoint of task {task!r}" if task is not None else "the checkpoint store"
        super().__init__(f"{what} cannot be read from {path}: {cause.strerror or cause}")


class TaskPicklingError(TaskError):
    """A task that runs in another process cannot travel there or back: its function or
    arguments cannot be pickled, cannot be unpickled in the worker, or its result cannot
    be pickled. The pickling error is chained as ``__cause__`` where it happened in this
    process, and quoted in the message where it happened in the worker. Not retried.
    """


class ExecutorError(AsyncflowError):
    """The run's executor cannot be used: a missing optional dependency, the Dask executor
    on the trio backend, an unreachable Dask scheduler, a worker process that cannot start.
    Raised by ``Pipeline.run`` before any task runs; the cause is chained.
    """


class MissingCheckpointError(AsyncflowError):
    """A partial run needs upstream results that have no checkpoint; raised before it starts.

    Attributes:
        tasks: the names of the upstream tasks without a checkpoint, in definition order.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks: tuple[str, ...] = tuple(tasks)
        names = ", ".join(repr(t) for t in self.tasks)
        super().__init__(
            f"the selected tasks need the results of {names}, which have no checkpoint; "
            "run the pipeline without a selection first, or select these tasks too"
        )


class WorkdirLockedError(AsyncflowError):
    """Another run holds the working directory's lock (``<workdir>/.lock``), and the run
    was asked not to wait for it (``lock="fail"``, the CLI's ``--lock fail``).

    Attributes:
        workdir: the working directory.
        holder: what the holding run recorded in ``<workdir>/.lock.info``: ``run_id``,
            ``pid``, ``pipeline``, ``started_at`` (ISO 8601, UTC) and ``host``; ``None`` when
            it had not written it yet (or it was unreadable).
        who: the holder in words, e.g. ``"run 20250101T120000-a1b2c3 (pid 4242, ...)"``.
    """

    def __init__(self, workdir: str, holder: Mapping[str, object] | None) -> None:
        self.workdir = workdir
        self.holder: dict[str, object] | None = dict(holder) if holder is not None else None
        if holder is not None:
            who = (
                f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')}, pipeline "
                f"{holder.get('pipeline', '?')!r}, started {holder.get('started_at', '?')})"
            )
        else:
            who = "another run (it has not recorded its id yet)"
        self.who = who
        super().__init__(
            f"working directory {workdir!r} is in use by {who}; wait for it to finish, use "
            "another working directory, or wait for the lock (lock='wait', CLI: --lock wait)"
        )


class RunFailedError(AsyncflowError):
    """A run had failed tasks; raised by :meth:`asyncflow.RunResult.raise_for_failures`.

    Attributes:
        errors: ``{task name: the exception of its last attempt}``, in the order the
            tasks failed. Each exception keeps its traceback (``exc.__traceback__``).
    """

    def __init__(self, errors: Mapping[str, BaseException]) -> None:
        self.errors: dict[str, BaseException] = dict(errors)
        lines = [f"{name}: {type(exc).__name__}: {exc}" for name, exc in self.errors.items()]
        count = len(lines)
        super().__init__(f"{count} task{'s' if count != 1 else ''} failed: " + "; ".join(lines))


def printable(error: Exception) -> Exception:
    """``error`` itself when ``str(error)`` works, else a :class:`RuntimeError` that names its
    type and why its message failed, with its traceback (and without its chain, which
    would fail again), so that the log, the summary and the run record can tell it.

    The original is kept as the new error's ``unprintable`` attribute. Retry policies see
    the original: the runner calls this only to report an attempt that failed.
    """
    try:
        str(error)
    except Exception as broken:
        stand_in = RuntimeError(
            f"{type(error).__name__} (its message could not be made: str() raised {type(broken).__name__})"
        )
        stand_in.unprintable = error  # type: ignore[attr-defined]
        stand_in.__suppress_context__ = True
        return stand_in.with_traceback(error.__traceback__)
    return error

"""``Pipeline``: declare tasks with a decorator, validate them, run them."""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Unpack, overload

import anyio

from ._errors import DuplicateTaskError, ParamError
from ._events import Listener
from ._executors import Executor
from ._graph import Graph, build_graph
from ._launch import DEFAULT_WORKDIR, default_file_store, launch
from ._lock import LockMode
from ._options import TaskOptions, after_names_of, one_or_many, retry_policy
from ._recorder import RunRecorder
from ._result import RunResult
from ._serializers import JSON, Serializer, resolve_serializer
from ._store import CheckpointStore
from ._stream import EventStream
from ._task import Each, Task, make_task

__all__ = ["DEFAULT_WORKDIR", "Pipeline", "default_file_store"]

F = TypeVar("F", bound=Callable[..., Any])


class Pipeline:
    """A named set of tasks whose dependencies form a DAG.

    Args:
        name: the pipeline's name, used in logs and run records.
        params: the run parameters the pipeline accepts, with their default values
            (``{"csv": "data/stocks.csv"}``). A run may override them; any other key is
            a :class:`~asyncflow.ParamError`.
        description: one line shown by the command line; defaults to ``""``.
        serializer: how checkpoints store results of tasks that do not choose their own:
            ``"json"`` (the default: strict JSON), ``"pickle"`` or a
            :class:`~asyncflow.Serializer` (see the ``serializer`` option of :meth:`task`).

    Raises:
        ValueError: ``serializer`` is not a known name or a serializer.

    A pipeline holds no run state: the same instance can be run any number of times,
    concurrently too, and nothing is global.
    """

    def __init__(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        description: str = "",
        serializer: str | Serializer | None = None,
    ) -> None:
        self.name = name
        self.serializer: Serializer = resolve_serializer(serializer, where=f"pipeline {name!r}") or JSON
        self.params: dict[str, Any] = dict(params or {})
        self.description = description
        self._tasks: dict[str, Task] = {}
        self._by_fn: dict[int, str] = {}
        self._graph: Graph | None = None

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, tasks={len(self._tasks)})"

    @property
    def tasks(self) -> Mapping[str, Task]:
        """``{name: Task}`` in definition order (read-only view)."""
        return dict(self._tasks)

    @overload
    def task(self, fn: F, /, **options: Unpack[TaskOptions]) -> F: ...

    @overload
    def task(self, fn: None = None, /, **options: Unpack[TaskOptions]) -> Callable[[F], F]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        inputs: Mapping[str, str | Sequence[str] | Each] | None = None,
        after: Iterable[str | Callable[..., Any]] = (),
        retries: int = 0,
        retry_delay: float = 1.0,
        backoff: float = 2.0,
        max_delay: float = 60.0,
        jitter: float = 0.0,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
        timeout: float | None = None,
        checkpoint: bool = True,
        cache_key_fn: Callable[[Mapping[str, Any]], Any] | None = None,
        tags: Iterable[str] = (),
        executor: Literal["local"] | None = None,
        outputs: Iterable[str] = (),
        serializer: str | Serializer | None = None,
    ) -> Any:
        """Register a function as a task; use as ``@pipeline.task`` or ``@pipeline.task(...)``.

        Each parameter of the function receives the result of the upstream task of the
        same name, unless ``inputs`` maps it to another task; ``params`` and ``context``
        are reserved (see :class:`~asyncflow.RunContext`). The function is returned
        unchanged, so it can still be called directly (in unit tests, say).

        Args:
            name: the task's name (a Python identifier); defaults to the function's name.
                Required when one function is registered several times in a loop.
            inputs: ``{parameter: upstream task name}`` for parameters not named after
                their upstream task; a list of names feeds the parameter a list of those
                tasks' results in that order (fan-in); ``asyncflow.each("task")`` runs
                this task once per item of that task's result (see :func:`~asyncflow.each`).
            after: upstream tasks (names or decorated functions) that must finish first
                but pass no data.
            retries: retries after the first attempt: at most ``retries + 1`` attempts.
            retry_delay: wait before the first retry, in seconds.
            backoff: each further wait is this many times longer:
                ``min(max_delay, retry_delay * backoff ** (attempt - 1))`` seconds.
            max_delay: cap on any wait, in seconds.
            jitter: fraction in [0, 1]; each wait is drawn from ``[(1 - jitter) * d, d]``.
            retry_on: exception type(s) that are retried; others fail at once.
            timeout: limit on each attempt, in seconds (a timed-out attempt counts as a
                failed one); ``None`` for no limit.
            checkpoint: save the result (with its ``serializer``) and skip the task on a
                rerun whose cache key matches; ``False`` for tasks that must always run
                (they compute no cache key; their result is hashed by value only for the
                tasks below them).
            cache_key_fn: ``(params) -> value`` mixed into the cache key, e.g.
                ``lambda p: asyncflow.file_digest(p["csv"])`` for an input file.
            tags: labels; a run's ``pools={tag: limit}`` caps how many tasks with a tag
                run at once.
            executor: ``"local"`` keeps a plain ``def`` task in a worker thread of this
                process whatever the run's executor (for tasks that touch local state or
                cannot be pickled); ``None`` (default) follows the run's ``executor``.
                Coroutine tasks always run on the event loop.
            outputs: files the task writes, as ``str.format`` templates over ``workdir``
                and the run's parameters (``["{workdir}/report.md"]``); while one is
                missing the task runs again even if its checkpoint matches.
            serializer: how the checkpoint stores the result: ``"json"`` (strict JSON,
                the pipeline's default unless it chose another), ``"pickle"`` (any
                picklable object; loading a pickle runs code, so only checkpoints this
                task wrote are ever unpickled), or a :class:`~asyncflow.Serializer`.
                ``None`` follows the pipeline's ``serializer``.

        Raises:
            DuplicateTaskError: a task of that name already exists.
            InvalidTaskNameError: the name is not a Python identifier.
            PipelineDefinitionError: the function's signature cannot be used, or
                ``timeout`` is not positive.
            ValueError: a retry option is out of range (see :class:`~asyncflow.RetryPolicy`).
        """
        retry_types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        policy = retry_policy(retries, retry_delay, backoff, max_delay, jitter, retry_types)

        if fn is None:  # the decorator; not a closure, whose cells would be made on every call
            return functools.partial(
                self.task,
                name=name,
                inputs=inputs,
                after=after,
                retries=retries,
                retry_delay=retry_delay,
                backoff=backoff,
                max_delay=max_delay,
                jitter=jitter,
                retry_on=retry_on,
                timeout=timeout,
                checkpoint=checkpoint,
                cache_key_fn=cache_key_fn,
                tags=tags,
                executor=executor,
                outputs=outputs,
                serializer=serializer,
            )
        after_names = after_names_of(after, self._by_fn, self._tasks, self.name) if after else ()
        task = make_task(
            fn,
            name=name,
            inputs=inputs,
            after=after_names,
            retry=policy,
            timeout=timeout,
            checkpoint=checkpoint,
            cache_key_fn=cache_key_fn,
            tags=one_or_many(tags),
            executor=executor,
            outputs=one_or_many(outputs),
            serializer=serializer,
        )
        if task.name in self._tasks:
            raise DuplicateTaskError(
                f"pipeline {self.name!r} already has a task named {task.name!r}; "
                "pass name='...' to register the function under another name"
            )
        self._tasks[task.name] = task
        if type(fn) is not functools.partial:  # a fan-out's partials: after_names_of scans for them
            self._by_fn.setdefault(id(fn), task.name)
        self._graph = None
        return fn

    def validate(self) -> Graph:
        """Check the whole pipeline and return its DAG (cached until a task is added).

        Raises:
            UnknownDependencyError, UnboundParameterError, CycleError: see
                :func:`asyncflow._graph.build_graph`.
        """
        if self._graph is None:
            self._graph = build_graph(list(self._tasks.values()))
        return self._graph

    def resolve_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """The pipeline's default parameters updated with ``params``.

        Raises:
            ParamError: ``params`` has a key the pipeline does not declare (the message
                suggests the closest declared one).
        """
        merged = dict(self.params)
        for key, value in (params or {}).items():
            if key not in self.params:
                close = difflib.get_close_matches(key, list(self.params), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                declared = ", ".join(sorted(self.params)) or "none"
                raise ParamError(
                    f"pipeline {self.name!r} has no parameter {key!r}{hint} (declared: {declared})"
                )
            merged[key] = value
        return merged

    async def run(
        self,
        params: Mapping[str, Any] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        force: bool = False,
        max_concurrency: int | None = None,
        fail_fast: bool = False,
        *,
        listeners: Sequence[Listener] = (),
        log: bool = True,
        checkpoints: bool = True,
        store: CheckpointStore | None = None,
        run_id: str | None = None,
        seed: int | None = None,
        only: Iterable[str] | None = None,
        pools: Mapping[str, int] | None = None,
        record: bool | RunRecorder = False,
        lock: LockMode | None = "fail",
        executor: Executor | str | None = None,
        threads: int | None = None,
        warn_blocking: float | None = None,
    ) -> RunResult:
        """Run the pipeline once, inside the caller's event loop (asyncio or trio).

        Args:
            params: run parameters overriding the pipeline's defaults.
            workdir: the working directory (created if missing); checkpoints go to
                ``<workdir>/checkpoints/<pipeline>/``. Defaults to ``./.asyncflow``, which
                is created only when something is written there (the default store, a
                record): a run with ``checkpoints=False`` or another ``store`` and no
                ``workdir`` writes nothing to disk.
            force: run every task even if its checkpoint matches (new checkpoints are
                still written); the CLI's ``--no-skip``.
            max_concurrency: the most tasks running at once; ``None`` for no limit.
            fail_fast: cancel the rest of the run at the first failed task.
            listeners: callables receiving every :class:`~asyncflow.Event`, in order.
            log: also log events through loguru (silent unless the application enabled
                ``"asyncflow"`` logging and added a sink; decided as the run starts, and
                when nothing would be logged the run builds no log records at all).
            checkpoints: ``False`` to neither read nor write checkpoints (results stay
                in memory, as returned).
            store: a :class:`~asyncflow.CheckpointStore` to use instead of the files
                under ``workdir`` (e.g. :class:`~asyncflow.MemoryStore`).
            run_id: the run's id; a fresh one by default.
            seed: seed for the jitter's random numbers, for reproducible waits.
            only: run just these tasks (names); the tasks upstream of them that are not
                listed are loaded from their checkpoints (even stale ones), except those
                declared ``checkpoint=False``, which run again as on every run, and mapped
                tasks (:func:`~asyncflow.each`: no checkpoint of their own), whose instances
                are cached when their checkpoints match, else run; all other tasks are left
                out of the run and of its result.
            pools: ``{tag: limit}``: at most ``limit`` tasks carrying ``tag`` (see the
                ``tags`` option of :meth:`task`) run at once, on top of ``max_concurrency``.
            record: write the run record, ``<workdir>/runs/<run id>/record.json`` (see
                :class:`~asyncflow.RunRecorder`), also when the run is cancelled; a record
                that cannot be written is logged, never raised. Default ``False`` (the
                command line records every run). A :class:`~asyncflow.RunRecorder`
                instance is used as the recorder, so the caller can read it too.
            lock: a run that writes its checkpoints under ``workdir`` (the default
                store) holds ``<workdir>/.lock`` from start to end, so two runs never
                write to one working directory at once. When another run holds it:
                ``"fail"`` (default) raises :class:`~asyncflow.WorkdirLockedError` naming
                that run at once; ``"wait"`` waits until it is released (the wait is
                cancellable); ``None`` takes no lock. Once held, temporary files left in
                the checkpoint directory by a crashed run are removed. Runs with
                ``checkpoints=False`` or another ``store`` take no lock.
            executor: where the plain ``def`` tasks compute: ``None`` or ``"local"``
                (default: worker threads), ``"processes"`` (a
                :class:`~asyncflow.ProcessExecutor`), ``"dask"`` (a
                :class:`~asyncflow.DaskExecutor` on a local cluster started for the run),
                or any :class:`~asyncflow.Executor`. Coroutine tasks always run on the
                event loop, and tasks declared ``executor="local"`` in worker threads.
            threads: the most worker threads computing plain ``def`` tasks at once, in a
                limiter of this run's own (not anyio's process-wide 40); CLI ``--threads``.
                ``None`` (default): ``max_concurrency`` if set, else the number of plain
                ``def`` tasks that run in threads, at least 40 and at most 256. A task's
                ``timeout`` starts once it has a thread.
            warn_blocking: seconds; log a warning naming the coroutine task (and the
                line) that holds the event loop longer than this without awaiting. Default
                ``None``: off (the CLI's ``--warn-blocking`` turns it on, at 0.25 s).

        Returns:
            the :class:`~asyncflow.RunResult`; failed tasks do not raise (see
            :meth:`~asyncflow.RunResult.raise_for_failures`).

        Raises:
            PipelineDefinitionError: the pipeline is invalid, or an ``outputs`` template
                names a field that is neither ``workdir`` nor a parameter (before anything
                runs).
            ParamError: an undeclared parameter.
            UnknownDependencyError: ``only`` names a task that does not exist.
            MissingCheckpointError: ``only`` needs upstream results that were never
                checkpointed (nothing has run).
            ValueError: ``max_concurrency``, ``threads`` or a pool limit is not a positive int,
                ``warn_blocking`` not a positive number of seconds, or
                ``executor`` is not a known name or an :class:`~asyncflow.Executor`.
            OSError: the working directory cannot be created.
            WorkdirLockedError: ``lock="fail"`` and another run holds the working directory.
            ValueError: ``lock`` is not ``"fail"``, ``"wait"`` or ``None``.
            ExecutorError: the executor cannot be used (e.g. ``"dask"`` on trio, or an
                unreachable scheduler); raised before any task runs.
            Cancellation: when the caller is cancelled, the running tasks are cancelled
                and awaited first; nothing is left running.
        """
        try:
            graph = self.validate()
            return await launch(
                graph,
                pipeline=self.name,
                params=self.resolve_params(params),
                serializer=self.serializer,
                workdir=workdir,
                checkpoints=checkpoints,
                store=store,
                record=record,
                lock=lock,
                log=log,
                listeners=listeners,
                run_id=run_id,
                executor=executor,
                force=force,
                max_concurrency=max_concurrency,
                fail_fast=fail_fast,
                seed=seed,
                selected=None if only is None else list(only),
                pools=pools,
                threads=threads,
                warn_blocking=warn_blocking,
            )
        except BaseException:
            # An EventStream's reader waits for RunFinished, which a run that never
            # started (an invalid parameter, a held lock, ...) does not send: end it here.
            for listener in listeners:
                if isinstance(listener, EventStream):
                    listener.close()
            raise

    def run_sync(
        self, *args: Any, backend: Literal["asyncio", "trio"] = "asyncio", **kwargs: Any
    ) -> RunResult:
        """Run the pipeline from synchronous code: :meth:`run` under ``anyio.run``.

        Takes the same arguments as :meth:`run`, plus ``backend``. Must not be called
        from inside a running event loop (anyio raises ``RuntimeError`` then).
        """

        async def main() -> RunResult:
            return await self.run(*args, **kwargs)

        return anyio.run(main, backend=backend)

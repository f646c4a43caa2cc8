"""Running a graph once: the checks and set-up around :class:`asyncflow._runner.Run`.

:func:`execute` is the runner's entry point (``Pipeline.run`` calls it): it checks the
limits, sizes the run's worker threads, loads the checkpoints a partial run needs for its
unselected upstream tasks, opens the executor and the loop-blocking watchdog when asked,
then lets :class:`~asyncflow._runner.Run` schedule the tasks (see that module's
docstring for the policy and the state).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._errors import MissingCheckpointError
from ._events import Listener
from ._executors import Executor, LocalExecutor, WorkerThreads, default_threads
from ._graph import Graph
from ._result import RunResult
from ._runner import Run, new_run_id
from ._serializers import JSON, Serializer
from ._store import Checkpoint, CheckpointStore
from ._watchdog import watch_loop

__all__ = ["execute"]


async def execute(
    graph: Graph,
    *,
    pipeline: str,
    params: Mapping[str, Any],
    workdir: Path,
    store: CheckpointStore | None,
    force: bool = False,
    max_concurrency: int | None = None,
    fail_fast: bool = False,
    listeners: Sequence[Listener] = (),
    run_id: str | None = None,
    seed: int | None = None,
    selected: Iterable[str] | None = None,
    pools: Mapping[str, int] | None = None,
    executor: Executor | None = None,
    serializer: Serializer = JSON,
    threads: int | None = None,
    warn_blocking: float | None = None,
) -> RunResult:
    """Run ``graph`` once and return its :class:`RunResult`; see the module docstring.

    With ``selected`` (task names), only those tasks run; the tasks upstream of them that
    are not selected are loaded from their checkpoints whatever their cache key (with a
    warning when it is stale) — those declared ``checkpoint=False`` run again, as on every
    run, and so do unselected mapped tasks (see :func:`~asyncflow.each`), which have no
    checkpoint of their own: each of their instances is loaded when its checkpoint
    matches and runs when it does not — and every other task is left out of the run and
    its result.

    ``pools`` maps a tag to the most tasks with that tag that may run at once, on top of
    ``max_concurrency`` (like Airflow pools or Prefect tag limits).

    ``executor`` runs the plain ``def`` tasks not declared ``executor="local"``; it is
    opened before the first task starts and closed after the last one ended. ``None``: the
    tasks run in worker threads, with nothing to open (see :mod:`asyncflow._executors`).

    ``threads`` is the most worker threads the run's plain ``def`` tasks use at once, in
    a limiter of the run's own (never anyio's shared default of 40); ``None``: see
    :func:`~asyncflow._executors.default_threads`.

    ``warn_blocking`` (seconds): warn, naming the task, when a coroutine task holds the
    event loop longer than this (see :mod:`asyncflow._watchdog`); ``None``: no watchdog.

    Raises:
        MissingCheckpointError: ``selected`` needs upstream results that have no checkpoint
            (or the run has no store); nothing has run.
        UnknownDependencyError: ``selected`` names a task that does not exist.
        ValueError: ``max_concurrency`` or ``threads`` is not a positive int, or
            ``warn_blocking`` not a positive number of seconds.
        ExecutorError: ``executor`` cannot be used; no task has run.
        anyio's cancellation exception: the caller was cancelled; every running task was
            cancelled and awaited before it propagates.
    """
    if max_concurrency is not None and (not isinstance(max_concurrency, int) or max_concurrency < 1):
        raise ValueError(f"max_concurrency must be a positive int or None, not {max_concurrency!r}")
    for tag, limit in (pools or {}).items():
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"the limit of pool {tag!r} must be a positive int, not {limit!r}")
    if type(executor) is LocalExecutor:  # its threads are the run's own threads
        executor = None
    if threads is None:
        in_threads = sum(
            1
            for node in graph.nodes
            if not node.task.is_async and (executor is None or node.task.executor == "local")
        )
        threads = default_threads(in_threads, max_concurrency)
    worker_threads = WorkerThreads(threads)
    preloaded: dict[int, Checkpoint] = {}
    if selected is not None:
        names = list(selected)  # read twice below: an iterator must not run dry
        graph = graph.subgraph(graph.upstream_closure(graph.indices(names)))
        chosen = {graph.index[n] for n in names}
        missing = []
        for node in graph.nodes:
            if node.index in chosen or not node.task.checkpoint or node.maps:
                # A task that keeps no checkpoint runs again, as on every run; a mapped
                # task has none of its own: it is expanded, and its instances are cached
                # when their checkpoints match (else they run).
                continue
            wanted = node.task.serializer or serializer
            checkpoint = await store.load(node.name, wanted) if store is not None else None
            if checkpoint is None or checkpoint.serializer != wanted.name:
                missing.append(node.name)
            else:
                preloaded[node.index] = checkpoint
        if missing:
            raise MissingCheckpointError(missing)
    run = Run(
        graph,
        pipeline=pipeline,
        params=params,
        workdir=workdir,
        store=store,
        force=force,
        max_concurrency=max_concurrency,
        fail_fast=fail_fast,
        listeners=listeners,
        run_id=run_id or new_run_id(),
        rng=random.Random(seed),
        preloaded=preloaded,
        pools=pools or {},
        serializer=serializer,
        threads=worker_threads,
    )
    if selected is not None:
        run.unselected_maps = frozenset(i for i in graph.mapped if i not in chosen)

    if warn_blocking is not None:
        async with watch_loop(graph, warn_blocking, run.run_id):
            return await _execute(run, executor)
    return await _execute(run, executor)


async def _execute(run: Run, executor: Executor | None) -> RunResult:
    if executor is None:
        return await run.execute()
    async with executor.open() as submit:
        run.place(submit)
        return await run.execute()

"""What a run needs around the scheduler: its working directory, store, lock, listeners, record.

:func:`launch` is ``Pipeline.run`` once the pipeline is validated and its parameters
resolved: it picks the checkpoint store (the default :func:`default_file_store`, the
caller's, or none), creates the working directory only when something is written there,
takes the working directory's lock for the default store, adds the logging listener and
the run recorder, runs :func:`~asyncflow._execute.execute`, and always releases the lock
and saves the record, also when the run fails or is cancelled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from ._events import Listener
from ._execute import execute
from ._executors import Executor, resolve_executor
from ._graph import Graph
from ._lock import LOCK_MODES, LockMode, WorkdirLock
from ._logging import LogListener
from ._recorder import RunRecorder, save_after_run
from ._result import RunResult
from ._runner import new_run_id
from ._serializers import Serializer
from ._store import CheckpointStore, FileStore, file_stem
from ._task import missing_outputs

__all__ = ["DEFAULT_WORKDIR", "default_file_store", "launch"]

DEFAULT_WORKDIR = Path(".asyncflow")
"""The working directory used when none is given, relative to the current directory."""


def default_file_store(workdir: Path, pipeline: str) -> FileStore:
    """The store a run uses by default: ``<workdir>/checkpoints/<pipeline>/``.

    Each pipeline has a folder of its own (named by :func:`~asyncflow._store.file_stem`),
    so pipelines can share a working directory; asyncflow 0.1's ``checkpoints/<task>.json``
    files are still found (``legacy=``).
    """
    return FileStore(workdir / "checkpoints" / file_stem(pipeline), legacy=workdir / "checkpoints")


async def launch(
    graph: Graph,
    *,
    pipeline: str,
    params: Mapping[str, Any],
    serializer: Serializer,
    workdir: str | os.PathLike[str] | None,
    checkpoints: bool,
    store: CheckpointStore | None,
    record: bool | RunRecorder,
    lock: LockMode | None,
    log: bool,
    listeners: Sequence[Listener],
    run_id: str | None,
    executor: Executor | str | None,
    selected: Iterable[str] | None,
    **options: Any,
) -> RunResult:
    """Run ``graph`` with the set-up described in the module docstring.

    The arguments are ``Pipeline.run``'s (see its docstring; ``params`` with the defaults
    applied, ``selected`` is its ``only``); ``options`` go to
    :func:`~asyncflow._execute.execute` as they are (``force``, ``max_concurrency``,
    ``fail_fast``, ``seed``, ``pools``, ``threads``, ``warn_blocking``).

    Raises:
        PipelineDefinitionError: an ``outputs`` template cannot be formatted.
        ValueError: ``lock`` is not ``"fail"``, ``"wait"`` or ``None``, or ``executor``
            is unknown.
        OSError: the working directory cannot be created.
        WorkdirLockedError: ``lock="fail"`` and another run holds the working directory.
        whatever :func:`~asyncflow._execute.execute` raises.
    """
    root = Path(workdir) if workdir is not None else DEFAULT_WORKDIR
    for node in graph.nodes:
        if node.task.outputs:
            missing_outputs(node.task, root.resolve(), params)  # a bad template raises here
    chosen_executor = resolve_executor(executor)
    default_store = checkpoints and store is None
    if default_store:
        store = default_file_store(root, pipeline)
    if not checkpoints:
        store = None
    if default_store or record or workdir is not None:
        # Only what is asked for touches the disk: a run in memory writes nothing.
        await anyio.Path(root).mkdir(parents=True, exist_ok=True)
    run_id = run_id or new_run_id()
    if lock is not None and lock not in LOCK_MODES:
        raise ValueError(f"lock must be 'fail', 'wait' or None, not {lock!r}")
    held = None
    if lock is not None and default_store and isinstance(store, FileStore):
        held = WorkdirLock(root, mode=lock, run_id=run_id, pipeline=pipeline, cleanup=(store.directory,))
        await held.acquire()
    logs = log and LogListener.wanted()  # decided once, as the run starts
    log_listener = LogListener.for_run(run_id) if logs else None
    # Our listeners go in as functions (the log's fastest, LogListener.listen) and bound
    # methods: calling one costs a third of calling an instance through __call__, twice or
    # more per task.
    all_listeners: list[Listener] = (
        [*listeners, log_listener.listen] if log_listener is not None else list(listeners)
    )
    recorder = record if isinstance(record, RunRecorder) else RunRecorder() if record else None
    if recorder is not None:
        all_listeners.append(recorder.__call__)
    try:
        return await execute(
            graph,
            pipeline=pipeline,
            params=params,
            workdir=root.resolve(),
            store=store,
            listeners=all_listeners,
            run_id=run_id,
            selected=selected,
            executor=chosen_executor,
            serializer=serializer,
            **options,
        )
    finally:
        if log_listener is not None:
            log_listener.close()
        if held is not None:
            held.release()
        if recorder is not None:
            await save_after_run(recorder, root / "runs")

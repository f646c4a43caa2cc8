"""A run's state and what finishing a task does to it.

:class:`RunState` holds, per task, in lists indexed by node number: ``remaining``
(unfinished upstream count), ``states``, ``results``, ``keys`` (cache keys), ``digests``
(result digests, for downstream keys), ``sizes`` (serialized bytes), ``attempts``,
``started``/``finished`` (event-loop clock), ``errors`` and ``reasons``; plus the ready
deque, the pools, the group-commit queue and the counters of the workers. Its methods
are the outcomes: :meth:`~RunState.succeed` (which readies the downstream tasks whose
upstream count reaches zero), :meth:`~RunState.fail` (which skips everything below, or
cancels the run under ``fail_fast``), :meth:`~RunState.cached`, :meth:`~RunState.stop`
and :meth:`~RunState.finish_unfinished`; each emits its event to the listeners. The
scheduler that drives them is :class:`asyncflow._runner.Run`, its subclass.
"""

from __future__ import annotations

import random
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from loguru import logger

from ._cache import CacheKey
from ._checkpointing import Stager
from ._context import log_safely
from ._events import (
    Event,
    Listener,
    RunFinished,
    TaskCancelled,
    TaskFailed,
    TaskSkipped,
    TaskState,
    build_cached,
    build_succeeded,
)
from ._executors import Submit, WorkerThreads
from ._graph import Graph, Node
from ._instances import Expansion
from ._mapping import KEYED, MappedTasks
from ._result import RunResult, TaskRuns
from ._serializers import Serializer
from ._store import Checkpoint, CheckpointStore

__all__ = ["RunState"]

PENDING, RUNNING = TaskState.PENDING, TaskState.RUNNING


class _Pool:
    """A concurrency limit shared by the tasks with one tag: slots in use and parked tasks."""

    __slots__ = ("limit", "running", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting: deque[int] = deque()


class RunState(MappedTasks):
    """The state of one run of a graph, and its outcomes (see the module docstring).

    The columns grow at run time when a mapped task is expanded into its instances (see
    :mod:`asyncflow._mapping`); ``static`` is the number of tasks of the graph, so an
    index from ``static`` on is an instance.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        pipeline: str,
        params: Mapping[str, Any],
        workdir: Path,
        store: CheckpointStore | None,
        force: bool,
        max_concurrency: int | None,
        fail_fast: bool,
        listeners: Sequence[Listener],
        run_id: str,
        rng: random.Random,
        preloaded: Mapping[int, Checkpoint],
        pools: Mapping[str, int],
        serializer: Serializer,
        threads: WorkerThreads,
    ) -> None:
        n = len(graph.nodes)
        self.graph = graph
        self.nodes: list[Node] = list(graph.nodes)
        self.static = n
        self.index: Mapping[str, int] = graph.index  # copied once instances are added
        self.expansions: dict[int, Expansion] = {}
        self.pipeline = pipeline
        self.params = params
        self.workdir = workdir
        self.store = store
        self.force = force
        self.limit = max_concurrency if max_concurrency is not None else sys.maxsize
        self.fail_fast = fail_fast
        self.listeners = list(listeners)
        self.run_id = run_id
        self.rng = rng
        self.preloaded = preloaded
        # The mapped tasks above a partial run's selection: expanded, not preloaded; their
        # instances are looked up even when the run is forced (--no-skip forces the
        # selection only). Set by asyncflow._execute.execute.
        self.unselected_maps: frozenset[int] = frozenset()
        self.pools = {tag: _Pool(limit) for tag, limit in pools.items()}
        self.pool_tags: list[tuple[str, ...]] = (
            [tuple(t for t in node.task.tags if t in pools) for node in graph.nodes] if pools else []
        )
        self.remaining = [len(node.upstream) for node in graph.nodes]
        self.states = [PENDING] * n
        self.results: list[Any] = [None] * n
        self.keys: list[str | None] = [None] * n
        self.digests: list[str | None] = [None] * n  # result digests, for downstream keys
        self.marks: list[str | None] = [None] * n  # see MappedTasks.mark
        self.sizes: list[int | None] = [None] * n  # serialized result sizes, in bytes
        self.serializer = serializer
        # Group commit (a store with stage/commit, such as FileStore): checkpoints staged
        # by finished tasks, (node, checkpoint, key), waiting for the next commit.
        self.stager: Stager | None = store if isinstance(store, Stager) else None
        self.staged: list[tuple[int, Checkpoint, CacheKey]] = []
        self.committing = False
        self.attempts = [0] * n
        self.started: list[float | None] = [None] * n
        self.finished: list[float | None] = [None] * n
        self.errors: list[BaseException | None] = [None] * n
        # Where each plain def task runs, once an executor is placed (see place()); until
        # then none: every plain def task runs in a worker thread, at no cost per task.
        self.threads = threads
        self.thread_submit = threads.submit
        self.submits: list[Submit] | None = None
        self.reasons: list[str | None] = [None] * n
        self.ready: deque[int] = deque()
        self.running = 0
        self.pending = 0
        self.yielding = 0
        self.cancel_reason: str | None = None
        self.stopped_by: KeyboardInterrupt | None = None
        self.tg: TaskGroup | None = None
        self.now: Callable[[], float] = anyio.current_time  # the backend's own clock, bound in execute()

    # -- events ---------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                # A new list, so that this loop goes on over the old one undisturbed.
                self.listeners = [other for other in self.listeners if other is not listener]
                log_safely(
                    logger,
                    "ERROR",
                    "event listener {!r} raised and was disabled for run {}",
                    listener,
                    self.run_id,
                    exception=True,
                )

    def emit_finished(self, result: RunResult) -> None:
        self.emit(
            RunFinished(
                run_id=self.run_id,
                time=self.now(),
                pipeline=self.pipeline,
                ok=result.ok,
                duration=result.duration,
                counts=result.counts,
            )
        )

    def finish_unfinished(self, reason: str) -> None:
        t = self.now()
        for i, state in enumerate(self.states):
            if state is PENDING or state is RUNNING:
                self.states[i] = TaskState.CANCELLED
                self.reasons[i] = reason
                if self.started[i] is not None:
                    self.finished[i] = t
                if self.listeners:
                    self.emit(
                        TaskCancelled(run_id=self.run_id, time=t, task=self.nodes[i].name, reason=reason)
                    )

    def build_result(self, mono0: float, wall0: float, mono1: float) -> RunResult:
        tasks = TaskRuns(
            index=self.index,
            states=self.states,
            attempts=self.attempts,
            started=self.started,
            finished=self.finished,
            errors=self.errors,
            results=self.results,
            keys=self.keys,
            reasons=self.reasons,
            offset=wall0 - mono0,
            sizes=self.sizes,
            nodes=self.nodes if self.expansions else None,
            expansions={t: e.indices for t, e in self.expansions.items()},
        )
        return RunResult(
            run_id=self.run_id,
            pipeline=self.pipeline,
            params=dict(self.params),
            started_at=wall0,
            finished_at=wall0 + (mono1 - mono0),
            duration=mono1 - mono0,
            tasks=tasks,
        )

    def cached(self, i: int, checkpoint: Checkpoint) -> None:
        """Task ``i`` is CACHED: ``checkpoint`` stands in for running it."""
        self.keys[i] = checkpoint.cache_key
        self.digests[i] = checkpoint.cutoff
        self.marks[i] = KEYED
        self.sizes[i] = checkpoint.size
        if self.listeners:
            self.emit(build_cached(self.run_id, self.now(), self.nodes[i].name, checkpoint.cache_key))
        self.succeed(i, checkpoint.result, TaskState.CACHED)

    # -- outcomes -------------------------------------------------------------------------

    def succeed(self, i: int, result: Any, state: TaskState) -> None:
        t = self.now()
        self.results[i] = result
        self.states[i] = state
        self.finished[i] = t
        if state is TaskState.SUCCEEDED and self.listeners:
            start = self.started[i]
            assert start is not None
            self.emit(build_succeeded(self.run_id, t, self.nodes[i].name, self.attempts[i], t - start))
        remaining, states, ready = self.remaining, self.states, self.ready
        for d in self.nodes[i].downstream:
            remaining[d] -= 1
            if remaining[d] == 0 and states[d] is PENDING:
                ready.append(d)
        if i >= self.static:
            self.instance_ended(i)

    def stop(self, i: int, error: KeyboardInterrupt) -> None:
        """Task ``i`` raised ``KeyboardInterrupt``: it fails, the run is cancelled, and
        :meth:`execute` re-raises ``error`` (with a note naming the task) once every task
        has ended, on asyncio as on trio (asyncio would let it escape the event loop)."""
        name = self.nodes[i].name
        error.add_note(f"raised by asyncflow task {name!r} of pipeline {self.pipeline!r}")
        self.fail(i, error)
        if self.stopped_by is None:
            self.stopped_by = error
        if self.cancel_reason is None or self.cancel_reason.startswith("fail_fast"):
            self.cancel_reason = f"task {name!r} raised KeyboardInterrupt"
            assert self.tg is not None
            self.tg.cancel_scope.cancel()

    def skip_below(self, i: int, start: Sequence[int], t: float) -> None:
        """Skip the pending tasks in ``start`` (downstream of task ``i``, which did not
        succeed) and everything below them, each visited once."""
        nodes, states, static = self.nodes, self.states, self.static
        stack = [(d, i) for d in reversed(start)]
        while stack:
            d, cause = stack.pop()
            if states[d] is not PENDING:
                continue
            verb = "failed" if states[cause] is TaskState.FAILED else "was skipped"
            reason = f"upstream task {nodes[cause].name!r} {verb}"
            states[d] = TaskState.SKIPPED
            self.reasons[d] = reason
            if self.listeners:
                self.emit(
                    TaskSkipped(
                        run_id=self.run_id,
                        time=t,
                        task=nodes[d].name,
                        upstream=nodes[cause].name,
                        reason=reason,
                    )
                )
            stack.extend((dd, d) for dd in reversed(nodes[d].downstream))
            if d >= static:
                self.instance_ended(d)

    def fail(self, i: int, error: BaseException) -> None:
        t = self.now()
        nodes = self.nodes
        self.states[i] = TaskState.FAILED
        self.errors[i] = error
        self.finished[i] = t
        if self.listeners:
            start = self.started[i]
            assert start is not None
            self.emit(
                TaskFailed(
                    run_id=self.run_id,
                    time=t,
                    task=nodes[i].name,
                    attempts=self.attempts[i],
                    error=error,
                    duration=t - start,
                )
            )
        self.skip_below(i, nodes[i].downstream, t)
        if i >= self.static:
            self.instance_ended(i)
        if self.fail_fast and self.cancel_reason is None:
            self.cancel_reason = f"fail_fast: task {nodes[i].name!r} failed"
            assert self.tg is not None
            self.tg.cancel_scope.cancel()

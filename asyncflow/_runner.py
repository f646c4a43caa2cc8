"""The scheduler: runs a validated :class:`~asyncflow._graph.Graph` once.

Policy
------
Event-driven, not in waves. Every task keeps a count of upstream tasks that have not yet
finished. When a task succeeds (or is loaded from its checkpoint) the counts of its
downstream tasks drop by one, and each that reaches zero is appended to the ready queue at
once; the whole run therefore costs O(tasks + edges). Ready tasks start in first-in,
first-out order, roots in definition order, so the same graph with ``max_concurrency=1``
always gives the same order of events.

Workers. Tasks run in anyio tasks of one task group, called workers. A worker takes a ready
task, runs it to its end, then takes the next ready task, and ends when none is left.
Spawning an anyio task costs more than running a no-op task, so workers are started
lazily: a worker that takes a task while others are still waiting starts one *probe*
worker (unless one is already waiting to start). If the running tasks never await, the
first worker simply takes the next task itself and the probe finds nothing to do. If the
probe does get to run while tasks are still waiting, every worker is blocked in a task, so
it starts one worker per waiting task at once. Either way every ready task starts as soon
as the event loop can run it (within two loop iterations), as concurrently as with one
anyio task per task, while a burst of quick tasks reuses one worker. A worker yields to the
event loop every few hundred tasks that did not await; while it does, probes do not
count it as blocked. ``max_concurrency`` bounds the number of tasks being run at
once: a worker takes a task only while fewer are running. Pools (``pools={tag: limit}``)
add a limit per task tag: a task whose pool is full is parked in that pool's queue and
put back at the front of the ready queue when a slot of the pool frees. Waiting happens in
queues, never while holding a slot, so no combination of limits can deadlock.

Attempts. Each attempt of a task runs under a cancel scope only when the task has a
``timeout`` (``anyio.move_on_after``). A failed attempt whose exception the task's
:class:`~asyncflow.RetryPolicy` retries is followed by ``anyio.sleep(backoff)``; anything
else fails the task. Cancellation is never caught here except to record it and re-raise.
An attempt of a coroutine task awaits its coroutine here, on the event loop; an attempt of
a plain ``def`` task awaits the run's executor (see :mod:`asyncflow._executors`: one of
the run's own worker threads by default, at most ``threads`` at once, else a process pool
or a Dask cluster, opened before the first task and closed after the last), so retries,
timeouts and cancellation work the same wherever it computes. A pickling error or a
forgotten ``await`` is never retried.

Failures. A failed task marks every task downstream of it SKIPPED (each visited once);
everything else keeps running. With ``fail_fast`` the first failure cancels the task
group instead, and every unfinished task ends CANCELLED. A task that raises
``KeyboardInterrupt`` fails and cancels the run the same way, and the run then re-raises
that ``KeyboardInterrupt`` (noting the task) to its caller, on both backends.

Checkpoints. When the run has a store, each task's cache key is computed when it becomes
ready (see :mod:`asyncflow._cache`); a checkpointed task whose stored key matches is
CACHED without running, and a succeeded task's result is saved (and what downstream tasks
receive is the saved JSON value).

State. Per task, in lists indexed by node number: ``remaining`` (unfinished upstream
count), ``states``, ``results``, ``keys``, ``attempts``, ``started``/``finished``
(event-loop clock), ``errors`` and ``reasons``. Plus the ready deque, the number of
tasks ``running``, the workers ``pending`` (started but not yet running) and those
``yielding`` voluntarily.

Events go to the listeners synchronously; with no listener no event object is built.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from loguru import logger

from ._attempt import call_task, run_attempt
from ._cache import CacheKey, KeyBase, TrackedParams, base_key, finish_key, result_digest, volatile_key
from ._checkpointing import Stager, lookup, recorded_reads, save, stage, write_failed
from ._context import RunContext, log_safely, task_logger
from ._errors import (
    CheckpointError,
    ForgottenAwaitError,
    MissingCheckpointError,
    TaskPicklingError,
)
from ._events import (
    AttemptFailed,
    Event,
    Listener,
    RunFinished,
    RunStarted,
    TaskCached,
    TaskCancelled,
    TaskFailed,
    TaskSkipped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
)
from ._executors import Executor, LocalExecutor, Submit, WorkerThreads, default_threads
from ._graph import Graph, Node
from ._result import RunResult, TaskRuns
from ._serializers import JSON, Serializer
from ._store import Checkpoint, CheckpointStore
from ._task import missing_outputs
from ._watchdog import watch_loop

__all__ = ["execute", "new_run_id"]

PENDING, RUNNING = TaskState.PENDING, TaskState.RUNNING
_YIELD_EVERY = 256
"""A worker yields to the event loop after this many tasks in a row that never awaited."""


def _event_loop_clock() -> Callable[[], float]:
    """The running event loop's clock, looked up once per run.

    The same clock as ``anyio.current_time()`` (so trio's ``MockClock`` applies), without
    anyio's per-call backend lookup, which costs more than the rest of a task's bookkeeping.
    """
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        import trio  # not asyncio, so anyio is running on trio

        return trio.lowlevel.current_clock().current_time


def new_run_id() -> str:
    """A fresh run id: UTC time to the second and 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class _Pool:
    """A concurrency limit shared by the tasks with one tag: slots in use and parked tasks."""

    __slots__ = ("limit", "running", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting: deque[int] = deque()


class _Run:
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
        self.nodes = graph.nodes
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
        self.pools = {tag: _Pool(limit) for tag, limit in pools.items()}
        self.pool_tags: list[tuple[str, ...]] = (
            [tuple(t for t in node.task.tags if t in pools) for node in graph.nodes] if pools else []
        )
        self.remaining = [len(node.upstream) for node in graph.nodes]
        self.states = [PENDING] * n
        self.results: list[Any] = [None] * n
        self.keys: list[str | None] = [None] * n
        self.digests: list[str | None] = [None] * n  # result digests, for downstream keys
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

    # -- the run --------------------------------------------------------------------------

    async def execute(self) -> RunResult:
        now = self.now = _event_loop_clock()
        mono0, wall0 = now(), time.time()
        if self.listeners:
            self.emit(
                RunStarted(
                    run_id=self.run_id,
                    time=mono0,
                    pipeline=self.pipeline,
                    tasks=len(self.nodes),
                    params=self.params,
                    upstream=self.graph.upstream_names,
                )
            )
        self.ready.extend(i for i, r in enumerate(self.remaining) if r == 0)
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                if self.ready:
                    self.pending = 1
                    tg.start_soon(self.worker, False)
        except BaseException:
            self.finish_unfinished("the run was cancelled by its caller")
            if self.listeners:  # RunFinished is always the last event, also here
                self.emit_finished(self.build_result(mono0, wall0, now()))
            raise
        finally:
            self.tg = None
        if self.cancel_reason is not None:
            self.finish_unfinished(self.cancel_reason)
        result = self.build_result(mono0, wall0, now())
        if self.listeners:
            self.emit_finished(result)
        if self.stopped_by is not None:
            raise self.stopped_by
        return result

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

    async def worker(self, probe: bool = True) -> None:
        self.pending -= 1
        ready = self.ready
        pool_tags = self.pool_tags
        batch = probe and not self.yielding  # every other worker is blocked in a task
        streak = 0
        while ready and self.running < self.limit and self.cancel_reason is None:
            i = ready.popleft()
            tags = pool_tags[i] if pool_tags else ()
            if tags and not self.acquire(i, tags):
                continue
            self.running += 1
            if ready and (batch or not self.pending):
                self.spawn(len(ready) if batch else 1)
            batch = False
            try:
                await self.run_task(i)
            finally:
                self.running -= 1
                if tags:
                    self.release(tags)
            if self.store is not None or not self.nodes[i].task.is_async:
                # A thread, a process or a shielded checkpoint write defers cancellation:
                # deliver it now, before this worker starts a downstream task that may
                # never reach an await of its own.
                await anyio.lowlevel.checkpoint_if_cancelled()
            streak += 1
            if streak == _YIELD_EVERY:
                streak = 0
                self.yielding += 1
                try:
                    await anyio.lowlevel.checkpoint()
                finally:
                    self.yielding -= 1

    def spawn(self, wanted: int) -> None:
        """Have ``wanted`` workers waiting to start, counting those already pending."""
        count = min(wanted, self.limit - self.running) - self.pending
        if count > 0:
            assert self.tg is not None
            self.pending += count
            for _ in range(count):
                self.tg.start_soon(self.worker)

    def acquire(self, i: int, tags: tuple[str, ...]) -> bool:
        """Take a slot in every pool of task ``i``, or park it in the first full pool's queue.

        A parked task holds no slot; :meth:`release` puts it back on the ready queue.
        """
        pools = self.pools
        for tag in tags:
            pool = pools[tag]
            if pool.running >= pool.limit:
                pool.waiting.append(i)
                return False
        for tag in tags:
            pools[tag].running += 1
        return True

    def release(self, tags: tuple[str, ...]) -> None:
        for tag in tags:
            pool = self.pools[tag]
            pool.running -= 1
            if pool.waiting:
                self.ready.appendleft(pool.waiting.popleft())

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
            index=self.graph.index,
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

    # -- one task -------------------------------------------------------------------------

    async def run_task(self, i: int) -> None:
        node = self.nodes[i]
        task = node.task
        self.states[i] = RUNNING
        self.started[i] = self.now()
        preloaded = self.preloaded.get(i) if self.preloaded else None
        if preloaded is not None:  # outside the selection of a partial run
            await self.warn_if_stale(node, preloaded)
            self.cached(i, preloaded)
            return
        store = self.store if task.checkpoint else None
        base: KeyBase | None = None
        prior: CacheKey | None = None
        serializer = task.serializer or self.serializer
        if store is not None:
            try:
                base = await self.base_key(node, serializer)
                found = await lookup(store, task.name, serializer, base, self.params, force=self.force)
                prior = found.key
                self.keys[i] = prior.key
                checkpoint = found.checkpoint
                if checkpoint is not None and not (task.outputs and self.outputs_missing(i)):
                    self.cached(i, checkpoint)
                    return
            except Exception as exc:  # cache_key_fn raised, unreadable store, bad outputs template
                self.fail(i, exc)
                return

        results = self.results
        kwargs = {param: results[u] for param, u in node.inputs}
        for param, group in node.gathers:
            kwargs[param] = [results[u] for u in group]
        tracked = TrackedParams(self.params) if task.wants_params or task.wants_context else None
        if task.wants_params:
            kwargs["params"] = tracked
        policy = task.retry
        attempt = 0
        result: Any = None
        while True:
            if self.cancel_reason is not None:  # fail_fast struck during an await above: start
                return  # no attempt; the task ends CANCELLED with the rest
            attempt += 1
            self.attempts[i] = attempt
            if task.wants_context:
                kwargs["context"] = self.context(task.name, attempt, tracked)
            if self.listeners:
                self.emit(
                    TaskStarted(
                        run_id=self.run_id,
                        time=self.now(),
                        task=task.name,
                        attempt=attempt,
                        cache_key=self.keys[i],
                    )
                )
            try:
                if task.timeout is None:  # one coroutine frame less on the common path
                    result = await call_task(task, kwargs, self.submit_of(i))
                else:
                    result = await run_attempt(task, kwargs, self.submit_of(i), self.threads)
            except Exception as exc:
                retry = not isinstance(exc, ForgottenAwaitError | TaskPicklingError) and policy.should_retry(
                    attempt, exc
                )
                delay = policy.delay_for(attempt, self.rng) if retry else None
                if self.listeners:
                    self.emit(
                        AttemptFailed(
                            run_id=self.run_id,
                            time=self.now(),
                            task=task.name,
                            attempt=attempt,
                            error=exc,
                            retry_in=delay,
                        )
                    )
                if delay is None:
                    self.fail(i, exc)
                    return
                await anyio.sleep(delay)
                continue
            except KeyboardInterrupt as exc:  # raised by the task (a thread's too): stop the run
                self.stop(i, exc)
                return
            break

        if store is not None:
            assert base is not None
            read = tracked.read if tracked is not None else ()
            if self.stager is not None:
                try:
                    staged = stage(self.stager, task.name, serializer, base, read, self.params, result, prior)
                except CheckpointError as exc:
                    self.fail(i, exc)
                    return
                if staged is not None:  # durable, and succeeded, with the next group commit
                    self.staged.append((i, *staged))
                    if not self.committing:
                        self.committing = True
                        assert self.tg is not None
                        self.tg.start_soon(self.commit_staged)
                    return
            try:
                saved, key = await save(store, task.name, serializer, base, read, self.params, result, prior)
            except CheckpointError as exc:
                self.fail(i, exc)
                return
            self.keys[i] = key.key
            self.digests[i] = saved.digest
            self.sizes[i] = saved.size
            result = saved.result
        self.succeed(i, result, TaskState.SUCCEEDED)

    async def commit_staged(self) -> None:
        """Make the staged checkpoints durable, a batch at a time, then succeed their tasks.

        Runs in the run's task group while checkpoints are staged. Each commit is shielded,
        so a result computed before a cancellation is still checkpointed (its task then
        ends CANCELLED with the rest, and a rerun finds it cached).
        """
        assert self.stager is not None
        try:
            while self.staged:
                batch, self.staged = self.staged, []
                try:
                    await self.stager.commit()
                except OSError as exc:
                    for i, _, _ in batch:
                        self.fail(i, write_failed(self.nodes[i].name, exc))
                    continue
                for i, checkpoint, key in batch:
                    self.keys[i] = key.key
                    self.digests[i] = checkpoint.digest
                    self.sizes[i] = checkpoint.size
                    self.succeed(i, checkpoint.result, TaskState.SUCCEEDED)
                if self.ready:
                    self.spawn(len(self.ready))
        finally:
            self.committing = False

    def cached(self, i: int, checkpoint: Checkpoint) -> None:
        """Task ``i`` is CACHED: ``checkpoint`` stands in for running it."""
        self.keys[i] = checkpoint.cache_key
        self.digests[i] = checkpoint.digest
        self.sizes[i] = checkpoint.size
        if self.listeners:
            self.emit(
                TaskCached(
                    run_id=self.run_id,
                    time=self.now(),
                    task=self.nodes[i].name,
                    cache_key=checkpoint.cache_key,
                )
            )
        self.succeed(i, checkpoint.result, TaskState.CACHED)

    async def warn_if_stale(self, node: Node, checkpoint: Checkpoint) -> None:
        """Warn when a checkpoint loaded for a partial run no longer matches its task."""
        try:
            base = await self.base_key(node, node.task.serializer or self.serializer)
            stale = finish_key(base, recorded_reads(checkpoint), self.params).key != checkpoint.cache_key
        except Exception:
            stale = True
        if stale:
            log_safely(
                logger.bind(run_id=self.run_id, task=node.name),
                "WARNING",
                "using a stale checkpoint: the task or its upstream changed since it was saved",
            )

    async def base_key(self, node: Node, serializer: Serializer) -> KeyBase:
        """What ``node``'s key is built from, once its upstream tasks are done."""
        digests, results = self.digests, self.results
        for u in node.upstream:
            if digests[u] is None:  # not checkpointed: hash its result by value, if it can be
                digests[u] = result_digest(results[u]) or volatile_key(self.nodes[u].name, self.run_id)
        return await base_key(node, self.nodes, digests, self.params, serializer.name)

    def outputs_missing(self, i: int) -> bool:
        """Whether an output file of task ``i`` is missing (so its checkpoint is not enough)."""
        task = self.nodes[i].task
        missing = missing_outputs(task, self.workdir, self.params)
        if missing:
            log_safely(
                logger.bind(run_id=self.run_id, task=task.name),
                "INFO",
                "checkpoint matches but output {} is missing: running it again",
                missing[0],
            )
        return bool(missing)

    def place(self, submit: Submit) -> None:
        """Send every plain def task not declared ``executor="local"`` to ``submit``."""
        local = self.thread_submit
        self.submits = [local if node.task.executor == "local" else submit for node in self.nodes]

    def submit_of(self, i: int) -> Submit | None:
        """Where task ``i`` runs: ``None`` for a coroutine (on the event loop)."""
        if self.nodes[i].task.is_async:
            return None
        return self.thread_submit if self.submits is None else self.submits[i]

    def context(self, task: str, attempt: int, params: Mapping[str, Any] | None) -> RunContext:
        return RunContext(
            run_id=self.run_id,
            pipeline=self.pipeline,
            task=task,
            attempt=attempt,
            workdir=self.workdir,
            params=params if params is not None else dict(self.params),
            logger=task_logger(self.run_id, task),
        )

    # -- outcomes -------------------------------------------------------------------------

    def succeed(self, i: int, result: Any, state: TaskState) -> None:
        t = self.now()
        self.results[i] = result
        self.states[i] = state
        self.finished[i] = t
        if state is TaskState.SUCCEEDED and self.listeners:
            start = self.started[i]
            assert start is not None
            self.emit(
                TaskSucceeded(
                    run_id=self.run_id,
                    time=t,
                    task=self.nodes[i].name,
                    attempt=self.attempts[i],
                    duration=t - start,
                )
            )
        remaining, states, ready = self.remaining, self.states, self.ready
        for d in self.nodes[i].downstream:
            remaining[d] -= 1
            if remaining[d] == 0 and states[d] is PENDING:
                ready.append(d)

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
        stack = [(d, i) for d in reversed(nodes[i].downstream)]
        while stack:
            d, cause = stack.pop()
            if self.states[d] is not PENDING:
                continue
            verb = "failed" if self.states[cause] is TaskState.FAILED else "was skipped"
            reason = f"upstream task {nodes[cause].name!r} {verb}"
            self.states[d] = TaskState.SKIPPED
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
        if self.fail_fast and self.cancel_reason is None:
            self.cancel_reason = f"fail_fast: task {nodes[i].name!r} failed"
            assert self.tg is not None
            self.tg.cancel_scope.cancel()


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
    warning when it is stale), and every other task is left out of the run and its result.

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
            if node.index in chosen:
                continue
            wanted = node.task.serializer or serializer
            checkpoint = await store.load(node.name, wanted) if store is not None else None
            if checkpoint is None or checkpoint.serializer != wanted.name:
                missing.append(node.name)
            else:
                preloaded[node.index] = checkpoint
        if missing:
            raise MissingCheckpointError(missing)
    run = _Run(
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
    if warn_blocking is not None:
        async with watch_loop(graph, warn_blocking, run.run_id):
            return await _execute(run, executor)
    return await _execute(run, executor)


async def _execute(run: _Run, executor: Executor | None) -> RunResult:
    if executor is None:
        return await run.execute()
    async with executor.open() as submit:
        run.place(submit)
        return await run.execute()

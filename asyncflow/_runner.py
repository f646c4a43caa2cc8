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

Checkpoints. A checkpointed task's key is computed when it becomes ready, and a task
whose stored key matches is CACHED without running; a succeeded task's result is saved
(a group commit with the :class:`~asyncflow.FileStore`) before it is reported SUCCEEDED.
See :mod:`asyncflow._run_checkpoints`.

Mapped tasks. A task mapped with :func:`~asyncflow.each` is expanded into instances when
it becomes ready, and they are scheduled like any task (see :mod:`asyncflow._mapping`).

State. The per-task columns and the outcomes are :class:`asyncflow._outcomes.RunState`'s;
this class adds the number of tasks ``running``, the workers ``pending`` (started but
not yet running) and those ``yielding`` voluntarily.

Events go to the listeners synchronously; with no listener no event object is built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from ._attempt import call_task, run_attempt
from ._cache import (
    CacheKey,
    KeyBase,
    TrackedParams,
)
from ._checkpointing import lookup, save, stage
from ._context import RunContext, task_logger
from ._errors import (
    CheckpointError,
    ForgottenAwaitError,
    TaskPicklingError,
    printable,
)
from ._events import (
    AttemptFailed,
    RunStarted,
    TaskState,
    build_started,
)
from ._executors import Submit
from ._instances import instance_checkpoint, item_digests
from ._mapping import KEYED
from ._result import RunResult
from ._run_checkpoints import CheckpointedRun

__all__ = ["Run", "new_run_id"]

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


class Run(CheckpointedRun):
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

    async def worker(self, probe: bool = True) -> None:
        self.pending -= 1
        if self.stager is not None:
            # Started by the committer for tasks its commit readied: a cancellation that
            # arrived meanwhile (a thread task or a shielded commit deferred it) stops it
            # here, before it starts a downstream task that may never await.
            await anyio.lowlevel.checkpoint_if_cancelled()
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

    # -- one task -------------------------------------------------------------------------

    async def run_task(self, i: int) -> None:
        node = self.nodes[i]
        task = node.task
        self.states[i] = RUNNING
        self.started[i] = self.now()
        if node.maps:  # a mapped task: make its instances, which then run as tasks
            self.expand(i)
            return
        preloaded = self.preloaded.get(i) if self.preloaded else None
        if preloaded is not None:  # outside the selection of a partial run
            await self.warn_if_stale(node, preloaded)
            self.cached(i, preloaded)
            return
        label = node.label
        name = task.name if label is None else label
        store = self.store if task.checkpoint else None
        base: KeyBase | None = None
        prior: CacheKey | None = None
        if store is not None:
            serializer = task.serializer or self.serializer
            saved_as = name
            try:
                if label is None:
                    base = await self.base_key(node, serializer)
                else:  # an instance of a mapped task: keyed and stored by its items' values
                    items = item_digests(node, self.run_id)
                    base = await self.base_key(node, serializer, items)
                    saved_as = instance_checkpoint(node, self.nodes[node.parent], items, self.digests)
                force = self.force and not (label is not None and node.parent in self.unselected_maps)
                found = await lookup(store, saved_as, serializer, base, self.params, force=force)
                self.keys[i] = found.cache_key
                checkpoint = found.checkpoint
                if checkpoint is not None and not (task.outputs and self.outputs_missing(i)):
                    self.cached(i, checkpoint)
                    return
                prior = found.key
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
        call = task
        if label is not None:  # an instance: its items, and its own name on the call
            kwargs.update(node.bound)
            if not (task.is_async and task.timeout is None):
                # Errors raised around the call (timeout, pickling, forgotten await) name the
                # task they are given: give them the instance, fetch[3], not the mapped task.
                call = dataclasses.replace(task, name=name)
        attempt = 0
        result: Any = None
        while True:
            if self.cancel_reason is not None:  # fail_fast struck during an await above: start
                return  # no attempt; the task ends CANCELLED with the rest
            attempt += 1
            self.attempts[i] = attempt
            if task.wants_context:
                kwargs["context"] = self.context(name, attempt, tracked)
            if self.listeners:
                self.emit(build_started(self.run_id, self.now(), name, attempt, self.keys[i]))
            try:
                if task.timeout is None:  # one coroutine frame less on the common path
                    result = await call_task(call, kwargs, self.submit_of(i))
                else:
                    result = await run_attempt(call, kwargs, self.submit_of(i), self.threads)
            except Exception as exc:
                retry = not isinstance(exc, ForgottenAwaitError | TaskPicklingError) and policy.should_retry(
                    attempt, exc
                )
                delay = policy.delay_for(attempt, self.rng) if retry else None
                error = printable(exc)  # what the log, summary and record can put in words
                if self.listeners:
                    self.emit(
                        AttemptFailed(
                            run_id=self.run_id,
                            time=self.now(),
                            task=name,
                            attempt=attempt,
                            error=error,
                            retry_in=delay,
                        )
                    )
                if delay is None:
                    self.fail(i, error)
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
                    staged = stage(self.stager, saved_as, serializer, base, read, self.params, result, prior)
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
                saved, key = await save(store, saved_as, serializer, base, read, self.params, result, prior)
            except CheckpointError as exc:
                self.fail(i, exc)
                return
            self.keys[i] = key.key
            self.digests[i] = saved.cutoff
            self.marks[i] = KEYED
            self.sizes[i] = saved.size
            result = saved.result
        self.succeed(i, result, TaskState.SUCCEEDED)

    def place(self, submit: Submit) -> None:
        """Send every plain def task not declared ``executor="local"`` to ``submit``."""
        local = self.thread_submit
        self.submits = [local if node.task.executor == "local" else submit for node in self.nodes]

    def submit_of(self, i: int) -> Submit | None:
        """Where task ``i`` runs: ``None`` for a coroutine (on the event loop)."""
        node = self.nodes[i]
        if node.task.is_async:
            return None
        if self.submits is None:
            return self.thread_submit
        return self.submits[i if node.parent < 0 else node.parent]  # an instance runs where its task does

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

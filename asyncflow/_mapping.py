"""Run-time fan-out: a mapped task becomes one instance per item (see :func:`~asyncflow.each`).

Policy
------
A *mapped task* (a node with ``maps``) never runs itself. When it becomes ready, the
runner calls :meth:`MappedTasks.expand`: the lengths of what it is mapped over are checked
(a plain list's, or a mapped upstream's number of instances), and one *instance* node per
item is appended to the run's columns, named ``task[k]``. An instance is an ordinary task
from then on: its own attempts, retries, timeout, pool slot, events and checkpoint.

No barrier. An instance of a task mapped over a mapped task (``each("fetch")``) depends
on the one upstream instance with its position, not on the whole mapped upstream: it is
added to that instance's downstream list and starts when it is done. So the edge from a
mapped task to a task mapped over it (a *chained* edge) is satisfied when the upstream is
*expanded*, not when it completes. Every other edge out of a mapped task (a task that
takes its whole list) is satisfied when all of its instances are done (:meth:`complete`).

Checkpoints. An instance is checkpointed under the digest of its items' values, and its
key folds in those digests, not its position (see :mod:`asyncflow._instances`, whose
functions make, name and key the instances for the runner and the planner alike).

Failures. A failed instance skips the instances chained to it (through its downstream
list); the other instances run to completion. Once all instances ended, the mapped task
succeeds with the list of their results, or fails (a :class:`~asyncflow.MappingError`
naming the instances that did not succeed) and skips the tasks that take its list.

Cost. A graph without mapped tasks never reaches this module: the runner's hot path adds
one attribute test per task and one integer comparison per finished task. Expanding costs
one node per instance and one entry in each per-task column, the same as a task declared
statically; items and lists are hashed only when a cache key needs them
(:meth:`MappedTasks.mapped_digest`, :func:`~asyncflow._instances.item_digests`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._cache import effect_mark, volatile_key
from ._errors import MappingError
from ._events import Event, TaskCached, TaskFailed, TaskMapped, TaskSkipped, TaskState, TaskSucceeded
from ._graph import Graph, Node
from ._instances import (
    Expansion,
    combined_digest,
    instance_nodes,
    item_digest,
    list_mark,
    mapped_items,
    mapped_over,
)

__all__ = ["MappedTasks"]

PENDING, RUNNING = TaskState.PENDING, TaskState.RUNNING
_BAD = frozenset({TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED})


KEYED = ""
"""What ``marks[i]`` holds for a task that kept a checkpoint until its mark is asked for
(see :meth:`MappedTasks.mark`); a real mark is a hex digest, never empty."""


class MappedTasks:
    """The mapped-task half of a run's state: :class:`asyncflow._outcomes.RunState` mixes it in.

    The attributes it reads are the run state's columns (see that module); the methods it
    calls back (:meth:`skip_below`, :meth:`emit`) are defined there.
    """

    graph: Graph
    nodes: list[Node]
    index: Mapping[str, int]
    static: int
    expansions: dict[int, Expansion]
    run_id: str
    remaining: list[int]
    states: list[TaskState]
    results: list[Any]
    keys: list[str | None]
    digests: list[str | None]
    marks: list[str | None]
    sizes: list[int | None]
    attempts: list[int]
    started: list[float | None]
    finished: list[float | None]
    errors: list[BaseException | None]
    reasons: list[str | None]
    pool_tags: list[tuple[str, ...]]
    ready: Any
    listeners: list[Any]
    now: Callable[[], float]

    def emit(self, event: Event) -> None:
        raise NotImplementedError

    def fail(self, i: int, error: BaseException) -> None:
        raise NotImplementedError

    def skip_below(self, i: int, start: Sequence[int], t: float) -> None:
        raise NotImplementedError

    # -- expanding ------------------------------------------------------------------------

    def expand(self, t: int) -> None:
        """Make the instances of mapped task ``t``, whose upstream tasks are done or expanded."""
        node = self.nodes[t]
        nodes, expansions = self.nodes, self.expansions
        try:
            plain, chained, count = mapped_items(node, nodes, self.results, expansions)
        except MappingError as exc:
            self.fail(t, exc)
            return
        first = len(nodes)
        expansions[t] = Expansion(first, count)
        labels, instances = instance_nodes(node, first, count, plain, chained)
        states = self.states
        new_remaining = [0] * count
        blocked: list[tuple[int, int]] = []  # (instance, the upstream instance that did not succeed)
        if chained:
            for k in range(count):
                j = first + k
                for _, e in chained:
                    m = e.first + k
                    state = states[m]
                    if state is PENDING or state is RUNNING:
                        new_remaining[k] += 1
                        nodes[m].downstream.append(j)  # type: ignore[attr-defined]  # an instance's is a list
                    elif state in _BAD:
                        blocked.append((j, m))
        nodes.extend(instances)
        self._grow(t, count, new_remaining, labels)
        if self.listeners:
            self.emit(
                TaskMapped(
                    run_id=self.run_id,
                    time=self.now(),
                    task=node.task.name,
                    instances=labels,
                    over=mapped_over(node, nodes),
                )
            )
        skipped = {j for j, _ in blocked}
        self.ready.extend(
            j
            for j, n in zip(range(first, first + count), new_remaining, strict=True)
            if n == 0 and j not in skipped
        )
        for j, m in blocked:
            self.skip_below(m, (j,), self.now())
        if count == 0:
            self.complete(t)
        remaining = self.remaining
        for c in node.chained:  # their edge from this task is satisfied by the expansion
            remaining[c] -= 1
            if remaining[c] == 0 and states[c] is PENDING:
                self.ready.append(c)

    def _grow(self, t: int, count: int, remaining: list[int], labels: tuple[str, ...]) -> None:
        """Add ``count`` instances of ``t`` to every per-task column."""
        none: list[Any] = [None] * count
        self.remaining += remaining
        self.states += [PENDING] * count
        for column in (
            self.results,
            self.keys,
            self.digests,
            self.marks,
            self.sizes,
            self.started,
            self.finished,
            self.errors,
            self.reasons,
        ):
            column += none
        self.attempts += [0] * count
        if self.pool_tags:
            self.pool_tags += [self.pool_tags[t]] * count
        index = self.index
        if index is self.graph.index or not isinstance(index, dict):  # the graph's own: copy it first
            index = self.index = dict(index)
        first = len(self.states) - count
        index.update(zip(labels, range(first, first + count), strict=True))

    # -- ending ---------------------------------------------------------------------------

    def instance_ended(self, j: int) -> None:
        """Instance ``j`` reached a final state: complete its mapped task after the last one."""
        expansion = self.expansions[self.nodes[j].parent]
        expansion.open -= 1
        state = self.states[j]
        if state is TaskState.FAILED:
            expansion.failed += 1
        elif state is not TaskState.SUCCEEDED and state is not TaskState.CACHED:
            expansion.skipped += 1
        if expansion.open == 0:
            self.complete(self.nodes[j].parent)

    def complete(self, t: int) -> None:
        """Every instance of ``t`` ended: ``t`` succeeds with their results, or fails."""
        expansion = self.expansions[t]
        node = self.nodes[t]
        now = self.now()
        start = self.started[t]
        duration = 0.0 if start is None else now - start
        states, results = self.states, self.results
        self.finished[t] = now
        if expansion.failed or expansion.skipped:
            bad = [
                self.nodes[j].name
                for j in expansion.indices
                if states[j] is not TaskState.SUCCEEDED and states[j] is not TaskState.CACHED
            ]
            shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            message = (
                f"{len(bad)} of {expansion.count} instances of task {node.name!r} did not succeed: {shown}"
            )
            if expansion.failed:
                states[t] = TaskState.FAILED
                self.errors[t] = error = MappingError(node.name, message, bad)
                if self.listeners:
                    self.emit(
                        TaskFailed(
                            run_id=self.run_id,
                            time=now,
                            task=node.name,
                            attempts=0,
                            error=error,
                            duration=duration,
                        )
                    )
            else:
                states[t] = TaskState.SKIPPED
                self.reasons[t] = message
                if self.listeners:
                    cause = self.nodes[next(j for j in expansion.indices if states[j] is TaskState.SKIPPED)]
                    self.emit(
                        TaskSkipped(
                            run_id=self.run_id, time=now, task=node.name, upstream=cause.name, reason=message
                        )
                    )
            self.skip_below(t, [d for d in node.downstream if d not in node.chained], now)
            return
        indices = expansion.indices
        results[t] = [results[j] for j in indices]
        cached = expansion.count > 0 and all(states[j] is TaskState.CACHED for j in indices)
        states[t] = TaskState.CACHED if cached else TaskState.SUCCEEDED
        if self.listeners:
            if cached:
                self.emit(
                    TaskCached(run_id=self.run_id, time=now, task=node.name, cache_key=self.mapped_digest(t))
                )
            else:
                self.emit(
                    TaskSucceeded(run_id=self.run_id, time=now, task=node.name, attempt=0, duration=duration)
                )
        remaining, ready = self.remaining, self.ready
        for d in node.downstream:
            if d in node.chained:
                continue
            remaining[d] -= 1
            if remaining[d] == 0 and states[d] is PENDING:
                ready.append(d)

    # -- digests, for the tasks below -----------------------------------------------------

    def mapped_digest(self, t: int) -> str:
        """The digest of mapped task ``t``'s list of results: of its instances' digests, in
        order (each instance's checkpoint digest, or its result hashed by value).

        Computed when a task below needs it, so a run without checkpoints hashes nothing.
        """
        digest = self.digests[t]
        if digest is None:
            digests, results, nodes = self.digests, self.results, self.nodes
            indices = self.expansions[t].indices
            for j in indices:
                if digests[j] is None:
                    digests[j] = item_digest(results[j]) or volatile_key(nodes[j].name, self.run_id)
            digest = self.digests[t] = combined_digest(digests[j] or "" for j in indices)
        return digest

    def mark(self, i: int) -> str | None:
        """Task ``i``'s effect mark (see :func:`~asyncflow._cache.effect_mark`), or ``None``
        when it kept no checkpoint. A task that did keep one records :data:`KEYED`: its
        mark is hashed from its key and result digest only when a task below it, across a
        side-effect edge, asks (most never do)."""
        mark = self.marks[i]
        if mark == KEYED:
            key, digest = self.keys[i], self.digests[i]
            assert key is not None and digest is not None
            mark = self.marks[i] = effect_mark(key, digest)
        return mark

    def mapped_mark(self, t: int) -> str:
        """What a task below mapped task ``t`` folds in across a side-effect edge (see
        :func:`~asyncflow._cache.effect_mark`): its instances' marks, or a volatile key
        when one of them has none (it kept no checkpoint)."""
        mark = self.marks[t]
        if mark is None:
            marks = [self.mark(j) for j in self.expansions[t].indices]
            mark = self.marks[t] = list_mark(self.nodes[t].name, marks, self.run_id)
        return mark

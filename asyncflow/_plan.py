"""Plans: what a run would do, task by task, and why, without running anything.

:func:`make_plan` walks the graph in topological order and, for every task, makes the
decision the runner (:mod:`asyncflow._runner`) will make when the task becomes ready:
load its checkpoint (``cached``) or run it, with the same cache keys, computed by the same
functions (:func:`asyncflow._cache.base_key` and :func:`~asyncflow._cache.finish_key`).
A key folds in upstream *results* (early cutoff), so below a task that will run the
decision is known only in the run: such a task is planned to run, with the reason
``upstream X will run; cached if its result is unchanged``.

When a checkpoint's key does not match, the parts stored beside it (``key_parts``, see
:class:`asyncflow._cache.CacheKey`) tell why, naming what changed: a helper, a constant,
a bound argument, the task's own code, a parameter it reads, its ``cache_key_fn`` input,
an upstream result, or its serializer. Checkpoints of asyncflow 0.1 give ``cache key
changed``.

:func:`select` turns ``--only``/``--from``/``--until`` into the task selection of a
partial run (``Pipeline.run(only=...)``); the plan of a partial run mirrors it: the
selected tasks and, loaded from their checkpoints whatever their key, the unselected
tasks upstream of them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._cache import CacheKey, DigestView, base_key, effect_edges, effect_mark, finish_key
from ._checkpointing import recorded_reads
from ._digest import CodeDigest, describe_change
from ._errors import PipelineDefinitionError
from ._graph import Graph, Node
from ._serializers import JSON, Serializer
from ._store import Checkpoint, CheckpointStore
from ._task import missing_outputs

__all__ = ["Action", "Plan", "PlannedTask", "make_plan", "select"]


class Action(enum.Enum):
    """What a run would do with one task."""

    RUN = "run"
    """Run it (no usable checkpoint, forced, or not checkpointed)."""
    CACHED = "cached"
    """Load its result from its checkpoint."""
    FAIL = "fail"
    """Fail before running: its ``cache_key_fn`` raises."""
    SKIP = "skip"
    """Skip it: an upstream task would fail."""
    MISSING = "missing"
    """A partial run needs its checkpoint and there is none: the run would not start."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedTask:
    """The plan for one task.

    Attributes:
        name: the task's name.
        action: what the run would do.
        reason: why, in words (``no checkpoint``, ``its code changed``, ...).
        selected: False for a task that a partial run loads only because a selected
            task needs it.
        cache_key: the key the run would use (hex SHA-256), or ``None`` when unknown.
        stored_key: the key of its checkpoint, or ``None`` when it has none.
    """

    name: str
    action: Action
    reason: str
    selected: bool = True
    cache_key: str | None = None
    stored_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What a run of ``pipeline`` would do.

    Attributes:
        pipeline: the pipeline's name.
        tasks: one :class:`PlannedTask` per task of the run, in definition order (a
            partial run leaves out the tasks it does not need).
    """

    pipeline: str
    tasks: tuple[PlannedTask, ...]

    def by_action(self, action: Action) -> list[str]:
        """The names of the tasks planned for ``action``, in definition order."""
        return [t.name for t in self.tasks if t.action is action]

    @property
    def missing(self) -> list[str]:
        """Tasks whose missing checkpoint would stop a partial run from starting."""
        return self.by_action(Action.MISSING)


def select(
    graph: Graph, *, only: Sequence[str] = (), start: str | None = None, end: str | None = None
) -> list[str] | None:
    """The tasks a partial run selects, in definition order; ``None`` when nothing narrows it.

    Args:
        only: exactly these tasks.
        start: this task and every task downstream of it (``--from``).
        end: this task and every task upstream of it (``--until``).

    Given together, the selection is the tasks that every given option selects
    (``start`` and ``end`` together: the tasks on the paths between them).

    Raises:
        UnknownDependencyError: a name is not a task (the message suggests the closest).
        ValueError: the options together select no task.
    """
    chosen: set[int] | None = None

    def narrow(found: set[int]) -> None:
        nonlocal chosen
        chosen = found if chosen is None else chosen & found

    if only:
        narrow(graph.indices(only))
    if start is not None:
        narrow(graph.downstream_closure(graph.indices([start])))
    if end is not None:
        narrow(graph.upstream_closure(graph.indices([end])))
    if chosen is None:
        return None
    if not chosen:
        raise ValueError("the selection is empty: no task is selected by all of the given options")
    return [graph.nodes[i].name for i in sorted(chosen)]


async def make_plan(
    graph: Graph,
    *,
    pipeline: str,
    params: Mapping[str, Any],
    store: CheckpointStore | None,
    force: bool = False,
    selected: Iterable[str] | None = None,
    workdir: Path | None = None,
    serializer: Serializer = JSON,
) -> Plan:
    """Plan a run of ``graph`` with ``params``; reads checkpoints, runs nothing.

    The arguments mean what they mean for :func:`asyncflow._execute.execute`
    (``selected`` is ``Pipeline.run``'s ``only``). ``cache_key_fn`` functions are called,
    as the run would call them. ``workdir`` (the run's, resolved) is where tasks'
    ``outputs`` are looked for; without it they are not checked.

    Raises:
        UnknownDependencyError: ``selected`` names a task that does not exist.
        CheckpointReadError: a checkpoint exists but cannot be read.
    """
    chosen: set[int] | None = None
    if selected is not None:
        names = list(selected)
        graph = graph.subgraph(graph.upstream_closure(graph.indices(names)))
        chosen = {graph.index[n] for n in names}
    planner = _Planner(graph.nodes, params, store, force, chosen, workdir, serializer)
    for i in graph.order:
        await planner.plan(i)
    return Plan(pipeline=pipeline, tasks=tuple(p for p in planner.plans if p is not None))


class _Planner:
    """The decisions made so far, by node index: plans and known result digests."""

    def __init__(
        self,
        nodes: Sequence[Node],
        params: Mapping[str, Any],
        store: CheckpointStore | None,
        force: bool,
        chosen: set[int] | None,
        workdir: Path | None,
        serializer: Serializer,
    ) -> None:
        self.nodes, self.params, self.store, self.force = nodes, params, store, force
        self.chosen, self.workdir, self.serializer = chosen, workdir, serializer
        self.plans: list[PlannedTask | None] = [None] * len(nodes)
        self.digests: list[str | None] = [None] * len(nodes)  # known only for cached tasks
        self.marks: list[str | None] = [None] * len(nodes)  # likewise; see effect_mark
        self.redo: set[int] = set()  # tasks that run only to re-create a missing output

    async def plan(self, i: int) -> None:
        node = self.nodes[i]
        plan, checkpoint = await self._plan(node)
        self.plans[i] = plan
        if plan.action is Action.CACHED and checkpoint is not None:
            self.digests[i] = checkpoint.cutoff
            self.marks[i] = effect_mark(checkpoint.cache_key, checkpoint.cutoff)

    def view(self, node: Node) -> Sequence[str | None]:
        """The digests ``node``'s key folds in: marks across side-effect edges (as the run)."""
        over = {u: m for u in effect_edges(node, self.nodes) if (m := self.marks[u]) is not None}
        return DigestView(self.digests, over) if over else self.digests

    async def _plan(self, node: Node) -> tuple[PlannedTask, Checkpoint | None]:
        name, nodes, plans, store = node.name, self.nodes, self.plans, self.store
        serializer = node.task.serializer or self.serializer
        failing = [u for u in node.upstream if _action(plans[u]) in (Action.FAIL, Action.SKIP)]
        partial = self.chosen is not None and node.index not in self.chosen and node.task.checkpoint
        if partial:  # loaded for a partial run (a task that keeps no checkpoint runs again)
            checkpoint = await store.load(name, serializer) if store is not None else None
            if checkpoint is None or checkpoint.serializer != serializer.name:
                reason = "no checkpoint, and a selected task needs its result"
                return PlannedTask(name=name, action=Action.MISSING, reason=reason, selected=False), None
            reason = "not selected: loaded from its checkpoint"
            if not failing and all(self.digests[u] is not None for u in node.upstream):
                try:
                    base = await base_key(node, nodes, self.view(node), self.params, serializer.name)
                except Exception as exc:
                    reason += f" (its cache_key_fn raises {_error(exc)})"
                else:
                    key = finish_key(base, recorded_reads(checkpoint), self.params)
                    if key.key != checkpoint.cache_key:
                        reason += f" (stale: {self._why(checkpoint, key, node)})"
            planned = PlannedTask(
                name=name,
                action=Action.CACHED,
                reason=reason,
                selected=False,
                cache_key=checkpoint.cache_key,
                stored_key=checkpoint.cache_key,
            )
            return planned, checkpoint
        if failing:
            verb = "would fail" if _action(plans[failing[0]]) is Action.FAIL else "would be skipped"
            reason = f"upstream task {nodes[failing[0]].name!r} {verb}"
            return PlannedTask(name=name, action=Action.SKIP, reason=reason), None
        if store is None:
            return PlannedTask(name=name, action=Action.RUN, reason="checkpoints disabled"), None
        if not node.task.checkpoint:
            return PlannedTask(name=name, action=Action.RUN, reason="checkpoint disabled"), None
        try:
            base = await base_key(node, nodes, self.view(node), self.params, serializer.name)
        except Exception as exc:
            reason = f"its cache_key_fn raises {_error(exc)}"
            return PlannedTask(name=name, action=Action.FAIL, reason=reason), None
        checkpoint = await store.load(name, serializer)
        stored = checkpoint.cache_key if checkpoint is not None else None
        # Below a task that will run, the key depends on its result: known only in the run.
        unknown = [nodes[u].name for u in node.upstream if self.digests[u] is None]
        if self.force:
            forced = None if unknown else finish_key(base, recorded_reads(checkpoint), self.params).key
            planned = PlannedTask(
                name=name,
                action=Action.RUN,
                reason="forced (--no-skip)",
                cache_key=forced,
                stored_key=stored,
            )
            return planned, None
        if unknown:
            if checkpoint is None:
                return PlannedTask(
                    name=name, action=Action.RUN, reason="no checkpoint", stored_key=stored
                ), None
            effects = [
                nodes[u].name
                for u in effect_edges(node, nodes)
                if self.digests[u] is None and u not in self.redo
            ]
            if effects:  # no early cutoff across an after= edge or below a task that writes files
                reason = f"upstream {', '.join(effects)} will run (this task depends on what it does)"
            else:
                reason = f"upstream {', '.join(unknown)} will run; cached if its result is unchanged"
            return PlannedTask(name=name, action=Action.RUN, reason=reason, stored_key=stored), checkpoint
        key = finish_key(base, recorded_reads(checkpoint), self.params)
        if checkpoint is None:
            return PlannedTask(name=name, action=Action.RUN, reason="no checkpoint", cache_key=key.key), None
        if checkpoint.serializer != serializer.name:
            reason = f"serializer changed: {checkpoint.serializer} -> {serializer.name}"
            return PlannedTask(
                name=name, action=Action.RUN, reason=reason, cache_key=key.key, stored_key=stored
            ), None
        if checkpoint.cache_key == key.key and self.workdir is not None and node.task.outputs:
            try:
                missing = missing_outputs(node.task, self.workdir, self.params)
            except PipelineDefinitionError as exc:
                return PlannedTask(name=name, action=Action.FAIL, reason=str(exc), cache_key=key.key), None
            if missing:
                why = f"output missing: {missing[0]}"
                planned = PlannedTask(
                    name=name, action=Action.RUN, reason=why, cache_key=key.key, stored_key=stored
                )
                self.redo.add(node.index)  # same key: re-creates its files, what it did is unchanged
                return planned, None
        if checkpoint.cache_key == key.key:
            planned = PlannedTask(
                name=name,
                action=Action.CACHED,
                reason="checkpoint matches",
                cache_key=key.key,
                stored_key=stored,
            )
            return planned, checkpoint
        why = self._why(checkpoint, key, node)
        return PlannedTask(
            name=name, action=Action.RUN, reason=why, cache_key=key.key, stored_key=stored
        ), None

    def _why(self, checkpoint: Checkpoint, new: CacheKey, node: Node) -> str:
        """Why ``new`` differs from ``checkpoint``'s key, in words naming what changed."""
        stored = checkpoint.key_parts
        if stored is None or "code_parts" not in stored:
            return "cache key changed (checkpoint of an older asyncflow)"
        if stored.get("serializer") != new.serializer:
            return f"serializer changed: {stored.get('serializer')} -> {new.serializer}"
        if stored.get("code") != new.code:
            old_parts = stored.get("code_parts")
            return describe_change(old_parts if isinstance(old_parts, dict) else None, _code_of(new))
        old_params = stored.get("params")
        if isinstance(old_params, dict) and old_params != dict(new.params):
            changed = sorted(k for k in new.params if old_params.get(k) != new.params[k])
            if changed:
                noun = "parameter" if len(changed) == 1 else "parameters"
                return f"{noun} {', '.join(changed)} changed"
        if stored.get("extra") != new.extra:
            return "input changed (its cache_key_fn value)"
        old_upstream = stored.get("upstream")
        if old_upstream != [list(pair) for pair in new.upstream]:
            old = {}
            if isinstance(old_upstream, list):
                old = {p[0]: p[1] for p in old_upstream if isinstance(p, list) and len(p) == 2}
            changed = [pair[0] for pair in new.upstream[: len(node.upstream)] if old.get(pair[0]) != pair[1]]
            if changed:
                return f"upstream result changed ({', '.join(changed)})"
            return "upstream wiring changed"
        return "cache key changed"


def _code_of(key: CacheKey) -> CodeDigest:
    return CodeDigest(key.code, key.code_parts)


def _action(plan: PlannedTask | None) -> Action | None:
    return None if plan is None else plan.action


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

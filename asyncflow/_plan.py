"""Plans: what a run would do, task by task, and why, without running anything.

:func:`make_plan` walks the graph in topological order and, for every task, makes the
decision the runner (:mod:`asyncflow._runner`) will make when the task becomes ready:
load its checkpoint (``cached``) or run it, with the same cache keys, computed by the same
functions (:func:`asyncflow._cache.base_key` and :func:`~asyncflow._cache.finish_key`).
A key folds in upstream *results* (early cutoff), so below a task that will run the
decision is known only in the run: such a task is planned to run, with the reason
``upstream X will run; cached if its result is unchanged``.

When a checkpoint's key does not match, the reason names what changed (see
:mod:`asyncflow._plan_why`).

Mapped tasks (:func:`~asyncflow.each`). Their instances are known only once the items
are: when every task a mapped task is mapped over would be cached (its result is then
its checkpoint's) — for a task mapped over a mapped task, when every instance of that
one would be cached — the planner makes the instances with the runner's own functions
(:mod:`asyncflow._instances`) and plans each as a task, under its checkpoint name; the
mapped task's reason counts them (``mapped over urls: 3 instances: 1 would run, 2
cached``). Otherwise its reason is ``mapped over urls (known when it runs)``. Either
way the mapped task is one entry of the plan, its instances' plans in
:attr:`PlannedTask.instances`; the tasks below it follow the rules above (its list's
digest is known when all of its instances would be cached).

The plan of a partial run (``selected``, see :func:`asyncflow._selection.select`)
mirrors the run: the selected tasks and, loaded from their checkpoints whatever their
key, the unselected tasks upstream of them; an unselected mapped task (no checkpoint of
its own) is planned as in a full run, its instances cached when their keys match.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._cache import DigestView, KeyBase, base_key, effect_edges, effect_mark, finish_key
from ._checkpointing import recorded_reads
from ._errors import MappingError, PipelineDefinitionError
from ._graph import Graph, Node
from ._instances import (
    Expansion,
    instance_checkpoint,
    instance_nodes,
    item_digests,
    list_digests,
    mapped_items,
    mapped_over,
)
from ._plan_why import mapped_reason, why_changed
from ._planned import MAYBE, PLANNED, Action, Plan, PlannedTask
from ._selection import select
from ._serializers import JSON, Serializer
from ._store import Checkpoint, CheckpointStore
from ._task import missing_outputs

# Re-exported: the plan's types (asyncflow._planned) and select (asyncflow._selection).
__all__ = ["MAYBE", "PLANNED", "Action", "Plan", "PlannedTask", "make_plan", "select"]


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
    static = planner.plans[: len(graph.nodes)]  # then come the instances, in their tasks' plans
    return Plan(pipeline=pipeline, tasks=tuple(p for p in static if p is not None))


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
        # Like the runner's columns, these grow by the instances of each mapped task
        # whose items are known.
        self.nodes: list[Node] = list(nodes)
        self.params, self.store, self.force = params, store, force
        self.chosen, self.workdir, self.serializer = chosen, workdir, serializer
        self.plans: list[PlannedTask | None] = [None] * len(nodes)
        self.digests: list[str | None] = [None] * len(nodes)  # known only for cached tasks
        self.marks: list[str | None] = [None] * len(nodes)  # likewise; see effect_mark
        self.redo: set[int] = set()  # tasks that run only to re-create a missing output
        # The results of the cached tasks that a mapped task is mapped over (their items).
        self.items: dict[int, Any] = {}
        self.wanted = {u for node in nodes for _, u in node.maps if not nodes[u].maps}
        self.expansions: dict[int, Expansion] = {}
        self.run_id = "dry-run-" + secrets.token_hex(3)  # for items that cannot be hashed

    async def plan(self, i: int) -> None:
        node = self.nodes[i]
        if node.maps:
            self.plans[i] = await self._plan_mapped(node)
            return
        saved_as = node.name
        if node.parent >= 0:
            items = item_digests(node, self.run_id)
            saved_as = instance_checkpoint(node, self.nodes[node.parent], items, self.digests)
        plan, checkpoint = await self._plan(node, saved_as)
        self.plans[i] = plan
        if plan.action is Action.CACHED and checkpoint is not None:
            self.digests[i] = checkpoint.cutoff
            self.marks[i] = effect_mark(checkpoint.cache_key, checkpoint.cutoff)
            if i in self.wanted:
                self.items[i] = checkpoint.result

    async def _plan_mapped(self, node: Node) -> PlannedTask:
        """Plan mapped task ``node``: its instances when its items are known (see the module)."""
        name, nodes, plans = node.name, self.nodes, self.plans
        selected = self.chosen is None or node.index in self.chosen
        over = mapped_over(node, nodes)
        label = "mapped over " + ", ".join(over)
        skipped = self.skipped(node)
        if skipped is not None:
            return PlannedTask(name=name, action=Action.SKIP, reason=skipped, selected=selected, over=over)
        known = all(  # every task it is mapped over would be cached, and its items read
            _action(plans[u]) is Action.CACHED
            and (u in self.expansions if nodes[u].maps else u in self.items)
            for _, u in node.maps
        )
        if not known:
            reason = f"{label} (known when it runs)"
            return PlannedTask(name=name, action=Action.RUN, reason=reason, selected=selected, over=over)
        try:
            plain, chained, count = mapped_items(node, nodes, self.items, self.expansions)
        except MappingError as exc:
            return PlannedTask(name=name, action=Action.FAIL, reason=str(exc), selected=selected, over=over)
        first = len(nodes)
        self.expansions[node.index] = Expansion(first, count)
        _, instances = instance_nodes(node, first, count, plain, chained)
        nodes.extend(instances)
        for column in (self.plans, self.digests, self.marks):
            column.extend([None] * count)
        for instance in instances:
            await self.plan(instance.index)
        planned = tuple(p for p in plans[first:] if p is not None)
        action, reason = mapped_reason(label, planned)
        if action is Action.CACHED:  # the list's digest, as the run will compute it
            indices = range(first, first + count)
            self.digests[node.index], self.marks[node.index] = list_digests(
                name, [self.digests[j] or "" for j in indices], [self.marks[j] for j in indices], self.run_id
            )
        return PlannedTask(
            name=name, action=action, reason=reason, selected=selected, over=over, instances=planned
        )

    def skipped(self, node: Node) -> str | None:
        """Why ``node`` would be skipped (an upstream task would fail or be), or ``None``."""
        failing = [u for u in node.upstream if _action(self.plans[u]) in (Action.FAIL, Action.SKIP)]
        if not failing:
            return None
        verb = "would fail" if _action(self.plans[failing[0]]) is Action.FAIL else "would be skipped"
        return f"upstream task {self.nodes[failing[0]].name!r} {verb}"

    async def base_key(self, node: Node, serializer: Serializer) -> KeyBase:
        """``node``'s :class:`~asyncflow._cache.KeyBase`, as the run computes it (an
        instance's with its :func:`~asyncflow._instances.item_digests`)."""
        items = item_digests(node, self.run_id) if node.bound else ()
        return await base_key(node, self.nodes, self.view(node), self.params, serializer.name, items)

    def view(self, node: Node) -> Sequence[str | None]:
        """The digests ``node``'s key folds in: marks across side-effect edges (as the run)."""
        over = {u: m for u in effect_edges(node, self.nodes) if (m := self.marks[u]) is not None}
        return DigestView(self.digests, over) if over else self.digests

    async def _plan(self, node: Node, saved_as: str) -> tuple[PlannedTask, Checkpoint | None]:
        """Plan task ``node`` whose checkpoint is stored as ``saved_as`` (not a mapped task)."""
        name, nodes, store = node.name, self.nodes, self.store
        serializer = node.task.serializer or self.serializer
        skipped = self.skipped(node)
        partial = (
            self.chosen is not None
            and node.index not in self.chosen
            and node.task.checkpoint
            and node.parent < 0  # an instance is looked up as in any run
        )
        if partial:  # loaded for a partial run (a task that keeps no checkpoint runs again)
            checkpoint = await store.load(saved_as, serializer) if store is not None else None
            if checkpoint is None or checkpoint.serializer != serializer.name:
                reason = "no checkpoint, and a selected task needs its result"
                return PlannedTask(name=name, action=Action.MISSING, reason=reason, selected=False), None
            reason = "not selected: loaded from its checkpoint"
            if skipped is None and all(self.digests[u] is not None for u in node.upstream):
                try:
                    base = await base_key(
                        node,
                        nodes,
                        self.view(node),
                        self.params,
                        serializer.name,
                        item_digests(node, self.run_id),
                    )
                except Exception as exc:
                    reason += f" (its cache_key_fn raises {_error(exc)})"
                else:
                    key = finish_key(base, recorded_reads(checkpoint), self.params)
                    if key.key != checkpoint.cache_key:
                        reason += f" (stale: {why_changed(checkpoint, key, node)})"
            planned = PlannedTask(
                name=name,
                action=Action.CACHED,
                reason=reason,
                selected=False,
                cache_key=checkpoint.cache_key,
                stored_key=checkpoint.cache_key,
            )
            return planned, checkpoint
        if skipped is not None:
            return PlannedTask(name=name, action=Action.SKIP, reason=skipped), None
        if store is None:
            return PlannedTask(name=name, action=Action.RUN, reason="checkpoints disabled"), None
        if not node.task.checkpoint:
            return PlannedTask(name=name, action=Action.RUN, reason="checkpoint disabled"), None
        try:
            base = await base_key(
                node, nodes, self.view(node), self.params, serializer.name, item_digests(node, self.run_id)
            )
        except Exception as exc:
            reason = f"its cache_key_fn raises {_error(exc)}"
            return PlannedTask(name=name, action=Action.FAIL, reason=reason), None
        checkpoint = await store.load(saved_as, serializer)
        stored = checkpoint.cache_key if checkpoint is not None else None
        # Below a task that will run, the key depends on its result: known only in the run.
        unknown = [nodes[u].name for u in node.upstream if self.digests[u] is None]
        # --no-skip forces the selection: the instances of a mapped task above it are
        # looked up, as the run does (see RunState.unselected_maps).
        unselected = node.parent >= 0 and self.chosen is not None and node.parent not in self.chosen
        if self.force and not unselected:
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
        why = why_changed(checkpoint, key, node)
        return PlannedTask(
            name=name, action=Action.RUN, reason=why, cache_key=key.key, stored_key=stored
        ), None


def _action(plan: PlannedTask | None) -> Action | None:
    return None if plan is None else plan.action


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

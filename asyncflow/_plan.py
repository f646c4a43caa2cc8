"""Plans: what a run would do, task by task, and why, without running anything.

:func:`make_plan` walks the graph in topological order and, for every task, makes the
decision the runner (:mod:`asyncflow._runner`) will make when the task becomes ready:
load its checkpoint (``cached``) or run it, with the same cache keys, computed by the same
function (:func:`asyncflow._cache.node_cache_key`). Cache keys depend on code, parameters,
``cache_key_fn`` values and upstream *keys*, never on results, so every would-be key is
known before anything runs.

When a checkpoint's key does not match, the parts stored beside it (``key_parts``, see
:class:`asyncflow._cache.CacheKey`) tell why: the task's code, its parameters, its input
(``cache_key_fn``), or an upstream task. Checkpoints written before key parts were stored
give ``cache key changed``.

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

from ._cache import CacheKey, node_cache_key
from ._errors import PipelineDefinitionError
from ._graph import Graph, Node
from ._store import CheckpointStore
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
) -> Plan:
    """Plan a run of ``graph`` with ``params``; reads checkpoints, runs nothing.

    The arguments mean what they mean for :func:`asyncflow._runner.execute`
    (``selected`` is ``Pipeline.run``'s ``only``). ``cache_key_fn`` functions are called,
    as the run would call them. ``workdir`` (the run's, resolved) is where tasks'
    ``outputs`` are looked for; without it they are not checked.

    Raises:
        UnknownDependencyError: ``selected`` names a task that does not exist.
    """
    chosen: set[int] | None = None
    if selected is not None:
        names = list(selected)
        graph = graph.subgraph(graph.upstream_closure(graph.indices(names)))
        chosen = {graph.index[n] for n in names}
    nodes = graph.nodes
    keys: list[str | None] = [None] * len(nodes)
    plans: list[PlannedTask | None] = [None] * len(nodes)
    for i in graph.order:
        node = nodes[i]
        plan = await _plan_task(node, nodes, keys, plans, params, store, force, chosen, workdir)
        plans[i] = plan
        keys[i] = plan.cache_key
    return Plan(pipeline=pipeline, tasks=tuple(p for p in plans if p is not None))


async def _plan_task(
    node: Node,
    nodes: Sequence[Node],
    keys: list[str | None],
    plans: Sequence[PlannedTask | None],
    params: Mapping[str, Any],
    store: CheckpointStore | None,
    force: bool,
    chosen: set[int] | None,
    workdir: Path | None,
) -> PlannedTask:
    name = node.name
    failing = [u for u in node.upstream if _action(plans[u]) in (Action.FAIL, Action.SKIP)]
    if chosen is not None and node.index not in chosen:  # loaded for a partial run
        checkpoint = await store.load(name) if store is not None else None
        if checkpoint is None:
            reason = "no checkpoint, and a selected task needs its result"
            return PlannedTask(name=name, action=Action.MISSING, reason=reason, selected=False)
        reason = "not selected: loaded from its checkpoint"
        if not failing and all(keys[u] is not None for u in node.upstream):
            try:
                ck = await node_cache_key(node, nodes, keys, params)
            except Exception as exc:
                reason += f" (its cache_key_fn raises {_error(exc)})"
            else:
                if ck.key != checkpoint.cache_key:
                    why = _why(checkpoint.key_parts, ck, node, nodes, keys, plans)
                    reason += f" (stale: {why})"
        return PlannedTask(
            name=name,
            action=Action.CACHED,
            reason=reason,
            selected=False,
            cache_key=checkpoint.cache_key,
            stored_key=checkpoint.cache_key,
        )
    if failing:
        verb = "would fail" if _action(plans[failing[0]]) is Action.FAIL else "would be skipped"
        reason = f"upstream task {nodes[failing[0]].name!r} {verb}"
        return PlannedTask(name=name, action=Action.SKIP, reason=reason)
    if store is None:
        return PlannedTask(name=name, action=Action.RUN, reason="checkpoints disabled")
    try:
        ck = await node_cache_key(node, nodes, keys, params)
    except Exception as exc:
        return PlannedTask(name=name, action=Action.FAIL, reason=f"its cache_key_fn raises {_error(exc)}")
    # Below a task without checkpoint (a run that has no key yet): known only in the run.
    volatile = [nodes[u].name for u in node.upstream if keys[u] is None and _action(plans[u]) is Action.RUN]
    if volatile:
        reason = f"an upstream task will run ({', '.join(volatile)})"
        return PlannedTask(name=name, action=Action.RUN, reason=reason)
    if not node.task.checkpoint:
        # It runs whatever its key, and hands its downstream tasks a key made new by the
        # run (see asyncflow._cache.volatile_key): unknown here.
        return PlannedTask(name=name, action=Action.RUN, reason="checkpoint disabled")
    checkpoint = await store.load(name)
    stored = checkpoint.cache_key if checkpoint is not None else None
    if force:
        reason = "forced (--no-skip)"
        return PlannedTask(name=name, action=Action.RUN, reason=reason, cache_key=ck.key, stored_key=stored)
    if checkpoint is None:
        return PlannedTask(name=name, action=Action.RUN, reason="no checkpoint", cache_key=ck.key)
    if checkpoint.cache_key == ck.key and workdir is not None and node.task.outputs:
        try:
            missing = missing_outputs(node.task, workdir, params)
        except PipelineDefinitionError as exc:
            return PlannedTask(name=name, action=Action.FAIL, reason=str(exc), cache_key=ck.key)
        if missing:
            why = f"output missing: {missing[0]}"
            return PlannedTask(name=name, action=Action.RUN, reason=why, cache_key=ck.key, stored_key=stored)
    if checkpoint.cache_key == ck.key:
        return PlannedTask(
            name=name, action=Action.CACHED, reason="checkpoint matches", cache_key=ck.key, stored_key=stored
        )
    why = _why(checkpoint.key_parts, ck, node, nodes, keys, plans)
    return PlannedTask(name=name, action=Action.RUN, reason=why, cache_key=ck.key, stored_key=stored)


def _why(
    stored: Mapping[str, Any] | None,
    new: CacheKey,
    node: Node,
    nodes: Sequence[Node],
    keys: Sequence[str | None],
    plans: Sequence[PlannedTask | None],
) -> str:
    """Why ``new`` differs from the key whose parts are ``stored``, in words."""
    if stored is None:
        return "cache key changed"
    if stored.get("code") != new.code:
        return "its code changed"
    if stored.get("params") != new.params:
        return "parameters changed"
    if stored.get("extra") != new.extra:
        return "input changed"
    old_upstream = stored.get("upstream")
    if old_upstream != [list(pair) for pair in new.upstream]:
        old_keys = {}
        if isinstance(old_upstream, list):
            old_keys = {p[0]: p[1] for p in old_upstream if isinstance(p, list) and len(p) == 2}
        changed = [u for u in node.upstream if old_keys.get(nodes[u].name) != (keys[u] or "")]
        running = [nodes[u].name for u in changed if _action(plans[u]) is Action.RUN]
        if running:
            return f"an upstream task will run ({', '.join(running)})"
        names = [nodes[u].name for u in changed]
        return f"upstream changed ({', '.join(names)})" if names else "upstream changed"
    return "cache key changed"


def _action(plan: PlannedTask | None) -> Action | None:
    return None if plan is None else plan.action


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

"""Validation of a pipeline's tasks into an immutable DAG.

:func:`build_graph` resolves every task's dependencies (explicit ``inputs``, parameter
names, ``after``), rejects unknown names and cycles, and returns a :class:`Graph` whose
nodes are numbered in definition order. The runner works on these numbers only: upstream
counts and downstream lists, so that a whole run costs O(tasks + edges).
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import CycleError, PipelineDefinitionError, UnboundParameterError, UnknownDependencyError
from ._frozen import become, layout_twin
from ._task import Each, Task

__all__ = ["Graph", "Node", "build_graph"]


@dataclass(frozen=True, slots=True)
class Node:
    """A task placed in the graph.

    Attributes:
        index: position in definition order (0-based).
        task: the task.
        inputs: ``(parameter, upstream index)`` for each parameter fed by one upstream task.
        gathers: ``(parameter, upstream indices)`` for each parameter fed a list of results.
        upstream: indices of every upstream task (data and ordering-only), without repeats.
        downstream: indices of every task that lists this one upstream, in definition order.
        maps: ``(parameter, upstream index)`` for each parameter mapped with
            :func:`~asyncflow.each`; a node with any is a *mapped task*, run as one
            instance per item (see :mod:`asyncflow._mapping`).
        chained: the mapped tasks downstream that map over this one (a subset of
            ``downstream``): their instances follow this task's instances one to one.

    The runner also makes a node for each *instance* of a mapped task, at run time:

    Attributes:
        label: the instance's name, ``task[k]`` (``None`` for a task of the graph).
        parent: the node index of its mapped task (``-1`` for a task of the graph).
        bound: ``(parameter, item)`` for each parameter mapped over a plain list: the item
            it receives (hashed only when a cache key needs it: see
            :func:`~asyncflow._instances.item_digests`).
    """

    index: int
    task: Task
    inputs: tuple[tuple[str, int], ...]
    gathers: tuple[tuple[str, tuple[int, ...]], ...]
    upstream: tuple[int, ...]
    downstream: Sequence[int]
    maps: tuple[tuple[str, int], ...] = ()
    chained: tuple[int, ...] = ()
    label: str | None = None
    parent: int = -1
    bound: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """The task's name (``task[k]`` for an instance of a mapped task)."""
        label = self.label
        return self.task.name if label is None else label


_NodeFields = layout_twin(Node)
"""Node's slots on a mutable class: :func:`build_graph` fills one per task, then makes it a
Node (see :mod:`asyncflow._frozen`); the frozen ``__init__`` cost about 1 µs per node."""


@dataclass(frozen=True, slots=True)
class Graph:
    """A validated, acyclic pipeline.

    Attributes:
        nodes: every task, in definition order.
        index: ``{task name: node index}``.
        order: node indices in a topological order (upstream before downstream; ties in
            definition order).
        mapped: the indices of the mapped tasks (see :func:`~asyncflow.each`).
    """

    nodes: tuple[Node, ...]
    index: Mapping[str, int]
    order: tuple[int, ...]
    mapped: frozenset[int] = frozenset()

    def node(self, name: str) -> Node:
        """The node of task ``name``; raises ``KeyError`` if there is none."""
        return self.nodes[self.index[name]]

    @property
    def upstream_names(self) -> Mapping[str, tuple[str, ...]]:
        """``{task name: names of its upstream tasks}`` in definition order: a read-only
        view that costs O(1) to create and computes each entry when it is read."""
        return _UpstreamNames(self)

    def indices(self, names: Iterable[str]) -> set[int]:
        """The node indices of ``names``.

        Raises:
            UnknownDependencyError: a name is not a task of the graph (with a suggestion).
        """
        found = set()
        for name in names:
            if name not in self.index:
                raise UnknownDependencyError(
                    f"there is no task named {name!r}{_suggest(name, list(self.index))}"
                )
            found.add(self.index[name])
        return found

    def upstream_closure(self, start: Iterable[int]) -> set[int]:
        """``start`` and every task upstream of it (its ancestors), as node indices."""
        return self._closure(start, lambda node: node.upstream)

    def downstream_closure(self, start: Iterable[int]) -> set[int]:
        """``start`` and every task downstream of it (its descendants), as node indices."""
        return self._closure(start, lambda node: node.downstream)

    def subgraph(self, keep: Iterable[int]) -> Graph:
        """The graph of the nodes in ``keep`` only, renumbered in definition order.

        ``keep`` must be closed under upstream (use :meth:`upstream_closure`), so that
        every kept task still has all of its upstream tasks.
        """
        kept = sorted(set(keep))
        new = {old: i for i, old in enumerate(kept)}
        nodes = tuple(
            Node(
                index=new[old],
                task=self.nodes[old].task,
                inputs=tuple((p, new[u]) for p, u in self.nodes[old].inputs),
                gathers=tuple((p, tuple(new[u] for u in g)) for p, g in self.nodes[old].gathers),
                upstream=tuple(new[u] for u in self.nodes[old].upstream),
                downstream=tuple(new[d] for d in self.nodes[old].downstream if d in new),
                maps=tuple((p, new[u]) for p, u in self.nodes[old].maps),
                chained=tuple(new[d] for d in self.nodes[old].chained if d in new),
            )
            for old in kept
        )
        return Graph(
            nodes=nodes,
            index={node.name: node.index for node in nodes},
            order=tuple(new[i] for i in self.order if i in new),
            mapped=frozenset(new[i] for i in self.mapped if i in new),
        )

    def _closure(self, start: Iterable[int], step: Callable[[Node], Sequence[int]]) -> set[int]:
        seen = set(start)
        stack = list(seen)
        while stack:
            for nxt in step(self.nodes[stack.pop()]):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen


class _UpstreamNames(Mapping[str, tuple[str, ...]]):
    __slots__ = ("_graph",)

    def __init__(self, graph: Graph) -> None:
        self._graph = graph

    def __getitem__(self, name: str) -> tuple[str, ...]:
        nodes = self._graph.nodes
        return tuple(nodes[u].name for u in nodes[self._graph.index[name]].upstream)

    def __iter__(self) -> Iterator[str]:
        return iter(self._graph.index)

    def __len__(self) -> int:
        return len(self._graph.nodes)


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _static_order(
    upstream: Sequence[tuple[int, ...]], downstream: Sequence[Sequence[int]]
) -> tuple[int, ...]:
    """``graphlib.TopologicalSorter.static_order()`` of the graph, on plain lists.

    The same order, node for node, as adding ``(i, *upstream[i])`` for each ``i`` in turn
    and calling ``static_order()`` (a test checks it on random graphs), at a fraction of
    the cost: graphlib keeps an object per node. Shorter than the graph when there is a
    cycle (the nodes on or behind it never become ready).
    """
    seen: dict[int, None] = {}  # graphlib's node order: first mention, node before its upstream
    for i, ups in enumerate(upstream):
        seen[i] = None
        for u in ups:
            seen[u] = None
    waiting = [len(ups) for ups in upstream]
    ready = [i for i in seen if not waiting[i]]
    order: list[int] = []
    while ready:
        group, ready = ready, []
        order += group
        for node in group:
            for nxt in downstream[node]:
                waiting[nxt] -= 1
                if not waiting[nxt]:
                    ready.append(nxt)
    return tuple(order)


def build_graph(tasks: Sequence[Task]) -> Graph:
    """Resolve and validate ``tasks`` (in definition order) into a :class:`Graph`.

    A parameter is fed by, in order of precedence: the task named in the task's ``inputs``
    mapping (or mapped over its items, with :func:`~asyncflow.each`); the task whose name
    equals the parameter; otherwise its default value. A parameter with neither is an
    error.

    Raises:
        UnknownDependencyError: ``inputs`` or ``after`` names a task that does not exist.
        UnboundParameterError: a parameter without a default matches no task.
        CycleError: the dependencies form a cycle; ``.cycle`` lists it in order.
        PipelineDefinitionError: a task mapped over a mapped task also takes that task's
            whole list (no instance could start before all of them are done).
    """
    index = {task.name: i for i, task in enumerate(tasks)}
    names = list(index)
    # (inputs, upstream) of a task without inputs=, by id() of its parameters tuple (alive
    # with the tasks): what a fan-out of one function resolves once, not once per task.
    by_parameters: dict[int, tuple[tuple[tuple[str, int], ...], tuple[int, ...]]] = {}
    # The nodes, built in place (see _NodeFields): every field but downstream and chained,
    # which are known once every task is; then they become Nodes.
    blanks: list[Any] = []
    for i, task in enumerate(tasks):
        known = None if task.inputs else by_parameters.get(id(task.parameters))
        if known is not None:
            feeds, ups_t = known
            lists: tuple[tuple[str, tuple[int, ...]], ...] = ()
            over: tuple[tuple[str, int], ...] = ()
        else:
            feeds, lists, over = _resolve(task, index, names)
            ups = dict.fromkeys(u for _, u in over)
            ups.update(dict.fromkeys(u for _, u in feeds))
            for _, group in lists:
                ups.update(dict.fromkeys(group))
            ups_t = tuple(ups)
            if not task.inputs:
                by_parameters[id(task.parameters)] = (feeds, ups_t)
        if task.after:
            ups = dict.fromkeys(ups_t)
            for dep in task.after:
                if dep not in index:
                    raise UnknownDependencyError(
                        f"task {task.name!r} runs after {dep!r}, which is not defined{_suggest(dep, names)}"
                    )
                ups[index[dep]] = None
            ups_t = tuple(ups)
        n = _NodeFields()
        n.index, n.task, n.inputs, n.gathers, n.upstream, n.maps = i, task, feeds, lists, ups_t, over
        n.label, n.parent, n.bound = None, -1, ()
        blanks.append(n)

    # Most tasks of a large pipeline have no downstream task: () until one appears.
    downstream: list[Sequence[int]] = [()] * len(tasks)
    for n in blanks:
        for u in n.upstream:
            below = downstream[u]
            if below:
                below.append(n.index)  # a list once not empty
            else:
                downstream[u] = [n.index]
    upstream = [n.upstream for n in blanks]
    order = _static_order(upstream, downstream)
    if len(order) < len(tasks):  # a cycle: let graphlib find and name it
        sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
        for i, ups_i in enumerate(upstream):
            sorter.add(i, *ups_i)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            raise CycleError([names[i] for i in exc.args[1]]) from None
    mapped = frozenset(n.index for n in blanks if n.maps)
    chained: dict[int, list[int]] = {}
    for i in sorted(mapped):
        n = blanks[i]
        whole = {u for _, u in n.inputs} | {u for _, g in n.gathers for u in g}
        whole.update(index[dep] for dep in tasks[i].after)
        for u in dict.fromkeys(u for _, u in n.maps):
            if u in mapped:
                if u in whole:
                    raise PipelineDefinitionError(
                        f"task {tasks[i].name!r} is mapped over mapped task {names[u]!r} and also "
                        "takes all of it (as a parameter or in after=); map over it, or take its "
                        "list in a task downstream"
                    )
                chained.setdefault(u, []).append(i)
    for n, below in zip(blanks, downstream, strict=True):
        n.downstream = tuple(below)
        n.chained = tuple(chained[n.index]) if n.index in chained else ()
    nodes = tuple(become(n, Node) for n in blanks)
    return Graph(nodes=nodes, index=index, order=order, mapped=mapped)


def _resolve(
    task: Task, index: Mapping[str, int], names: Sequence[str]
) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, tuple[int, ...]], ...], tuple[tuple[str, int], ...]]:
    """``(inputs, gathers, maps)`` of ``task``'s parameters (see :func:`build_graph`).

    Raises:
        UnknownDependencyError, UnboundParameterError: as :func:`build_graph` says.
    """
    feeds: list[tuple[str, int]] = []
    lists: list[tuple[str, tuple[int, ...]]] = []
    over: list[tuple[str, int]] = []
    for param, has_default in task.parameters:
        source = task.inputs.get(param)
        if isinstance(source, Each):
            if source.task not in index:
                raise UnknownDependencyError(
                    f"task {task.name!r} maps parameter {param!r} over {source.task!r}, which is "
                    f"not defined{_suggest(source.task, names)}"
                )
            over.append((param, index[source.task]))
        elif isinstance(source, tuple):
            for name in source:
                if name not in index:
                    raise UnknownDependencyError(
                        f"task {task.name!r} maps parameter {param!r} to {name!r}, which is "
                        f"not defined{_suggest(name, names)}"
                    )
            lists.append((param, tuple(index[name] for name in source)))
        elif source is not None:
            if source not in index:
                raise UnknownDependencyError(
                    f"task {task.name!r} maps parameter {param!r} to {source!r}, which is "
                    f"not defined{_suggest(source, names)}"
                )
            feeds.append((param, index[source]))
        elif param in index:
            feeds.append((param, index[param]))
        elif not has_default:
            raise UnboundParameterError(
                f"task {task.name!r} has parameter {param!r}, which matches no task"
                f"{_suggest(param, names)} (give it a default, map it with "
                "inputs={...}, or rename it after an upstream task)"
            )
    return tuple(feeds), tuple(lists), tuple(over)

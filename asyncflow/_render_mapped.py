"""How the command line shows mapped tasks (:func:`~asyncflow.each`) and their instances.

A mapped task is shown once, never as one row per instance: in a run's summary as
``fetch[*]`` with the count of its instances in each state, followed by the failed
instances by index and item (at most :data:`LISTED` of them, then ``and N more``); in
``--list`` and ``--graph`` marked ``mapped over urls``, its each-edge labelled ``each``.
Pure functions returning text or JSON-ready values; :mod:`asyncflow._render` puts them
into its tables and documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ._events import STATE_ORDER, TaskState, describe_counts
from ._graph import Graph, Node
from ._result import RunResult, TaskRun

__all__ = [
    "LISTED",
    "Instances",
    "capped_errors",
    "count_note",
    "edge_kind",
    "failed_lines",
    "instance_json",
    "mapped_json",
    "mapped_label",
    "mapped_over_names",
]

LISTED = 10
"""The most failed instances of one mapped task that a summary lists by name."""

_INSTANCE = re.compile(r"(.+)\[(\d+)\]")


def mapped_over_names(graph: Graph) -> dict[str, tuple[str, ...]]:
    """``{mapped task: names of the tasks it is mapped over}``, in definition order."""
    nodes = graph.nodes
    return {
        nodes[i].name: tuple(dict.fromkeys(nodes[u].name for _, u in nodes[i].maps))
        for i in sorted(graph.mapped)
    }


def mapped_label(node: Node, graph: Graph) -> str:
    """``mapped over urls`` (names joined by ``, ``) for a mapped task; ``""`` for any other."""
    if not node.maps:
        return ""
    return "mapped over " + ", ".join(dict.fromkeys(graph.nodes[u].name for _, u in node.maps))


def edge_kind(node: Node, upstream: int) -> str:
    """What the edge from task ``upstream`` to ``node`` carries.

    ``"each"``: ``node`` is mapped over it (one item, or one upstream instance, per
    instance); ``"data"``: a parameter receives its result (a mapped task's: the list);
    ``"after"``: ordering only (``after=``).
    """
    if any(u == upstream for _, u in node.maps):
        return "each"
    if any(u == upstream for _, u in node.inputs) or any(upstream in g for _, g in node.gathers):
        return "data"
    return "after"


class Instances:
    """The instances of each mapped task of a run's result, grouped by that task.

    Read from :attr:`TaskRun.parent` when the result has it (a run's own result), else by
    name (``fetch[3]``) for the tasks of ``mapped``: the summary of an interrupted run
    is rebuilt from its events and knows names only.

    Args:
        result: the run's result.
        mapped: the names of the graph's mapped tasks.
    """

    def __init__(self, result: RunResult, mapped: Collection[str]) -> None:
        self.mapped = set(mapped)
        self.names: set[str] = set()
        groups: dict[str, list[tuple[int, TaskRun]]] = {}
        for name, run in result.tasks.items():
            if run.instances is not None:
                self.mapped.add(name)
        for name, run in result.tasks.items():
            parent, k = run.parent, -1
            match = _INSTANCE.fullmatch(name)
            if match is not None and (parent is not None or match[1] in self.mapped):
                parent, k = parent or match[1], int(match[2])
            if parent is not None:
                self.names.add(name)
                groups.setdefault(parent, []).append((k, run))
        self.groups: dict[str, list[TaskRun]] = {
            name: [run for _, run in sorted(group, key=lambda pair: pair[0])]
            for name, group in groups.items()
        }

    def of(self, name: str) -> list[TaskRun]:
        """The instances of mapped task ``name`` in item order (``[]`` if none)."""
        return self.groups.get(name, [])


def _counts(instances: Sequence[TaskRun]) -> dict[TaskState, int]:
    counts = dict.fromkeys(STATE_ORDER, 0)
    for run in instances:
        counts[run.state] += 1
    return {state: n for state, n in counts.items() if n}


def count_note(instances: Sequence[TaskRun]) -> str:
    """``200 items: 197 succeeded, 3 cached``: the instances' states, in a fixed order."""
    n = len(instances)
    return f"{n} {'item' if n == 1 else 'items'}" + (f": {describe_counts(_counts(instances))}" if n else "")


def _index(run: TaskRun) -> str:
    match = _INSTANCE.fullmatch(run.name)
    return match[2] if match is not None else "?"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def failed_lines(name: str, instances: Sequence[TaskRun], most: int = LISTED) -> list[str]:
    """The failed instances of mapped task ``name``, one line each, at most ``most``.

    ``failed instances of fetch (3 of 200):`` then ``  fetch[3] (item 'http://x'):
    ConnectionError: ...`` per instance (the item's ``repr``, shortened; left out when
    unknown), then ``  and N more`` past ``most``. ``[]`` when none failed.
    """
    failed = [run for run in instances if run.state is TaskState.FAILED]
    if not failed:
        return []
    lines = [f"failed instances of {name} ({len(failed)} of {len(instances)}):"]
    for run in failed[:most]:
        item = "" if run.parent is None else f" (item {_short(repr(run.item), 60)})"
        error = "" if run.error is None else f": {type(run.error).__name__}: {run.error}"
        lines.append("  " + _short(f"{run.name}{item}{error}", 160))
    if len(failed) > most:
        lines.append(f"  and {len(failed) - most} more")
    return lines


def _item_json(item: Any) -> Any:
    try:
        json.dumps(item, allow_nan=False)
    except (TypeError, ValueError):
        return repr(item)
    return item


def instance_json(run: TaskRun) -> dict[str, Any]:
    """The keys an instance's entry in ``--json`` adds: ``parent``, ``index`` and ``item``
    (the item as JSON, or its ``repr`` when it is not strict JSON)."""
    index = _index(run)
    return {
        "parent": run.parent,
        "index": int(index) if index.isdigit() else None,
        "item": _item_json(run.item),
    }


def mapped_json(run: TaskRun, instances: Sequence[TaskRun], over: Sequence[str]) -> dict[str, Any]:
    """A mapped task's ``mapped`` entry in ``--json``.

    ``{"over": [task, ...], "items": N or None (not expanded), "counts": {state: n},
    "failed": [{"task", "index", "item", "error": {"type", "message"}}, ...]}``, every
    failed instance in item order.
    """
    expanded = run.instances is not None or bool(instances)
    return {
        "over": list(over),
        "items": len(instances) if expanded else None,
        "counts": {state.value: n for state, n in _counts(instances).items()},
        "failed": [
            {
                **{k: v for k, v in instance_json(i).items() if k != "parent"},
                "task": i.name,
                "error": None
                if i.error is None
                else {"type": type(i.error).__name__, "message": str(i.error)},
            }
            for i in instances
            if i.state is TaskState.FAILED
        ],
    }


def capped_errors(
    errors: Mapping[str, BaseException], groups: Instances, most: int = LISTED
) -> tuple[dict[str, BaseException], dict[str, int]]:
    """``errors`` with at most ``most`` failed instances of each mapped task, and
    ``{mapped task: how many of its failed instances were left out}`` (stderr's lines)."""
    kept: dict[str, BaseException] = {}
    left_out: dict[str, int] = {}
    listed: dict[str, int] = {}
    for name, error in errors.items():
        match = _INSTANCE.fullmatch(name)
        if name in groups.names and match is not None:
            parent = match[1]
            listed[parent] = listed.get(parent, 0) + 1
            if listed[parent] > most:
                left_out[parent] = left_out.get(parent, 0) + 1
                continue
        kept[name] = error
    return kept, left_out

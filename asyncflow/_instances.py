"""The instances of a mapped task: their items, nodes, checkpoint names and digests.

Pure functions of a mapped task's node and what its upstream tasks gave, shared by the
runner (:mod:`asyncflow._mapping`, which expands mapped tasks as a run goes) and the
planner (:mod:`asyncflow._plan`, which predicts the instances of a ``--dry-run``), so
that both name, key and checkpoint an instance the same way.

Checkpoints. An instance's checkpoint is stored under ``task[<digest>]``, the digest of
its items' *values* (:func:`checkpoint_name`), and its cache key folds in its items'
digests (the ``bound`` items of its node, see :func:`instance_nodes`), not its position:
adding an item runs one more instance, reordering the list runs none. The whole list a
downstream task receives has the digest of its instances' digests, in order
(:func:`list_digests`; so reordering re-runs that task).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._cache import result_digest, volatile_key
from ._errors import MappingError
from ._graph import Node

__all__ = [
    "Expansion",
    "checkpoint_name",
    "combined_digest",
    "instance_checkpoint",
    "instance_item",
    "instance_nodes",
    "item_digest",
    "list_digests",
    "mapped_items",
    "mapped_over",
]


class Expansion:
    """The instances of one expanded mapped task: node indices ``first .. first + count - 1``.

    ``open`` counts those not yet ended; ``failed`` and ``skipped`` those that ended so.
    """

    __slots__ = ("count", "failed", "first", "open", "skipped")

    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self.open = count
        self.failed = 0
        self.skipped = 0

    @property
    def indices(self) -> range:
        """The node indices of the instances, in item order."""
        return range(self.first, self.first + self.count)


def item_digest(item: Any, fallback: str) -> str:
    """The digest of one item an instance receives: of its strict JSON, else of its pickle.

    ``fallback`` (a :func:`~asyncflow._cache.volatile_key`) when it is neither: the
    instance then runs on every run, as a task below an unhashable result does.
    """
    digest = result_digest(item)
    if digest is not None:
        return digest
    try:
        return hashlib.sha256(pickle.dumps(item, protocol=5)).hexdigest()
    except Exception:
        return fallback


def combined_digest(digests: Iterable[str]) -> str:
    """One digest for an ordered list of digests (of a mapped task's list of results)."""
    return hashlib.sha256("\x1e".join(digests).encode()).hexdigest()


def checkpoint_name(task: str, digests: Iterable[str]) -> str:
    """The store name of an instance of ``task`` whose mapped items have ``digests``.

    ``task[`` and 16 hex digits of their combined digest ``]``: by value, not position,
    so the same item finds its checkpoint wherever it is in the list.
    """
    return f"{task}[{combined_digest(digests)[:16]}]"


def instance_item(node: Node, results: Sequence[Any], template: Node) -> Any:
    """The item an instance received: one value, or ``{parameter: value}`` for zipped inputs."""
    mapped = {p for p, _ in template.maps}
    values = {p: item for p, item, _ in node.bound}
    values.update((p, results[u]) for p, u in node.inputs if p in mapped)
    return next(iter(values.values())) if len(values) == 1 else values


def mapped_over(node: Node, nodes: Sequence[Node]) -> tuple[str, ...]:
    """The names of the tasks mapped task ``node`` is mapped over, without repeats."""
    return tuple(dict.fromkeys(nodes[u].name for _, u in node.maps))


def mapped_items(
    node: Node,
    nodes: Sequence[Node],
    results: Sequence[Any] | Mapping[int, Any],
    expansions: Mapping[int, Expansion],
) -> tuple[list[tuple[str, Sequence[Any]]], list[tuple[str, Expansion]], int]:
    """What mapped task ``node`` is mapped over, once its upstream tasks are done or expanded.

    Args:
        node: the mapped task's node.
        nodes: the nodes by index (``results`` and ``expansions`` use the same indices).
        results: the result of each plain task ``node`` is mapped over, by node index.
        expansions: the expansion of each mapped task ``node`` is mapped over (chained).

    Returns:
        ``(plain, chained, count)``: ``(parameter, items)`` for each parameter mapped over
        a plain task's list, ``(parameter, expansion)`` for each mapped over a mapped task,
        and the number of instances.

    Raises:
        MappingError: a plain upstream result is not a list (or tuple), or the zipped
            inputs have unequal lengths; the message names the task, the upstream tasks
            and what they gave.
    """
    name = node.task.name
    lengths: list[tuple[str, str, int]] = []  # (parameter, upstream, length)
    plain: list[tuple[str, Sequence[Any]]] = []
    chained: list[tuple[str, Expansion]] = []
    for param, u in node.maps:
        upstream = nodes[u].name
        expansion = expansions.get(u)
        if expansion is not None:
            chained.append((param, expansion))
            lengths.append((param, upstream, expansion.count))
            continue
        value = results[u]
        if not isinstance(value, list | tuple):
            raise MappingError(
                name,
                f"task {name!r} is mapped over the result of {upstream!r} (parameter "
                f"{param!r}), which must be a list, not {type(value).__qualname__}",
            )
        plain.append((param, value))
        lengths.append((param, upstream, len(value)))
    if len({n for _, _, n in lengths}) > 1:
        described = " and ".join(f"{p!r} over {u!r} has {n} items" for p, u, n in lengths)
        raise MappingError(name, f"task {name!r} zips inputs of unequal lengths: {described}")
    return plain, chained, lengths[0][2]


def instance_nodes(
    node: Node,
    first: int,
    count: int,
    plain: Sequence[tuple[str, Sequence[Any]]],
    chained: Sequence[tuple[str, Expansion]],
    run_id: str,
) -> tuple[tuple[str, ...], list[Node]]:
    """The labels and nodes of the ``count`` instances of mapped task ``node``.

    They are numbered from ``first``, each with an empty downstream list (chained
    instances are added to their upstream instance's list by the caller). What
    :func:`mapped_items` returned gives their items: a plain item is bound (with its
    digest, or a :func:`~asyncflow._cache.volatile_key` of ``run_id`` when it cannot be
    hashed), a chained one is an input from the upstream instance at the same position.
    """
    name = node.task.name
    # The instances' own upstream: the mapped task's, less what it maps over (each
    # instance gets its item, or its upstream instance, instead) unless it also takes
    # that task whole.
    over = {u for _, u in node.maps}
    data = {u for _, u in node.inputs} | {u for _, g in node.gathers for u in g}
    static_up = tuple(u for u in node.upstream if u not in over or u in data)
    labels = tuple(f"{name}[{k}]" for k in range(count))
    instances = []
    for k in range(count):
        bound = tuple(
            (param, items[k], item_digest(items[k], volatile_key(f"{labels[k]}.{param}", run_id)))
            for param, items in plain
        )
        links = tuple((param, e.first + k) for param, e in chained)
        instances.append(
            Node(
                index=first + k,
                task=node.task,
                inputs=node.inputs + links,
                gathers=node.gathers,
                upstream=static_up + tuple(m for _, m in links),
                downstream=[],
                label=labels[k],
                parent=node.index,
                bound=bound,
            )
        )
    return labels, instances


def instance_checkpoint(node: Node, template: Node, digests: Sequence[str | None]) -> str:
    """The store name of instance ``node`` of mapped task ``template``.

    By its items' values (see :func:`checkpoint_name`): the digests of its bound items,
    then ``digests[u]`` of each upstream instance it is mapped over (``None`` counts as
    ``""``).
    """
    mapped = {p for p, _ in template.maps}
    names = [d for _, _, d in node.bound]
    names += [digests[u] or "" for p, u in node.inputs if p in mapped]
    return checkpoint_name(node.task.name, names)


def list_digests(
    name: str, digests: Sequence[str], marks: Sequence[str | None], run_id: str
) -> tuple[str, str]:
    """The result digest and effect mark of mapped task ``name``'s list of results.

    From its instances' ``digests`` and ``marks`` (see
    :func:`~asyncflow._cache.effect_mark`), in item order: the combined digest of each;
    the mark is a :func:`~asyncflow._cache.volatile_key` of ``run_id`` when an instance
    has none.
    """
    mark = (
        combined_digest(m for m in marks if m is not None)
        if all(m is not None for m in marks)
        else volatile_key(f"{name}:ran", run_id)
    )
    return combined_digest(digests), mark

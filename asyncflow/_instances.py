"""The instances of a mapped task: their items, nodes, checkpoint names and digests.

Pure functions of a mapped task's node and what its upstream tasks gave, shared by the
runner (:mod:`asyncflow._mapping`, which expands mapped tasks as a run goes) and the
planner (:mod:`asyncflow._plan`, which predicts the instances of a ``--dry-run``), so
that both name, key and checkpoint an instance the same way.

Checkpoints. An instance's checkpoint is stored under ``task[<digest>]``, the digest of
its items' *values* (:func:`checkpoint_name`), and its cache key folds in its items'
digests (:func:`item_digests` of the ``bound`` items of its node, computed only when a
key is: a run without checkpoints hashes no item), not its position:
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
    "item_digests",
    "list_digests",
    "list_mark",
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


def item_digest(item: Any) -> str | None:
    """The digest of one item an instance receives: of its strict JSON, else of its pickle.

    ``None`` when it is neither; the caller then uses a
    :func:`~asyncflow._cache.volatile_key`, so the instance runs on every run, as a task
    below an unhashable result does.
    """
    digest = result_digest(item)
    if digest is not None:
        return digest
    try:
        return hashlib.sha256(pickle.dumps(item, protocol=5)).hexdigest()
    except Exception:
        return None


def item_digests(node: Node, run_id: str) -> tuple[tuple[str, str], ...]:
    """``(parameter, digest)`` of each item instance ``node`` receives from a plain list
    (:func:`item_digest`, or a :func:`~asyncflow._cache.volatile_key` of ``run_id``)."""
    return tuple(
        (param, item_digest(item) or volatile_key(f"{node.name}.{param}", run_id))
        for param, item in node.bound
    )


def combined_digest(digests: Iterable[str]) -> str:
    """One digest for an ordered list of digests (of a mapped task's list of results)."""
    return hashlib.sha256("\x1e".join(digests).encode()).hexdigest()


def checkpoint_name(task: str, digests: Sequence[str]) -> str:
    """The store name of an instance of ``task`` whose mapped items have ``digests``.

    ``task[``, 16 hex digits of the item's digest (of their :func:`combined_digest` for
    zipped items), ``]``: by value, not position, so the same item finds its checkpoint
    wherever it is in the list.
    """
    digest = digests[0] if len(digests) == 1 else combined_digest(digests)
    return f"{task}[{digest[:16]}]"


def instance_item(node: Node, results: Sequence[Any], template: Node) -> Any:
    """The item an instance received: one value, or ``{parameter: value}`` for zipped inputs."""
    mapped = {p for p, _ in template.maps}
    values = dict(node.bound)
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
) -> tuple[tuple[str, ...], list[Node]]:
    """The labels and nodes of the ``count`` instances of mapped task ``node``.

    They are numbered from ``first``, each with an empty downstream list (chained
    instances are added to their upstream instance's list by the caller). What
    :func:`mapped_items` returned gives their items: a plain item is bound (``(parameter,
    item)``; hashed later, by :func:`item_digests`), a chained one is an input from the
    upstream instance at the same position.
    """
    t, task, inputs, gathers = node.index, node.task, node.inputs, node.gathers
    # The instances' own upstream: the mapped task's, less what it maps over (each
    # instance gets its item, or its upstream instance, instead) unless it also takes
    # that task whole.
    over = {u for _, u in node.maps}
    data = {u for _, u in inputs} | {u for _, g in gathers for u in g}
    static_up = tuple(u for u in node.upstream if u not in over or u in data)
    labels = tuple(f"{task.name}[{k}]" for k in range(count))
    indices = range(first, first + count)
    if not chained and len(plain) == 1:  # the common case, without the general loop's work
        param, items = plain[0]
        return labels, [
            Node(j, task, inputs, gathers, static_up, [], (), (), label, t, ((param, item),))
            for j, label, item in zip(indices, labels, items, strict=True)
        ]
    instances = []
    for k, j in enumerate(indices):
        links = tuple((param, e.first + k) for param, e in chained)
        bound = tuple((param, items[k]) for param, items in plain)
        ups = static_up + tuple(m for _, m in links)
        instances.append(Node(j, task, inputs + links, gathers, ups, [], (), (), labels[k], t, bound))
    return labels, instances


def instance_checkpoint(
    node: Node, template: Node, items: Sequence[tuple[str, str]], digests: Sequence[str | None]
) -> str:
    """The store name of instance ``node`` of mapped task ``template``.

    By its items' values (see :func:`checkpoint_name`): ``items``, its
    :func:`item_digests`, then ``digests[u]`` of each upstream instance it is mapped over
    (``None`` counts as ``""``).
    """
    names = [d for _, d in items]
    if len(names) < len(template.maps):  # mapped over a mapped task too: by its result
        mapped = {p for p, _ in template.maps}
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
    return combined_digest(digests), list_mark(name, marks, run_id)


def list_mark(name: str, marks: Sequence[str | None], run_id: str) -> str:
    """The effect mark of mapped task ``name`` (see :func:`~asyncflow._cache.effect_mark`):
    the combined digest of its instances' ``marks``, in item order, or a
    :func:`~asyncflow._cache.volatile_key` of ``run_id`` when one of them has none (it
    kept no checkpoint, so what depends on what it did runs again)."""
    if any(m is None for m in marks):
        return volatile_key(f"{name}:ran", run_id)
    return combined_digest(m for m in marks if m is not None)

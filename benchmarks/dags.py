"""Seeded DAG shapes for the benchmarks, and asyncflow pipelines built from them.

A :class:`Dag` is a plain list of upstream indices per node. Every node's upstream nodes
have smaller indices, so ``range(n)`` is a topological order and the shapes can be fed to
asyncflow and to the baselines alike. The shapes:

``chain``
    ``t0 -> t1 -> ... -> t(n-1)``: no parallelism at all.
``wide``
    one root, ``n - 2`` children of it, one sink that depends on every child.
``diamonds``
    layers of ``width`` nodes; node ``j`` of a layer depends on nodes ``j`` and
    ``j + 1`` (wrapping around) of the layer before, so every node but the first layer's
    has two upstream nodes.
``random``
    node 0 is the root; every later node picks 1 to 3 distinct earlier nodes uniformly at
    random (seeded).
``flat``
    ``n`` independent roots, no edges (for the parallel-sleep measurement).

Pipelines are built through asyncflow's public API only: :class:`asyncflow.Pipeline` and
``@pipeline.task(name=..., after=[...])``; one function is registered under ``n`` names.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncflow

__all__ = [
    "DEFAULT_DIAMOND_WIDTH",
    "SHAPES",
    "Dag",
    "build_pipeline",
    "make_dag",
    "noop",
    "task_name",
]

SHAPES = ("chain", "wide", "diamonds", "random", "flat")
"""Every shape :func:`make_dag` knows."""

DEFAULT_DIAMOND_WIDTH = 100
"""Nodes per layer of ``diamonds`` (fewer for small DAGs, see :func:`diamond_width`)."""

MAX_PARENTS = 3
"""The most upstream nodes a ``random`` node picks."""


@dataclass(frozen=True)
class Dag:
    """A DAG whose nodes are numbered in a topological order.

    Attributes:
        shape: one of :data:`SHAPES`.
        n: number of nodes.
        upstream: ``upstream[i]`` holds the indices (all ``< i``) that node ``i`` waits for.
        seed: the seed it was generated with.
    """

    shape: str
    n: int
    upstream: tuple[tuple[int, ...], ...]
    seed: int

    @property
    def edges(self) -> int:
        """The number of dependency edges."""
        return sum(len(ups) for ups in self.upstream)

    def depth(self) -> int:
        """The number of nodes on the longest path (the critical path, in tasks)."""
        level = [0] * self.n
        for i, ups in enumerate(self.upstream):
            level[i] = 1 + max((level[u] for u in ups), default=0)
        return max(level, default=0)


def task_name(i: int) -> str:
    """The asyncflow task name (and dask key) of node ``i``."""
    return f"t{i}"


def diamond_width(n: int, width: int = DEFAULT_DIAMOND_WIDTH) -> int:
    """The layer width used for ``n`` nodes: ``width``, but at most ``n // 10`` (and at least 2)."""
    return max(2, min(width, n // 10))


def _chain(n: int, rng: random.Random) -> list[tuple[int, ...]]:
    return [()] + [(i - 1,) for i in range(1, n)]


def _wide(n: int, rng: random.Random) -> list[tuple[int, ...]]:
    if n < 3:
        raise ValueError("a wide DAG needs at least 3 nodes")
    return [()] + [(0,)] * (n - 2) + [tuple(range(1, n - 1))]


def _diamonds(n: int, rng: random.Random) -> list[tuple[int, ...]]:
    width = diamond_width(n)
    ups: list[tuple[int, ...]] = []
    for i in range(n):
        layer, j = divmod(i, width)
        if layer == 0:
            ups.append(())
        else:
            base = (layer - 1) * width
            ups.append((base + j, base + (j + 1) % width))
    return ups


def _random(n: int, rng: random.Random) -> list[tuple[int, ...]]:
    ups: list[tuple[int, ...]] = [()]
    for i in range(1, n):
        k = rng.randint(1, min(MAX_PARENTS, i))
        ups.append(tuple(sorted(rng.sample(range(i), k))))
    return ups


def _flat(n: int, rng: random.Random) -> list[tuple[int, ...]]:
    return [()] * n


_GENERATORS: dict[str, Callable[[int, random.Random], list[tuple[int, ...]]]] = {
    "chain": _chain,
    "wide": _wide,
    "diamonds": _diamonds,
    "random": _random,
    "flat": _flat,
}


def make_dag(shape: str, n: int, *, seed: int = 0) -> Dag:
    """Generate the DAG of ``shape`` with ``n`` nodes; the same arguments give the same DAG.

    Raises:
        ValueError: unknown shape, ``n < 1``, or ``n < 3`` for ``wide``.
    """
    if shape not in _GENERATORS:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    if n < 1:
        raise ValueError(f"a DAG needs at least one node, not {n}")
    rng = random.Random(f"{seed}:{shape}:{n}")
    return Dag(shape=shape, n=n, upstream=tuple(_GENERATORS[shape](n, rng)), seed=seed)


async def noop() -> None:
    """The no-op task: returns at once without awaiting anything."""
    return None


def build_pipeline(
    dag: Dag,
    fn: Callable[[], Any] = noop,
    *,
    checkpoint: bool = False,
    name: str | None = None,
) -> asyncflow.Pipeline:
    """An asyncflow pipeline with one task per node of ``dag``, each calling ``fn()``.

    Node ``i`` becomes task ``t<i>`` with ``after=[t<u> for u in dag.upstream[i]]``
    (ordering-only dependencies: ``fn`` takes no arguments). ``checkpoint`` is passed to
    every task. The pipeline is validated before it is returned, so a timed run does not
    include building the graph.
    """
    pipeline = asyncflow.Pipeline(name or f"bench_{dag.shape}_{dag.n}")
    for i, ups in enumerate(dag.upstream):
        pipeline.task(name=task_name(i), after=[task_name(u) for u in ups], checkpoint=checkpoint)(fn)
    pipeline.validate()
    return pipeline

"""The task selection of a partial run: ``--only``, ``--from`` and ``--until``.

:func:`select` turns them into the tasks that ``Pipeline.run(only=...)`` runs; the
command line (:mod:`asyncflow._cli_options`) and the planner's callers use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._graph import Graph

__all__ = ["select"]


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

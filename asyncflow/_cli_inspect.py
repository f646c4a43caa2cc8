"""The verbs that run nothing: ``--list``, ``--graph`` and ``--dry-run``.

They print and write nothing to the working directory. Imported by :mod:`asyncflow._cli`.
"""

from __future__ import annotations

import argparse
import functools
import json
from typing import Any

import anyio

from ._cli_args import EXIT_OK, EXIT_USAGE, fail
from ._errors import MissingCheckpointError
from ._graph import Graph
from ._log_sinks import add_cli_sinks
from ._pipeline import Pipeline, default_file_store
from ._plan import make_plan
from ._render import plan_json, render_dot, render_mermaid, render_plan, render_tasks, tasks_json

__all__ = ["inspect"]


def inspect(
    args: argparse.Namespace,
    pipeline: Pipeline,
    graph: Graph,
    params: dict[str, Any],
    selected: list[str] | None,
) -> int:
    """``--list``, ``--graph`` and ``--dry-run``: print, run nothing, write nothing."""
    if args.list:
        listing = tasks_json(pipeline.name, graph, selected)
        print(json.dumps(listing) if args.json else render_tasks(graph, selected))
        return EXIT_OK
    if args.graph == "mermaid":
        print(render_mermaid(graph, selected))
        return EXIT_OK
    if args.graph == "dot":
        print(render_dot(graph, pipeline.name, selected))
        return EXIT_OK
    add_cli_sinks(level=args.log_level, log_file=None, json_lines=args.log_json)
    plan = anyio.run(
        functools.partial(
            make_plan,
            graph,
            pipeline=pipeline.name,
            params=params,
            store=default_file_store(args.workdir, pipeline.name),
            force=args.no_skip,
            selected=selected,
            workdir=args.workdir.resolve(),
            serializer=pipeline.serializer,
        ),
        backend=args.backend,
    )
    print(json.dumps(plan_json(plan)) if args.json else render_plan(plan))
    if plan.missing:
        fail(str(MissingCheckpointError(plan.missing)), EXIT_USAGE)
    return EXIT_OK

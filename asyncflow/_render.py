"""Text and JSON renderings for the command line: task lists, graphs, plans, run summaries.

Pure functions from asyncflow's values to ``str`` or JSON-ready ``dict``; they print
nothing. ``--graph`` writes Mermaid (``flowchart LR``) or Graphviz DOT (``digraph``) by
hand: both are plain text, so no graph library is needed. In both, an edge that passes data
is solid and an ``after=`` edge (ordering only) is dashed.

JSON keys carry units: ``duration_s`` in seconds, ``started_at``/``finished_at`` in
seconds since the Unix epoch.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from ._graph import Graph, Node
from ._plan import Action, Plan
from ._result import RunResult

__all__ = [
    "plan_json",
    "render_dot",
    "render_mermaid",
    "render_plan",
    "render_summary",
    "render_table",
    "render_tasks",
    "run_json",
    "tasks_json",
]


def render_table(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> str:
    """``rows`` (the first is the header) as aligned columns, a rule under the header.

    Columns in ``right`` are right-aligned; the last column is never padded.
    """
    if not rows:
        return ""
    count = len(rows[0])
    widths = [max(len(row[c]) for row in rows) for c in range(count)]
    lines = []
    for row in rows:
        cells = [
            row[c] if c == count - 1 else row[c].rjust(widths[c]) if c in right else row[c].ljust(widths[c])
            for c in range(count)
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _kept(graph: Graph, names: Collection[str] | None) -> list[Node]:
    return [node for node in graph.nodes if names is None or node.name in names]


def _upstream(node: Node, graph: Graph) -> list[str]:
    """Upstream task names, ``after=`` ones marked ``(after)``."""
    data = {u for _, u in node.inputs} | {u for _, group in node.gathers for u in group}
    return [graph.nodes[u].name + ("" if u in data else " (after)") for u in node.upstream]


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _names(names: Sequence[str], most: int = 6) -> str:
    """``a, b, c`` or, past ``most`` names, ``a, b, c … (+N more)``: a fan-in of thousands
    of tasks must not widen every row of a table."""
    if len(names) <= most:
        return ", ".join(names) or "-"
    return ", ".join(names[: most - 1]) + f" … (+{len(names) - most + 1} more)"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def render_tasks(graph: Graph, names: Collection[str] | None = None) -> str:
    """``--list``: one row per task in definition order (only ``names`` when given).

    Columns: task, upstream, retries, timeout, checkpoint, tags, description.
    """
    rows = [("task", "upstream", "retries", "timeout", "checkpoint", "tags", "description")]
    for node in _kept(graph, names):
        task = node.task
        rows.append(
            (
                task.name,
                _names(_upstream(node, graph)),
                str(task.retry.retries),
                _seconds(task.timeout),
                "yes" if task.checkpoint else "no",
                ", ".join(task.tags) or "-",
                _short(task.description),
            )
        )
    return render_table(rows, right={2})


def render_summary(result: RunResult, sinks: Collection[str]) -> str:
    """The table printed after a run: one row per task, then a status line.

    Columns: task, state, attempts, duration (seconds), and a note: the error of a failed
    task, the reason of a skipped or cancelled one, the result of a final (sink) task.
    """
    rows = [("task", "state", "attempts", "duration", "note")]
    for name, run in result.tasks.items():
        if run.error is not None:
            note = f"{type(run.error).__name__}: {run.error}"
        elif run.reason is not None:
            note = run.reason
        elif name in sinks and run.state.is_ok:
            note = _short(run.result if isinstance(run.result, str) else repr(run.result))
        else:
            note = ""
        duration = f"{run.duration:.3f} s" if run.duration is not None else "-"
        rows.append((name, run.state.value, str(run.attempts), duration, _short(note, 100)))
    counts = ", ".join(f"{n} {state.value}" for state, n in result.counts.items())
    status = "ok" if result.ok else "FAILED"
    footer = f"run {result.run_id} {status}: {counts} in {result.duration:.2f} s"
    return render_table(rows, right={2}) + "\n\n" + footer


def tasks_json(pipeline: str, graph: Graph, names: Collection[str] | None = None) -> dict[str, Any]:
    """``--list --json``: the pipeline's tasks in definition order, with their options."""
    tasks = []
    for node in _kept(graph, names):
        task = node.task
        data = {u for _, u in node.inputs} | {u for _, group in node.gathers for u in group}
        tasks.append(
            {
                "task": task.name,
                "upstream": [graph.nodes[u].name for u in node.upstream if u in data],
                "after": [graph.nodes[u].name for u in node.upstream if u not in data],
                "retries": task.retry.retries,
                "retry_delay_s": task.retry.delay,
                "timeout_s": task.timeout,
                "checkpoint": task.checkpoint,
                "tags": list(task.tags),
                "description": task.description,
            }
        )
    return {"pipeline": pipeline, "tasks": tasks}


def _edges(graph: Graph, nodes: Sequence[Node]) -> list[tuple[Node, Node, bool]]:
    """``(upstream, downstream, passes data)`` for every edge between ``nodes``."""
    kept = {node.index for node in nodes}
    edges: list[tuple[Node, Node, bool]] = []
    for node in nodes:
        data = {u for _, u in node.inputs} | {u for _, group in node.gathers for u in group}
        edges.extend((graph.nodes[u], node, u in data) for u in node.upstream if u in kept)
    return edges


def render_mermaid(graph: Graph, names: Collection[str] | None = None) -> str:
    """The DAG as a Mermaid ``flowchart LR``.

    Nodes get ids ``t0``, ``t1``, ... (a task named ``end`` would break Mermaid) and
    their task name as label.
    """
    nodes = _kept(graph, names)
    lines = ["flowchart LR"]
    lines += [f'    t{node.index}["{node.name}"]' for node in nodes]
    for up, down, data in _edges(graph, nodes):
        lines.append(f"    t{up.index} {'-->' if data else '-.->'} t{down.index}")
    return "\n".join(lines)


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(graph: Graph, pipeline: str, names: Collection[str] | None = None) -> str:
    """The DAG as a Graphviz DOT ``digraph``, left to right (``dot -Tsvg`` renders it)."""
    nodes = _kept(graph, names)
    lines = [f"digraph {_dot_id(pipeline)} {{", "    rankdir=LR;", "    node [shape=box];"]
    lines += [f"    {_dot_id(node.name)};" for node in nodes]
    for up, down, data in _edges(graph, nodes):
        style = "" if data else " [style=dashed]"
        lines.append(f"    {_dot_id(up.name)} -> {_dot_id(down.name)}{style};")
    lines.append("}")
    return "\n".join(lines)


def render_plan(plan: Plan) -> str:
    """``--dry-run``: one row per task (task, action, reason) and a count line."""
    rows = [("task", "action", "reason")]
    rows += [(t.name, t.action.value, t.reason) for t in plan.tasks]
    counts: dict[Action, int] = {}
    maybe = 0  # would run unless an upstream result comes out unchanged (early cutoff)
    for t in plan.tasks:
        if t.action is Action.RUN and t.reason.endswith(MAYBE):
            maybe += 1
        else:
            counts[t.action] = counts.get(t.action, 0) + 1
    parts = [f"{counts[a]} {_PLANNED[a]}" for a in Action if a in counts]
    if maybe:
        parts.append(f"{maybe} would run unless their upstream results come out unchanged")
    summary = ", ".join(parts) or "no task"
    return f"{render_table(rows)}\n\nplan of pipeline {plan.pipeline!r}: {summary} (nothing was run)"


MAYBE = "cached if its result is unchanged"
"""How a planned task's reason ends when it runs only if an upstream result changes."""

_PLANNED = {
    Action.RUN: "would run",
    Action.CACHED: "cached",
    Action.FAIL: "would fail",
    Action.SKIP: "would be skipped",
    Action.MISSING: "missing a checkpoint",
}


def plan_json(plan: Plan) -> dict[str, Any]:
    """``--dry-run --json``: ``{"pipeline", "tasks": {name: {"action", "reason", ...}}}``."""
    return {
        "pipeline": plan.pipeline,
        "tasks": {
            t.name: {
                "action": t.action.value,
                "reason": t.reason,
                "selected": t.selected,
                "cache_key": t.cache_key,
                "stored_key": t.stored_key,
            }
            for t in plan.tasks
        },
    }


def _json_value(value: Any) -> tuple[bool, Any]:
    """``(True, value)`` when ``value`` is strict JSON, else ``(False, None)``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False, None
    return True, value


def run_json(result: RunResult, log_file: Path | None = None) -> dict[str, Any]:
    """``--json``: the run summary, with one entry per task in definition order.

    A task's ``result`` is included only when it is strict JSON; a result that is not
    gives ``result_type`` (its class's qualified name) and ``result_size`` (the bytes of
    its checkpoint, or ``null`` when it was not checkpointed) instead. ``error`` is
    ``{"type", "message"}`` or ``None``.
    """
    ok_params, params = _json_value(dict(result.params))
    tasks = {}
    for name, run in result.tasks.items():
        entry: dict[str, Any] = {
            "state": run.state.value,
            "attempts": run.attempts,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "duration_s": run.duration,
            "error": None
            if run.error is None
            else {"type": type(run.error).__name__, "message": str(run.error)},
            "reason": run.reason,
            "cache_key": run.cache_key,
        }
        if run.state.is_ok:
            serializable, value = _json_value(run.result)
            if serializable:
                entry["result"] = value
            else:
                entry["result_type"] = type(run.result).__qualname__
                entry["result_size"] = run.result_size
        tasks[name] = entry
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "ok": result.ok,
        "params": params if ok_params else {k: repr(v) for k, v in result.params.items()},
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "duration_s": result.duration,
        "counts": {state.value: n for state, n in result.counts.items()},
        "log": None if log_file is None else str(log_file),
        "tasks": tasks,
    }

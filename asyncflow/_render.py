"""Text and JSON renderings for the command line: task lists, graphs, plans, run summaries.

Pure functions from asyncflow's values to ``str`` or JSON-ready ``dict``; they print
nothing. ``--graph`` writes Mermaid (``flowchart LR``) or Graphviz DOT (``digraph``) by
hand: both are plain text, so no graph library is needed. In both, an edge that passes data
is solid, an ``after=`` edge (ordering only) is dashed, and the edge a mapped task is mapped
over is labelled ``each``. A mapped task (:func:`~asyncflow.each`) is shown once, never one
row per instance (see :mod:`asyncflow._render_mapped`).

JSON keys carry units: ``duration_s`` in seconds, ``started_at``/``finished_at`` in
seconds since the Unix epoch.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from ._graph import Graph, Node
from ._planned import MAYBE, PLANNED, Action, Plan, PlannedTask
from ._render_mapped import (
    Instances,
    count_note,
    edge_kind,
    failed_lines,
    instance_json,
    mapped_json,
    mapped_label,
    mapped_over_names,
)
from ._result import RunResult, TaskRun

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
    """Upstream task names, ``after=`` ones marked ``(after)``, mapped-over ones ``(each)``."""
    marks = {"each": " (each)", "data": "", "after": " (after)"}
    return [graph.nodes[u].name + marks[edge_kind(node, u)] for u in node.upstream]


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

    Columns: task, upstream, retries, timeout, checkpoint, tags, description. A mapped
    task's upstream it is mapped over is marked ``(each)`` and its description starts
    with ``mapped over urls;``.
    """
    rows = [("task", "upstream", "retries", "timeout", "checkpoint", "tags", "description")]
    for node in _kept(graph, names):
        task = node.task
        mapped = mapped_label(node, graph)
        description = f"{mapped}; {task.description}" if mapped and task.description else mapped
        rows.append(
            (
                task.name,
                _names(_upstream(node, graph)),
                str(task.retry.retries),
                _seconds(task.timeout),
                "yes" if task.checkpoint else "no",
                ", ".join(task.tags) or "-",
                _short(description or task.description),
            )
        )
    return render_table(rows, right={2})


def render_summary(result: RunResult, sinks: Collection[str], graph: Graph | None = None) -> str:
    """The table printed after a run: one row per task, then a status line.

    Columns: task, state, attempts, duration (seconds), and a note: the error of a failed
    task, the reason of a skipped or cancelled one, the result of a final (sink) task.
    A mapped task (the mapped tasks of ``graph``, and any task of ``result`` that was
    expanded) is one row, ``fetch[*]``, whose attempts are its instances' and whose note
    counts them by state (``200 items: 197 succeeded, 3 cached``); its failed instances
    are listed under the table by index and item (see
    :func:`~asyncflow._render_mapped.failed_lines`). The status line counts instances.
    """
    groups = Instances(result, mapped_over_names(graph) if graph is not None else ())
    rows = [("task", "state", "attempts", "duration", "note")]
    failed: list[str] = []
    for name, run in result.tasks.items():
        if name in groups.names:
            continue
        duration = f"{run.duration:.3f} s" if run.duration is not None else "-"
        if name in groups.mapped:
            instances = groups.of(name)
            expanded = run.instances is not None or bool(instances)
            note = count_note(instances) if expanded else _note(run, set())
            attempts = sum(i.attempts for i in instances)
            rows.append((f"{name}[*]", run.state.value, str(attempts), duration, _short(note, 100)))
            failed += failed_lines(name, instances)
            continue
        rows.append((name, run.state.value, str(run.attempts), duration, _short(_note(run, sinks), 100)))
    counts = ", ".join(f"{n} {state.value}" for state, n in result.counts.items()) or "no tasks"
    status = "ok" if result.ok else "FAILED"
    footer = f"run {result.run_id} {status}: {counts} in {result.duration:.2f} s"
    listed = "\n".join(failed) + "\n\n" if failed else ""
    return render_table(rows, right={2}) + "\n\n" + listed + footer


def _note(run: TaskRun, sinks: Collection[str]) -> str:
    if run.error is not None:
        return f"{type(run.error).__name__}: {run.error}"
    if run.reason is not None:
        return run.reason
    if run.name in sinks and run.state.is_ok:
        return _short(run.result if isinstance(run.result, str) else repr(run.result))
    return ""


def tasks_json(pipeline: str, graph: Graph, names: Collection[str] | None = None) -> dict[str, Any]:
    """``--list --json``: the pipeline's tasks in definition order, with their options.

    ``upstream`` names the tasks whose results a task takes (a mapped task: also those it
    is mapped over), ``after`` its ordering-only upstream tasks; a mapped task also has
    ``mapped_over``, the names of the tasks it is mapped over.
    """
    tasks = []
    for node in _kept(graph, names):
        task = node.task
        kinds = {u: edge_kind(node, u) for u in node.upstream}
        entry: dict[str, Any] = {
            "task": task.name,
            "upstream": [graph.nodes[u].name for u in node.upstream if kinds[u] != "after"],
            "after": [graph.nodes[u].name for u in node.upstream if kinds[u] == "after"],
            "retries": task.retry.retries,
            "retry_delay_s": task.retry.delay,
            "timeout_s": task.timeout,
            "checkpoint": task.checkpoint,
            "tags": list(task.tags),
            "description": task.description,
        }
        if node.maps:
            entry["mapped_over"] = list(dict.fromkeys(graph.nodes[u].name for _, u in node.maps))
        tasks.append(entry)
    return {"pipeline": pipeline, "tasks": tasks}


def _edges(graph: Graph, nodes: Sequence[Node]) -> list[tuple[Node, Node, str]]:
    """``(upstream, downstream, kind)`` for every edge between ``nodes`` (kind: see
    :func:`~asyncflow._render_mapped.edge_kind`)."""
    kept = {node.index for node in nodes}
    edges: list[tuple[Node, Node, str]] = []
    for node in nodes:
        edges.extend((graph.nodes[u], node, edge_kind(node, u)) for u in node.upstream if u in kept)
    return edges


def render_mermaid(graph: Graph, names: Collection[str] | None = None) -> str:
    """The DAG as a Mermaid ``flowchart LR``.

    Nodes get ids ``t0``, ``t1``, ... (a task named ``end`` would break Mermaid) and
    their task name as label; a mapped task is a subroutine box (``[[...]]``) labelled
    ``fetch[*] mapped over urls``, and the edge it is mapped over ``-->|each|``.
    """
    nodes = _kept(graph, names)
    lines = ["flowchart LR"]
    for node in nodes:
        mapped = mapped_label(node, graph)
        lines.append(
            f'    t{node.index}[["{node.name}[*] {mapped}"]]'
            if mapped
            else f'    t{node.index}["{node.name}"]'
        )
    arrows = {"data": "-->", "after": "-.->", "each": "-->|each|"}
    for up, down, kind in _edges(graph, nodes):
        lines.append(f"    t{up.index} {arrows[kind]} t{down.index}")
    return "\n".join(lines)


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(graph: Graph, pipeline: str, names: Collection[str] | None = None) -> str:
    """The DAG as a Graphviz DOT ``digraph``, left to right (``dot -Tsvg`` renders it).

    A mapped task has a double border and the label ``fetch[*] mapped over urls``; the
    edge it is mapped over is labelled ``each``.
    """
    nodes = _kept(graph, names)
    lines = [f"digraph {_dot_id(pipeline)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for node in nodes:
        mapped = mapped_label(node, graph)
        label = f" [label={_dot_id(f'{node.name}[*] {mapped}')}, peripheries=2]" if mapped else ""
        lines.append(f"    {_dot_id(node.name)}{label};")
    styles = {"data": "", "after": " [style=dashed]", "each": ' [label="each"]'}
    for up, down, kind in _edges(graph, nodes):
        lines.append(f"    {_dot_id(up.name)} -> {_dot_id(down.name)}{styles[kind]};")
    lines.append("}")
    return "\n".join(lines)


def render_plan(plan: Plan) -> str:
    """``--dry-run``: one row per task (task, action, reason) and a count line.

    A mapped task is one row; its reason says how many instances would run and how many
    would be cached, or ``mapped over urls (known when it runs)``. The count line counts
    it as one task.
    """
    rows = [("task", "action", "reason")]
    rows += [(t.name, t.action.value, t.reason) for t in plan.tasks]
    counts: dict[Action, int] = {}
    maybe = 0  # would run unless an upstream result comes out unchanged (early cutoff)
    for t in plan.tasks:
        if t.action is Action.RUN and t.reason.endswith(MAYBE):
            maybe += 1
        else:
            counts[t.action] = counts.get(t.action, 0) + 1
    parts = [f"{counts[a]} {PLANNED[a]}" for a in Action if a in counts]
    if maybe:
        parts.append(f"{maybe} would run unless their upstream results come out unchanged")
    summary = ", ".join(parts) or "no task"
    return f"{render_table(rows)}\n\nplan of pipeline {plan.pipeline!r}: {summary} (nothing was run)"


def _planned_json(t: PlannedTask) -> dict[str, Any]:
    return {
        "action": t.action.value,
        "reason": t.reason,
        "selected": t.selected,
        "cache_key": t.cache_key,
        "stored_key": t.stored_key,
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    """``--dry-run --json``: ``{"pipeline", "tasks": {name: {"action", "reason", ...}}}``.

    A mapped task's entry also has ``mapped``: ``{"over": [task, ...], "items": N or
    None (known when it runs), "counts": {action: n}, "instances": [{"task", "action",
    "reason", "cache_key", "stored_key", "selected"}, ...]}``, its instances in item order.
    """
    tasks: dict[str, Any] = {}
    for t in plan.tasks:
        entry = tasks[t.name] = _planned_json(t)
        if t.over:
            instances = t.instances or ()
            counts: dict[str, int] = {}
            for i in instances:
                counts[i.action.value] = counts.get(i.action.value, 0) + 1
            entry["mapped"] = {
                "over": list(t.over),
                "items": None if t.instances is None else len(instances),
                "counts": counts,
                "instances": [{"task": i.name, **_planned_json(i)} for i in instances],
            }
    return {"pipeline": plan.pipeline, "tasks": tasks}


def _json_value(value: Any) -> tuple[bool, Any]:
    """``(True, value)`` when ``value`` is strict JSON, else ``(False, None)``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False, None
    return True, value


def run_json(result: RunResult, log_file: Path | None = None, graph: Graph | None = None) -> dict[str, Any]:
    """``--json``: the run summary, with one entry per task in definition order, then one
    per instance of a mapped task.

    A task's ``result`` is included only when it is strict JSON; a result that is not
    gives ``result_type`` (its class's qualified name) and ``result_size`` (the bytes of
    its checkpoint, or ``null`` when it was not checkpointed) instead. ``error`` is
    ``{"type", "message"}`` or ``None``. A mapped task's entry (the mapped tasks of
    ``graph``, and any expanded task) also has ``mapped`` (see
    :func:`~asyncflow._render_mapped.mapped_json`: ``over``, ``items``, ``counts`` by
    state, ``failed`` instances with ``task``, ``index``, ``item`` and ``error``); an
    instance's also has ``parent``, ``index`` and ``item``. ``counts`` counts instances,
    not the mapped tasks.
    """
    ok_params, params = _json_value(dict(result.params))
    over = mapped_over_names(graph) if graph is not None else {}
    groups = Instances(result, over)
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
        if name in groups.mapped:
            entry["mapped"] = mapped_json(run, groups.of(name), over.get(name, ()))
        elif name in groups.names:
            entry.update(instance_json(run))
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

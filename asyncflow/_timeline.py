"""A run's timeline: one self-contained HTML page drawn from its :class:`RunRecord`.

The page is plain HTML with inline CSS and one inline SVG (no script, no font, nothing
fetched), so it opens offline and can be mailed around. The SVG is a Gantt chart on the
wall clock: one row per task (in definition order), one bar per attempt
(``<rect class="attempt s-<state>" data-task=... data-attempt=... data-state=...>``),
the backoff wait after a failed attempt drawn as a thin dashed bar up to the next
attempt, cache hits as diamonds, skipped tasks as crosses, and the critical path (the
chain of dependent tasks with the largest total duration) outlined. Every mark has a
``<title>`` child, which browsers show as a tooltip.

A mapped task (see :func:`~asyncflow.each`) is one group: a summary row labelled
``fetch[*]`` (``<text class="label group-label" data-group=... data-instances=...
data-shown=... data-collapsed=...>``) with a bar from its first instance's start to its
last one's end (``<rect class="group-span">``), then its instances' rows, indented
(``data-parent`` on their marks). Past :data:`~asyncflow._record_groups.COLLAPSE_AFTER`
instances the group is collapsed: only its failed instances, its slowest and those on the
critical path get rows, and one row (``<text class="more">``) counts the others. The
critical path goes through instances (``urls → fetch[3] → parse[3] → summary``): a mapped
task takes no time of its own, it ends when its last instance does.

Why no charting library: the candidates on PyPI either need a JavaScript bundle (plotly's
~4.6 MB plotly.js and pandas for its Gantt helper; bokeh's BokehJS with numpy; altair's
Vega, fetched from a CDN by default), have no Gantt chart (pygal, whose tooltips load
JavaScript from the web), or are unmaintained (python-gantt, last released 2016). Drawing
libraries such as drawsvg only wrap the element strings written here. A Gantt chart of
rectangles is about 150 lines of SVG with the standard library.
"""

from __future__ import annotations

import graphlib
import itertools
import math
import time

from ._record_groups import Row, describe_counts, groups, layout
from ._records import AttemptState, RunRecord
from ._timeline_marks import ROW_H, e, fmt_s, group_row, task_row

__all__ = ["critical_path", "render_timeline"]

_CHART_W = 960
"""Width of the time axis, in pixels."""
_AXIS_H = 34


def critical_path(record: RunRecord) -> list[str]:
    """The chain of dependent tasks with the largest total duration, upstream first.

    A task's weight is its ``duration`` in seconds (attempts and backoff waits; 0 for
    cached, skipped and never-started tasks). An expanded mapped task weighs nothing and
    follows its instances (it ends when they do), and is left out of the path: the path
    goes through the instances (``["urls", "fetch[3]", "parse[3]", "summary"]``). Ties go
    to the task defined first. Returns an empty list when no task took any time, or when
    the record's dependencies form a cycle (a hand-edited record).
    """
    tasks = record.tasks
    upstream: dict[str, tuple[str, ...]] = {}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, task in tasks.items():
        ups = task.upstream
        if task.instances:  # an expanded mapped task: after its instances
            ups = tuple(task.instances)
        upstream[name] = ups = tuple(u for u in ups if u in tasks)
        sorter.add(name, *ups)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError:
        return []
    best: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for name in order:
        task = tasks[name]
        top = max(upstream[name], key=lambda u: best[u], default=None)  # max() keeps the first of ties
        weight = 0.0 if task.is_mapped else task.duration or 0.0
        best[name] = weight + (best[top] if top is not None else 0.0)
        previous[name] = top
    end = max(tasks, key=lambda n: best.get(n, 0.0), default=None)
    if end is None or best[end] <= 0:
        return []
    path = []
    node: str | None = end
    while node is not None:
        if not tasks[node].is_mapped:
            path.append(node)
        node = previous[node]
    return path[::-1]


def _tick_step(span: float) -> float:
    raw = span / 8
    magnitude: float = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _svg(record: RunRecord, critical: list[str], rows: list[Row]) -> str:
    t0 = record.started_at
    ends = [record.finished_at] + [
        a.finished_at + (a.backoff or 0)
        for t in record.tasks.values()
        for a in t.attempts
        if a.finished_at is not None
    ]
    span = max(max(ends) - t0, 1e-3)
    longest = max((len(r.task.name) + (3 if r.kind == "group" else 0) for r in rows), default=4)
    label_w = min(320, max(150, 8 * longest + 24))
    width = label_w + _CHART_W + 30
    height = 2 * _AXIS_H + ROW_H * len(rows)
    on_path = set(critical)
    row_of = {r.task.name: i for i, r in enumerate(rows) if r.kind in ("task", "instance")}

    def x(t: float) -> float:
        return label_w + (t - t0) / span * _CHART_W

    def y(row: int) -> float:
        return _AXIS_H + row * ROW_H

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of run {e(record.run_id)}">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ced4da"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#868e96" stroke-width="3"/></pattern></defs>',
    ]
    # Rows, then the time axis (grid lines and labels at the top and the bottom).
    for i, row in enumerate(rows):
        critical_row = row.kind in ("task", "instance") and row.task.name in on_path
        band = " critical" if critical_row else " group" if row.kind == "group" else " odd" if i % 2 else ""
        out.append(f'<rect class="row{band}" x="0" y="{y(i)}" width="{width}" height="{ROW_H}"/>')
    step = _tick_step(span)
    decimals = max(0, -math.floor(math.log10(step)))
    bottom = y(len(rows))
    k = 0
    while k * step <= span * 1.0001:
        tx = x(t0 + k * step)
        label = f"{k * step:.{decimals}f} s"
        out.append(f'<line class="grid" x1="{tx:.1f}" y1="{_AXIS_H - 6}" x2="{tx:.1f}" y2="{bottom + 6}"/>')
        out.append(f'<text class="tick" x="{tx:.1f}" y="{_AXIS_H - 12}">{label}</text>')
        out.append(f'<text class="tick" x="{tx:.1f}" y="{bottom + 22}">{label}</text>')
        k += 1
    out.append(f'<text class="axis-title" x="8" y="{_AXIS_H - 12}">time since start</text>')
    # Critical path links: from the end of each task to the start of the next one.
    for up, down in itertools.pairwise(critical):
        a, b = record.tasks[up], record.tasks[down]
        if a.finished_at is None or (b.started_at is None and not b.attempts):
            continue
        if up not in row_of or down not in row_of:
            continue
        start_b = b.attempts[0].started_at if b.attempts else b.started_at
        assert start_b is not None
        y1, y2 = y(row_of[up]) + ROW_H / 2, y(row_of[down]) + ROW_H / 2
        out.append(
            f'<path class="critical-link" d="M{x(a.finished_at):.1f},{y1:.1f} '
            f"C{x(a.finished_at) + 12:.1f},{y1:.1f} {x(start_b) - 12:.1f},{y2:.1f} "
            f'{x(start_b):.1f},{y2:.1f}"/>'
        )
    for i, row in enumerate(rows):
        if row.kind in ("task", "instance"):
            parent = row.task.parent if row.kind == "instance" else None
            out.extend(task_row(row.task, y(i), x, record, row.task.name in on_path, label_w, parent))
        elif row.group is not None:
            out.extend(group_row(row, y(i), x, label_w))
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px;
       color: #212529; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #495057; margin: 0 0 12px; }
.status { font-weight: 600; padding: 1px 8px; border-radius: 10px; color: #fff; }
.status.ok { background: #2f9e44; } .status.failed { background: #e03131; }
.status.cancelled, .status.interrupted { background: #868e96; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; list-style: none; padding: 0; margin: 8px 0 12px; }
.legend li { display: flex; align-items: center; gap: 6px; }
.chart { overflow-x: auto; }
svg text { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; fill: #343a40; }
.row { fill: #fff; } .row.odd { fill: #f8f9fa; }
.grid { stroke: #e9ecef; } .tick { text-anchor: middle; fill: #868e96; }
.axis-title { fill: #868e96; font-size: 11px; }
.label { text-anchor: end; } .label.critical { font-weight: 700; fill: #5f3dc4; }
.label.t-skipped, .label.t-cancelled { fill: #868e96; font-style: italic; }
.label.t-failed { fill: #c92a2a; }
.span { stroke: #adb5bd; stroke-width: 2; }
.s-succeeded { fill: #2f9e44; } .s-failed { fill: #e03131; } .s-retrying { fill: #f08c00; }
.s-cancelled { fill: url(#hatch); stroke: #868e96; } .s-running { fill: #74c0fc; }
.row.critical { fill: #f3f0ff; }
.backoff { fill: #ffe8cc; stroke: #f08c00; stroke-dasharray: 3 2; }
.cache-hit { fill: #1c7ed6; }
.mark { stroke-width: 2.5; fill: none; } .m-skipped { stroke: #868e96; }
.m-cancelled { stroke: #495057; } .m-failed { stroke: #e03131; }
.critical-link { fill: none; stroke: #5f3dc4; stroke-width: 1.5; stroke-dasharray: 4 3; }
.row.group { fill: #edf2ff; } .group-label { font-weight: 700; }
.group-span { fill: #91a7ff; } .group-span.t-failed { fill: #ffa8a8; }
.group-span.t-skipped, .group-span.t-cancelled { fill: #ced4da; }
.label.instance { fill: #495057; font-size: 11px; }
.label.more, .more-note { fill: #868e96; font-style: italic; font-size: 11px; }
tr.instance td:first-child, td.instance { padding-left: 16px; } tr.group td { font-weight: 600; }
table { border-collapse: collapse; margin-top: 16px; font-size: 13px; }
th, td { text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid #e9ecef; vertical-align: top; }
td.num { text-align: right; }
"""

_LEGEND = (
    ('<rect class="s-succeeded" x="1" y="3" width="22" height="12" rx="2"/>', "attempt succeeded"),
    ('<rect class="s-retrying" x="1" y="3" width="22" height="12" rx="2"/>', "attempt failed, retried"),
    ('<rect class="backoff" x="1" y="6" width="22" height="6"/>', "backoff wait"),
    ('<line class="span" x1="1" y1="9" x2="23" y2="9"/>', "task from ready to done"),
    ('<rect class="s-failed" x="1" y="3" width="22" height="12" rx="2"/>', "attempt failed"),
    ('<rect class="s-cancelled" x="1" y="3" width="22" height="12"/>', "attempt cancelled"),
    ('<polygon class="cache-hit" points="12,2 19,9 12,16 5,9"/>', "cache hit"),
    ('<rect class="group-span" x="1" y="4" width="22" height="10" rx="3"/>', "mapped task's instances"),
    ('<path class="mark m-skipped" d="M7,4 L17,14 M17,4 L7,14"/>', "skipped"),
    (
        '<rect class="row critical" x="0" y="0" width="24" height="18"/>'
        '<path class="critical-link" d="M2,14 C12,14 12,4 22,4"/>',
        "critical path",
    ),
)


def _table_row(row: Row) -> str:
    t = row.task
    if row.kind == "more":
        hidden = row.hidden or {}
        return (
            f'<tr class="more"><td class="instance">… {sum(hidden.values())} more</td><td></td><td></td>'
            f"<td></td><td></td><td>{e(describe_counts(hidden))}</td></tr>"
        )
    name = f"{t.name}[*]" if row.kind == "group" else t.name
    if row.kind == "group" and row.group is not None:
        over = f"mapped over {', '.join(t.over)}: " if t.over else ""
        note = over + row.group.summary()
    else:
        note = f"{t.error_type}: {t.error}" if t.error_type else (t.reason or "")
    cls = f' class="{row.kind}"' if row.kind != "task" else ""
    return (
        f"<tr{cls}><td>{e(name)}</td><td>{t.state.value}</td><td>{t.cache or ''}</td>"
        f'<td class="num">{len(t.attempts)}</td>'
        f'<td class="num">{fmt_s(t.duration) if t.duration is not None else ""}</td>'
        f"<td>{e(note)}</td></tr>"
    )


def render_timeline(record: RunRecord) -> str:
    """The timeline of ``record`` as a complete, self-contained HTML document.

    Layout: a header (pipeline, run id, status, start in local time, duration, task
    counts, critical path), a legend, the Gantt chart (time axis in seconds since the run
    started) and a table of the tasks, a mapped task's instances grouped under it in both.
    See the module docstring for the marks.
    """
    critical = critical_path(record)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
    counts = ", ".join(f"{n} {state.value}" for state, n in record.counts.items()) or "no tasks"
    path_total = sum(record.tasks[n].duration or 0.0 for n in critical)
    path_text = (
        f"{' → '.join(critical)} ({fmt_s(path_total)})" if critical else "none (no task took any time)"
    )
    params = ", ".join(f"{k}={v!r}" for k, v in record.params.items()) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in record.versions.items())
    legend = "".join(
        f'<li><svg width="24" height="18" aria-hidden="true">{mark}</svg>{e(text)}</li>'
        for mark, text in _LEGEND
    )
    layout_rows = list(layout(record, wanted=critical, found=groups(record)))
    rows = [_table_row(row) for row in layout_rows]
    retried = sum(1 for t in record.tasks.values() for a in t.attempts if a.state is AttemptState.RETRYING)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>asyncflow run {e(record.run_id)} · {e(record.pipeline)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{e(record.pipeline)} <span class="status {record.status}">{record.status}</span></h1>
<p class="meta">run {e(record.run_id)} · started {started} · {fmt_s(record.duration)} · {e(counts)} ·
{retried} retried attempt{"" if retried == 1 else "s"}<br>
critical path: {e(path_text)}<br>
params: {e(params)} · {e(versions)}</p>
<ul class="legend">{legend}</ul>
<div class="chart">
{_svg(record, critical, layout_rows)}
</div>
<table>
<thead><tr><th>task</th><th>state</th><th>cache</th><th>attempts</th><th>duration</th><th>note</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</body>
</html>
"""

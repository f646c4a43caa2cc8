"""A run's timeline: one self-contained HTML page drawn from its :class:`RunRecord`.

The page is plain HTML with inline CSS and one inline SVG (no script, no font, nothing
fetched), so it opens offline and can be mailed around. The SVG is a Gantt chart on the
wall clock: one row per task (in definition order), one bar per attempt
(``<rect class="attempt s-<state>" data-task=... data-attempt=... data-state=...>``),
the backoff wait after a failed attempt drawn as a thin dashed bar up to the next
attempt, cache hits as diamonds, skipped tasks as crosses, and the critical path (the
chain of dependent tasks with the largest total duration) outlined. Every mark has a
``<title>`` child, which browsers show as a tooltip.

Why no charting library: the candidates on PyPI either need a JavaScript bundle (plotly's
~4.6 MB plotly.js and pandas for its Gantt helper; bokeh's BokehJS with numpy; altair's
Vega, fetched from a CDN by default), have no Gantt chart (pygal, whose tooltips load
JavaScript from the web), or are unmaintained (python-gantt, last released 2016). Drawing
libraries such as drawsvg only wrap the element strings written here. A Gantt chart of
rectangles is about 150 lines of SVG with the standard library.
"""

from __future__ import annotations

import graphlib
import html
import itertools
import math
import time
from collections.abc import Callable, Iterable

from ._events import TaskState
from ._records import AttemptState, RunRecord, TaskRecord

__all__ = ["critical_path", "render_timeline"]

_CHART_W = 960
"""Width of the time axis, in pixels."""
_ROW_H = 26
_BAR_H = 16
_AXIS_H = 34


def critical_path(record: RunRecord) -> list[str]:
    """The chain of dependent tasks with the largest total duration, upstream first.

    A task's weight is its ``duration`` in seconds (attempts and backoff waits; 0 for
    cached, skipped and never-started tasks). Ties go to the task defined first. Returns
    an empty list when no task took any time, or when the record's dependencies form a
    cycle (a hand-edited record).
    """
    tasks = record.tasks
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, task in tasks.items():
        sorter.add(name, *(u for u in task.upstream if u in tasks))
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError:
        return []
    best: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for name in order:
        task = tasks[name]
        ups = [u for u in task.upstream if u in tasks]
        top = max(ups, key=lambda u: best[u], default=None)  # max() keeps the first of ties
        best[name] = (task.duration or 0.0) + (best[top] if top is not None else 0.0)
        previous[name] = top
    end = max(tasks, key=lambda n: best.get(n, 0.0), default=None)
    if end is None or best[end] <= 0:
        return []
    path = []
    node: str | None = end
    while node is not None:
        path.append(node)
        node = previous[node]
    return path[::-1]


def _tick_step(span: float) -> float:
    raw = span / 8
    magnitude: float = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _fmt_s(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 0.1:
        return f"{seconds:.3f} s"
    return f"{seconds * 1000:.1f} ms"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _title(lines: Iterable[str | None]) -> str:
    return "<title>" + _e("\n".join(line for line in lines if line)) + "</title>"


def _svg(record: RunRecord, critical: list[str]) -> str:
    tasks = list(record.tasks.values())
    t0 = record.started_at
    ends = [record.finished_at] + [
        a.finished_at + (a.backoff or 0) for t in tasks for a in t.attempts if a.finished_at is not None
    ]
    span = max(max(ends) - t0, 1e-3)
    label_w = min(320, max(150, 8 * max((len(t.name) for t in tasks), default=4) + 24))
    width = label_w + _CHART_W + 30
    height = 2 * _AXIS_H + _ROW_H * len(tasks)
    on_path = set(critical)
    row_of = {t.name: i for i, t in enumerate(tasks)}

    def x(t: float) -> float:
        return label_w + (t - t0) / span * _CHART_W

    def y(row: int) -> float:
        return _AXIS_H + row * _ROW_H

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of run {_e(record.run_id)}">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ced4da"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#868e96" stroke-width="3"/></pattern></defs>',
    ]
    # Rows, then the time axis (grid lines and labels at the top and the bottom).
    for i, task in enumerate(tasks):
        band = " critical" if task.name in on_path else " odd" if i % 2 else ""
        out.append(f'<rect class="row{band}" x="0" y="{y(i)}" width="{width}" height="{_ROW_H}"/>')
    step = _tick_step(span)
    decimals = max(0, -math.floor(math.log10(step)))
    bottom = y(len(tasks))
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
        start_b = b.attempts[0].started_at if b.attempts else b.started_at
        assert start_b is not None
        y1, y2 = y(row_of[up]) + _ROW_H / 2, y(row_of[down]) + _ROW_H / 2
        out.append(
            f'<path class="critical-link" d="M{x(a.finished_at):.1f},{y1:.1f} '
            f"C{x(a.finished_at) + 12:.1f},{y1:.1f} {x(start_b) - 12:.1f},{y2:.1f} "
            f'{x(start_b):.1f},{y2:.1f}"/>'
        )
    for i, task in enumerate(tasks):
        out.extend(_row(task, y(i), x, record, task.name in on_path, label_w))
    out.append("</svg>")
    return "\n".join(out)


def _row(
    task: TaskRecord,
    top: float,
    x: Callable[[float], float],
    record: RunRecord,
    critical: bool,
    label_w: int,
) -> list[str]:
    t0 = record.started_at
    mid = top + _ROW_H / 2
    bar_y = top + (_ROW_H - _BAR_H) / 2
    name = task.name if len(task.name) <= 38 else task.name[:37] + "…"
    duration = f"{_fmt_s(task.duration)}" if task.duration is not None else None
    summary = [
        f"{task.name}: {task.state.value}" + (f" in {duration}" if duration else ""),
        f"upstream: {', '.join(task.upstream)}" if task.upstream else "no upstream tasks",
        f"cache: {task.cache} (key {task.cache_key[:12]}…)" if task.cache and task.cache_key else None,
        task.reason,
        f"{task.error_type}: {task.error}" if task.error_type else None,
        "on the critical path" if critical else None,
    ]
    classes = f"label t-{task.state.value}{' critical' if critical else ''}"
    out = [
        f'<text class="{classes}" x="{label_w - 10}" y="{mid + 4:.1f}" data-task="{_e(task.name)}">'
        f"{_title(summary)}{_e(name)}</text>"
    ]
    if task.started_at is not None and task.finished_at is not None and task.finished_at > task.started_at:
        out.append(
            f'<line class="span" x1="{x(task.started_at):.1f}" y1="{mid:.1f}" '
            f'x2="{x(task.finished_at):.1f}" y2="{mid:.1f}">{_title(summary)}</line>'
        )
    end_of_run = record.finished_at
    for n, attempt in enumerate(task.attempts):
        nxt = task.attempts[n + 1] if n + 1 < len(task.attempts) else None
        end = attempt.finished_at if attempt.finished_at is not None else end_of_run
        if attempt.backoff is not None and attempt.finished_at is not None:
            wait_end = nxt.started_at if nxt is not None else min(end + attempt.backoff, end_of_run)
            waited = f" (waited {_fmt_s(wait_end - end)})" if nxt is not None else " (cut short)"
            out.append(
                f'<rect class="backoff" data-task="{_e(task.name)}" data-attempt="{attempt.attempt}" '
                f'x="{x(end):.1f}" y="{mid - 3:.1f}" width="{max(1.0, x(wait_end) - x(end)):.1f}" height="6">'
                f"{_title([f'{task.name}: backoff {_fmt_s(attempt.backoff)}{waited}'])}</rect>"
            )
        lines = [
            f"{task.name}: attempt {attempt.attempt} {attempt.state.value}",
            f"{_fmt_s(end - attempt.started_at)}, from +{attempt.started_at - t0:.3f} s to +{end - t0:.3f} s",
            f"{attempt.error_type}: {attempt.error}" if attempt.error_type else None,
            f"next attempt after a backoff of {_fmt_s(attempt.backoff)}"
            if attempt.backoff is not None
            else None,
        ]
        state = attempt.state.value
        width = max(3.0, x(end) - x(attempt.started_at))
        out.append(
            f'<rect class="attempt s-{state}{" critical" if critical else ""}" data-task="{_e(task.name)}" '
            f'data-attempt="{attempt.attempt}" data-state="{state}" x="{x(attempt.started_at):.1f}" '
            f'y="{bar_y:.1f}" width="{width:.1f}" height="{_BAR_H}" rx="2">{_title(lines)}</rect>'
        )
    at = task.finished_at
    if at is not None and task.state is TaskState.CACHED:
        cx = x(at)
        out.append(
            f'<polygon class="cache-hit" data-task="{_e(task.name)}" points="{cx:.1f},{mid - 7:.1f} '
            f'{cx + 7:.1f},{mid:.1f} {cx:.1f},{mid + 7:.1f} {cx - 7:.1f},{mid:.1f}">'
            f"{_title(summary)}</polygon>"
        )
    elif (
        at is not None
        and not task.attempts
        and task.state
        in (
            TaskState.SKIPPED,
            TaskState.CANCELLED,
            TaskState.FAILED,
        )
    ):
        cx = x(at)
        out.append(
            f'<path class="mark m-{task.state.value}" data-task="{_e(task.name)}" '
            f'd="M{cx - 5:.1f},{mid - 5:.1f} L{cx + 5:.1f},{mid + 5:.1f} M{cx + 5:.1f},{mid - 5:.1f} '
            f'L{cx - 5:.1f},{mid + 5:.1f}">{_title(summary)}</path>'
        )
    return out


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
    ('<path class="mark m-skipped" d="M7,4 L17,14 M17,4 L7,14"/>', "skipped"),
    (
        '<rect class="row critical" x="0" y="0" width="24" height="18"/>'
        '<path class="critical-link" d="M2,14 C12,14 12,4 22,4"/>',
        "critical path",
    ),
)


def render_timeline(record: RunRecord) -> str:
    """The timeline of ``record`` as a complete, self-contained HTML document.

    Layout: a header (pipeline, run id, status, start in local time, duration, task
    counts, critical path), a legend, the Gantt chart (time axis in seconds since the run
    started) and a table of the tasks. See the module docstring for the marks.
    """
    critical = critical_path(record)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
    counts = ", ".join(f"{n} {state.value}" for state, n in record.counts.items()) or "no tasks"
    path_total = sum(record.tasks[n].duration or 0.0 for n in critical)
    path_text = (
        f"{' → '.join(critical)} ({_fmt_s(path_total)})" if critical else "none (no task took any time)"
    )
    params = ", ".join(f"{k}={v!r}" for k, v in record.params.items()) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in record.versions.items())
    legend = "".join(
        f'<li><svg width="24" height="18" aria-hidden="true">{mark}</svg>{_e(text)}</li>'
        for mark, text in _LEGEND
    )
    rows = []
    for t in record.tasks.values():
        note = f"{t.error_type}: {t.error}" if t.error_type else (t.reason or "")
        rows.append(
            f"<tr><td>{_e(t.name)}</td><td>{t.state.value}</td><td>{t.cache or ''}</td>"
            f'<td class="num">{len(t.attempts)}</td>'
            f'<td class="num">{_fmt_s(t.duration) if t.duration is not None else ""}</td>'
            f"<td>{_e(note)}</td></tr>"
        )
    retried = sum(1 for t in record.tasks.values() for a in t.attempts if a.state is AttemptState.RETRYING)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>asyncflow run {_e(record.run_id)} · {_e(record.pipeline)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(record.pipeline)} <span class="status {record.status}">{record.status}</span></h1>
<p class="meta">run {_e(record.run_id)} · started {started} · {_fmt_s(record.duration)} · {_e(counts)} ·
{retried} retried attempt{"" if retried == 1 else "s"}<br>
critical path: {_e(path_text)}<br>
params: {_e(params)} · {_e(versions)}</p>
<ul class="legend">{legend}</ul>
<div class="chart">
{_svg(record, critical)}
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

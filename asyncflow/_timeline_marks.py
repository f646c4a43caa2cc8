"""The marks of one row of the HTML timeline (:mod:`asyncflow._timeline`), as SVG elements.

A task's row (:func:`task_row`): its label, its span from ready to done, one bar per
attempt, the backoff waits, a diamond for a cache hit, a cross for a skipped or
cancelled task. A mapped task's rows (:func:`group_row`): the summary row of its group,
and the row counting the instances a collapsed group does not draw. Every mark carries
``data-`` attributes naming its task and a ``<title>`` tooltip.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable

from ._events import TaskState
from ._record_groups import InstanceGroup, Row, describe_counts
from ._records import RunRecord, TaskRecord

__all__ = ["ROW_H", "e", "fmt_s", "group_row", "task_row"]

ROW_H = 26
"""Height of one row, in pixels."""
_BAR_H = 16


def fmt_s(seconds: float) -> str:
    """``12.3 s``, ``0.420 s`` or ``4.2 ms``: seconds for a reader."""
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 0.1:
        return f"{seconds:.3f} s"
    return f"{seconds * 1000:.1f} ms"


def e(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def _title(lines: Iterable[str | None]) -> str:
    return "<title>" + e("\n".join(line for line in lines if line)) + "</title>"


def group_row(row: Row, top: float, x: Callable[[float], float], label_w: int) -> list[str]:
    """The SVG elements of a group's summary row (``row.kind == "group"``) or of its count
    of the instances not drawn (``"more"``), for the row whose top is at ``top`` pixels;
    ``x`` maps seconds since the Unix epoch to pixels, ``label_w`` is the labels' width."""
    group = row.group
    assert group is not None
    name = e(group.name)
    mid = top + ROW_H / 2
    if row.kind == "more":
        hidden = row.hidden or {}
        n = sum(hidden.values())
        return [
            f'<text class="label more" x="{label_w - 10}" y="{mid + 4:.1f}" data-group="{name}" '
            f'data-hidden="{n}">… {n} more</text>',
            f'<text class="more-note" x="{label_w + 8}" y="{mid + 4:.1f}" data-group="{name}">'
            f"{n} more instance{'' if n == 1 else 's'} of {name} not drawn: "
            f"{e(describe_counts(hidden))}</text>",
        ]
    task = group.task
    shown = sum(1 for _ in group.shown(()))
    lines = _group_title(group)
    out = [
        f'<text class="label group-label t-{task.state.value}" x="{label_w - 10}" y="{mid + 4:.1f}" '
        f'data-group="{name}" data-task="{name}" data-instances="{len(group.instances)}" '
        f'data-shown="{shown}" data-collapsed="{str(group.collapsed).lower()}">'
        f"{_title(lines)}{e(_short(group.name + '[*]'))}</text>"
    ]
    if group.started_at is not None and group.finished_at is not None:
        start, end = group.started_at, group.finished_at
        out.append(
            f'<rect class="group-span t-{task.state.value}" data-task="{name}" '
            f'data-instances="{len(group.instances)}" x="{x(start):.1f}" y="{mid - 5:.1f}" '
            f'width="{max(3.0, x(end) - x(start)):.1f}" height="10" rx="3">{_title(lines)}</rect>'
        )
    return out


def _group_title(group: InstanceGroup) -> list[str]:
    task = group.task
    lines = [
        f"{group.name}[*]: {task.state.value}, {group.summary()}",
        f"mapped over {', '.join(task.over)}" if task.over else None,
    ]
    if group.started_at is not None and group.finished_at is not None:
        lines.append(f"instances ran for {fmt_s(group.finished_at - group.started_at)}")
    if group.slowest:
        slowest = ", ".join(f"{t.name} {fmt_s(t.duration or 0.0)}" for t in group.slowest)
        lines.append(f"slowest: {slowest}")
    if group.failed:
        failed = ", ".join(t.name for t in group.failed[:10])
        more = f" and {len(group.failed) - 10} more" if len(group.failed) > 10 else ""
        lines.append(f"failed: {failed}{more}")
    return [line for line in lines if line]


def _short(name: str) -> str:
    return name if len(name) <= 38 else name[:37] + "…"


def task_row(
    task: TaskRecord,
    top: float,
    x: Callable[[float], float],
    record: RunRecord,
    critical: bool,
    label_w: int,
    parent: str | None = None,
) -> list[str]:
    """The SVG elements of ``task``'s row, whose top is at ``top`` pixels.

    Args:
        task: the task (or instance) to draw.
        top: the row's top, in pixels.
        x: maps seconds since the Unix epoch to pixels.
        record: the run (for its start and end).
        critical: the task is on the critical path (its marks are outlined).
        label_w: the width of the label column, in pixels.
        parent: for an instance, its mapped task's name (``data-parent`` on its marks).
    """
    t0 = record.started_at
    tag = f'data-task="{e(task.name)}"' + (f' data-parent="{e(parent)}"' if parent else "")
    mid = top + ROW_H / 2
    bar_y = top + (ROW_H - _BAR_H) / 2
    name = _short(task.name)
    duration = f"{fmt_s(task.duration)}" if task.duration is not None else None
    summary = [
        f"{task.name}: {task.state.value}" + (f" in {duration}" if duration else ""),
        f"instance {task.index} of mapped task {parent}" if parent else None,
        f"upstream: {', '.join(task.upstream)}" if task.upstream else "no upstream tasks",
        f"cache: {task.cache} (key {task.cache_key[:12]}…)" if task.cache and task.cache_key else None,
        task.reason,
        f"{task.error_type}: {task.error}" if task.error_type else None,
        "on the critical path" if critical else None,
    ]
    classes = f"label t-{task.state.value}{' critical' if critical else ''}{' instance' if parent else ''}"
    out = [
        f'<text class="{classes}" x="{label_w - 10}" y="{mid + 4:.1f}" {tag}>'
        f"{_title(summary)}{e(name)}</text>"
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
            waited = f" (waited {fmt_s(wait_end - end)})" if nxt is not None else " (cut short)"
            out.append(
                f'<rect class="backoff" {tag} data-attempt="{attempt.attempt}" '
                f'x="{x(end):.1f}" y="{mid - 3:.1f}" width="{max(1.0, x(wait_end) - x(end)):.1f}" height="6">'
                f"{_title([f'{task.name}: backoff {fmt_s(attempt.backoff)}{waited}'])}</rect>"
            )
        lines = [
            f"{task.name}: attempt {attempt.attempt} {attempt.state.value}",
            f"{fmt_s(end - attempt.started_at)}, from +{attempt.started_at - t0:.3f} s to +{end - t0:.3f} s",
            f"{attempt.error_type}: {attempt.error}" if attempt.error_type else None,
            f"next attempt after a backoff of {fmt_s(attempt.backoff)}"
            if attempt.backoff is not None
            else None,
        ]
        state = attempt.state.value
        width = max(3.0, x(end) - x(attempt.started_at))
        out.append(
            f'<rect class="attempt s-{state}{" critical" if critical else ""}" {tag} '
            f'data-attempt="{attempt.attempt}" data-state="{state}" x="{x(attempt.started_at):.1f}" '
            f'y="{bar_y:.1f}" width="{width:.1f}" height="{_BAR_H}" rx="2">{_title(lines)}</rect>'
        )
    at = task.finished_at
    if at is not None and task.state is TaskState.CACHED:
        cx = x(at)
        out.append(
            f'<polygon class="cache-hit" {tag} points="{cx:.1f},{mid - 7:.1f} '
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
            f'<path class="mark m-{task.state.value}" {tag} '
            f'd="M{cx - 5:.1f},{mid - 5:.1f} L{cx + 5:.1f},{mid + 5:.1f} M{cx + 5:.1f},{mid - 5:.1f} '
            f'L{cx - 5:.1f},{mid + 5:.1f}">{_title(summary)}</path>'
        )
    return out

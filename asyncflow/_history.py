"""The command line's views of past runs: ``--runs``, ``--show-run`` and ``--timeline``.

They read the run records that every command-line run writes
(``<workdir>/runs/<run id>/record.json``, see :mod:`asyncflow._records`) and need no
pipeline module. A run is named by its id, by a unique prefix of it, or by ``latest``
(the run that started last).

``--show-run`` shows a mapped task as one group (``fetch[*]``, its counts per state),
followed by its instances, or, past :data:`~asyncflow._record_groups.COLLAPSE_AFTER`
instances, by its failed and slowest ones and a count of the others (see
:mod:`asyncflow._record_groups`). ``--task NAME`` narrows it to one task with its
attempts: an instance (``fetch[3]``), or a mapped task with every one of its instances.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio

from ._chrome_trace import chrome_trace
from ._files import dumps_json, write_text_atomic
from ._record_files import list_records, read_record
from ._record_groups import InstanceGroup, Row, describe_counts, groups, layout
from ._records import RECORD_FILE, RunRecord, TaskRecord
from ._timeline import render_timeline

__all__ = ["RUNS_SHOWN", "TIMELINE_FORMATS", "add_arguments", "format_run", "format_runs", "main", "wanted"]

RUNS_SHOWN = 20
"""How many runs ``--runs`` lists (the newest)."""
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TIMELINE_FORMATS = ("html", "chrome-trace")
"""The formats of ``--timeline --format``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--runs``, ``--show-run``, ``--task``, ``--timeline``, ``--output`` and
    ``--format`` to ``parser``."""
    group = parser.add_argument_group("past runs (these need no MODULE)")
    views = group.add_mutually_exclusive_group()
    views.add_argument(
        "--runs",
        action="store_true",
        help=f"list the {RUNS_SHOWN} newest recorded runs in --workdir, newest first: run id, "
        "pipeline, status, start (local time), duration in seconds, task counts",
    )
    views.add_argument(
        "--show-run",
        metavar="RUN_ID",
        help="print one recorded run's tasks and attempts (times in seconds since the run "
        "started). RUN_ID is a run id, a unique prefix of one, or 'latest'",
    )
    views.add_argument(
        "--timeline",
        metavar="RUN_ID",
        help="write one recorded run's timeline (a self-contained HTML page with a Gantt "
        "chart of every attempt) and print its path. RUN_ID as for --show-run",
    )
    group.add_argument(
        "--task",
        metavar="NAME",
        help="with --show-run: only this task and its attempts; an instance of a mapped task "
        "(fetch[3]), or a mapped task (fetch or fetch[*]) with every one of its instances",
    )
    group.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="with --timeline: the file to write (default: <workdir>/runs/<run id>/timeline.html, "
        "or timeline.trace.json with --format chrome-trace)",
    )
    group.add_argument(
        "--format",
        choices=TIMELINE_FORMATS,
        help="with --timeline: html (default; the Gantt page) or chrome-trace (Chrome "
        "trace-event JSON, ts in microseconds, for https://ui.perfetto.dev or chrome://tracing; "
        "for runs too large for the HTML page)",
    )


def wanted(args: argparse.Namespace) -> bool:
    """True when the command line asks for one of these views (or for ``--output``)."""
    return bool(
        args.runs
        or args.show_run is not None
        or args.timeline is not None
        or args.output
        or args.format is not None
        or args.task is not None
    )


class _Error(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def main(args: argparse.Namespace) -> int:
    """Carry out ``--runs``, ``--show-run`` or ``--timeline``; returns the exit code.

    Errors are printed as one line ``asyncflow: error: ...`` on stderr: exit code 2 for
    a usage error (a MODULE given, ``--output`` without ``--timeline``, ``--task``
    without ``--show-run``, an unknown or ambiguous run id, a task the run does not
    have), 1 for a record that cannot be read or a file that cannot be written.
    """
    try:
        if args.module is not None:
            option = "--runs" if args.runs else "--show-run" if args.show_run is not None else "--timeline"
            if args.timeline is None and not args.runs and args.show_run is None:
                if args.task is not None:
                    raise _Error("--task goes with --show-run RUN_ID")
                raise _Error(f"{'--output' if args.output else '--format'} goes with --timeline RUN_ID")
            raise _Error(f"{option} reads recorded runs and takes no MODULE (got {args.module!r})")
        if args.task is not None and args.show_run is None:
            raise _Error("--task goes with --show-run RUN_ID")
        if args.output and args.timeline is None:
            raise _Error("--output goes with --timeline RUN_ID")
        if args.format is not None and args.timeline is None:
            raise _Error("--format goes with --timeline RUN_ID")
        workdir: Path = args.workdir
        if args.runs:
            records = anyio.run(list_records, workdir)
            print(format_runs(records, workdir))
            return EXIT_OK
        record = _load(workdir, args.show_run if args.show_run is not None else args.timeline)
        if args.show_run is not None:
            if args.task is not None and _task_named(record, args.task) is None:
                raise _Error(f"run {record.run_id} has no task {args.task!r} ({_some_tasks(record)})")
            print(format_run(record, args.task))
            return EXIT_OK
        chrome = args.format == "chrome-trace"
        default_name = "timeline.trace.json" if chrome else "timeline.html"
        output = args.output or workdir / "runs" / record.run_id / default_name
        text = dumps_json(chrome_trace(record)) + "\n" if chrome else render_timeline(record)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            anyio.run(write_text_atomic, output, text)
        except OSError as exc:
            raise _Error(
                f"cannot write the timeline to {str(output)!r}: {exc.strerror or exc}", EXIT_FAILED
            ) from None
        print(output)
        return EXIT_OK
    except _Error as exc:
        print(f"asyncflow: error: {exc}", file=sys.stderr)
        return exc.code


def _load(workdir: Path, ref: str) -> RunRecord:
    runs = workdir / "runs"
    if ref == "latest":
        records = anyio.run(list_records, workdir)
        if not records:
            raise _Error(f"no recorded runs in {str(runs)!r} (run a pipeline first, or pass --workdir)")
        return records[0]
    found = sorted(p.parent.name for p in runs.glob(f"*/{RECORD_FILE}") if p.parent.name.startswith(ref))
    if ref in found:
        found = [ref]
    if not found:
        raise _Error(f"no recorded run {ref!r} in {str(runs)!r} (python -m asyncflow --runs lists them)")
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise _Error(f"run id prefix {ref!r} is ambiguous: {shown}")
    path = runs / found[0] / RECORD_FILE
    try:
        return anyio.run(read_record, path)
    except (OSError, ValueError) as exc:
        raise _Error(f"cannot read the run record {str(path)!r}: {exc}", EXIT_FAILED) from None


# -- text -----------------------------------------------------------------------------------


def _local(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def _counts(record: RunRecord) -> str:
    return ", ".join(f"{n} {state.value}" for state, n in record.counts.items()) or "no tasks"


def _table(rows: list[tuple[str, ...]], right: frozenset[int] = frozenset()) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[c].rjust(widths[c]) if c in right else row[c].ljust(widths[c]) for c in range(len(row))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_runs(records: list[RunRecord], workdir: Path) -> str:
    """The ``--runs`` table: the :data:`RUNS_SHOWN` newest of ``records`` (given newest first)."""
    if not records:
        return f"no recorded runs in {str(workdir / 'runs')!r}"
    rows: list[tuple[str, ...]] = [("run id", "pipeline", "status", "started", "duration", "tasks")]
    for r in records[:RUNS_SHOWN]:
        rows.append((r.run_id, r.pipeline, r.status, _local(r.started_at), f"{r.duration:.2f} s", _counts(r)))
    lines = _table(rows, right=frozenset({4}))
    if len(records) > RUNS_SHOWN:
        lines.append(f"... and {len(records) - RUNS_SHOWN} older runs in {str(workdir / 'runs')!r}")
    return "\n".join(lines)


def _task_named(record: RunRecord, name: str) -> TaskRecord | None:
    """The task ``name`` of ``record``; ``fetch[*]`` names mapped task ``fetch``."""
    task = record.tasks.get(name)
    if task is None and name.endswith("[*]"):
        task = record.tasks.get(name[:-3])
        return task if task is not None and task.is_mapped else None
    return task


def _some_tasks(record: RunRecord) -> str:
    names = [n for n, t in record.tasks.items() if t.parent is None]
    if not names:
        return "it has no tasks"
    return "its tasks: " + ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")


def format_run(record: RunRecord, task: str | None = None) -> str:
    """The ``--show-run`` text: a header, then one row per task and one per attempt.

    Attempt rows give the start as seconds since the run started (``+0.120 s``), the
    duration, the state, the error and the backoff wait that followed. An expanded mapped
    task is one group row (``fetch[*]``, its instances' counts) followed by its instances,
    indented, each with its attempts; a collapsed group (see
    :mod:`asyncflow._record_groups`) shows its failed and slowest instances and one row
    counting the others.

    Args:
        record: the run record.
        task: show only this task (see ``--task``): a task, an instance, or a mapped task
            (``fetch`` or ``fetch[*]``) with all its instances. ``None``: every task.

    Raises:
        KeyError: ``record`` has no task ``task``.
    """
    t0 = record.started_at
    params = ", ".join(f"{k}={v!r}" for k, v in record.params.items()) or "none"
    lines = [
        f"run {record.run_id}: pipeline {record.pipeline!r}, {record.status}",
        f"started {_local(t0)}, took {record.duration:.3f} s: {_counts(record)}",
        f"params: {params}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in record.versions.items()),
        "",
    ]
    if task is None:
        selected = list(layout(record))
    else:
        chosen = _task_named(record, task)
        if chosen is None:
            raise KeyError(task)
        if chosen.is_mapped:
            group = groups(record)[chosen.name]
            selected = [Row(chosen, "group", group)] + [Row(t, "instance", group) for t in group.instances]
        else:
            selected = [Row(chosen, "task")]
    rows: list[tuple[str, ...]] = [("task / attempt", "state", "cache", "start", "duration", "note")]
    for row in selected:
        rows.extend(_rows(row, t0))
    lines.extend(_table(rows, right=frozenset({3, 4})))
    return "\n".join(lines)


def _rows(row: Row, t0: float) -> list[tuple[str, ...]]:
    task, group = row.task, row.group
    if row.kind == "more":
        assert group is not None and row.hidden is not None
        hidden = sum(row.hidden.values())
        note = f"{describe_counts(row.hidden)} (--task {task.name} lists them all)"
        return [(f"  ... {hidden} more", "", "", "", "", note)]
    indent = "  " if row.kind == "instance" else ""
    name = f"{task.name}[*]" if row.kind == "group" else task.name
    if group is not None and row.kind == "group":
        note = _group_note(group)
    else:
        note = f"{task.error_type}: {task.error}" if task.error_type else task.reason or ""
    start = None if task.started_at is None else task.started_at - t0
    out: list[tuple[str, ...]] = [
        (
            indent + name,
            task.state.value,
            task.cache or "-",
            "-" if start is None else f"+{start:.3f} s",
            _sec(task.duration),
            _one_line(note),
        )
    ]
    for a in task.attempts:
        note = f"{a.error_type}: {a.error}" if a.error_type else ""
        if a.backoff is not None:
            note = f"{note}; backoff {a.backoff:.3f} s" if note else f"backoff {a.backoff:.3f} s"
        out.append(
            (
                f"{indent}  #{a.attempt}",
                a.state.value,
                "",
                f"+{a.started_at - t0:.3f} s",
                _sec(a.duration),
                _one_line(note),
            )
        )
    return out


def _group_note(group: InstanceGroup) -> str:
    over = ", ".join(group.task.over)
    note = f"mapped over {over}: {group.summary()}" if over else group.summary()
    if group.collapsed and group.slowest:
        slowest = group.slowest[0]
        note += f"; slowest {slowest.name} {_sec(slowest.duration)}"
    return note


def _sec(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


def _one_line(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"

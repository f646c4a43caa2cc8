"""A run record's mapped tasks as groups of instances, for the views that show a record.

``--show-run`` (:mod:`asyncflow._history`) and the HTML timeline (:mod:`asyncflow._timeline`)
show an expanded mapped task (see :func:`~asyncflow.each`) as one group: a summary row
(counts per state, the span from its first instance's start to its last one's end), under
it its instances. A group of more than :data:`COLLAPSE_AFTER` instances is collapsed: only
its failed instances, its :data:`SLOWEST_SHOWN` slowest and those a view asks for (on the
critical path, say) are shown; the others are counted. :func:`layout` gives the rows in
order: the graph's tasks in definition order, each mapped task followed by its shown
instances.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from ._events import TaskState, describe_counts
from ._records import RunRecord, TaskRecord

__all__ = ["COLLAPSE_AFTER", "SLOWEST_SHOWN", "InstanceGroup", "Row", "describe_counts", "groups", "layout"]

COLLAPSE_AFTER = 20
"""The most instances a group shows one by one. A view stays readable at a glance with
about this many rows per mapped task (a screen of the timeline holds ~30 rows), while a
mapped task of hundreds or thousands of instances would bury every other task and make the
page heavy; past it a group shows its failed and slowest instances, the rest counted."""

SLOWEST_SHOWN = 5
"""How many of a collapsed group's slowest instances are shown (besides the failed ones):
where the time went, without drawing them all."""


@dataclass(frozen=True, slots=True)
class InstanceGroup:
    """One expanded mapped task and its instances.

    Attributes:
        task: the mapped task's record.
        instances: its instances' records, in item order (those in the record).
        counts: how many instances ended in each state.
        started_at, finished_at: the first instance's start and the last one's end, in
            seconds since the Unix epoch; ``None`` when no instance started (ended).
        failed: the FAILED instances, in item order.
        slowest: the :data:`SLOWEST_SHOWN` instances that took longest (by ``duration``,
            in seconds), slowest first.
    """

    task: TaskRecord
    instances: list[TaskRecord]
    counts: dict[TaskState, int] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    failed: list[TaskRecord] = field(default_factory=list)
    slowest: list[TaskRecord] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The mapped task's name."""
        return self.task.name

    @property
    def collapsed(self) -> bool:
        """True when it has more than :data:`COLLAPSE_AFTER` instances."""
        return len(self.instances) > COLLAPSE_AFTER

    def shown(self, wanted: Collection[str] = ()) -> list[TaskRecord]:
        """The instances to show one by one, in item order: all of them, or when
        :attr:`collapsed` the failed, the slowest and those named in ``wanted``."""
        if not self.collapsed:
            return list(self.instances)
        keep = {t.name for t in self.failed} | {t.name for t in self.slowest} | set(wanted)
        return [t for t in self.instances if t.name in keep]

    def summary(self) -> str:
        """``"200 instances: 197 succeeded, 3 failed"``."""
        n = len(self.instances)
        return f"{n} instance{'' if n == 1 else 's'}: {describe_counts(self.counts)}"


def _group(record: RunRecord, task: TaskRecord) -> InstanceGroup:
    instances = record.instances(task.name)
    counts: dict[TaskState, int] = {}
    for t in instances:
        counts[t.state] = counts.get(t.state, 0) + 1
    starts = [t.started_at for t in instances if t.started_at is not None]
    ends = [t.finished_at for t in instances if t.finished_at is not None]
    timed = [t for t in instances if t.duration is not None and t.attempts]
    timed.sort(key=lambda t: -(t.duration or 0.0))  # a stable sort: ties keep item order
    return InstanceGroup(
        task=task,
        instances=instances,
        counts=counts,
        started_at=min(starts, default=None),
        finished_at=max(ends, default=None),
        failed=[t for t in instances if t.state is TaskState.FAILED],
        slowest=timed[:SLOWEST_SHOWN],
    )


def groups(record: RunRecord) -> dict[str, InstanceGroup]:
    """``{mapped task: its group}`` for every expanded mapped task of ``record``, in
    definition order (empty for a record without mapped tasks)."""
    return {name: _group(record, t) for name, t in record.tasks.items() if t.instances is not None}


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a view of a record.

    Attributes:
        task: the task's record (for a ``"more"`` row, the mapped task's).
        kind: ``"task"`` (a task of the graph), ``"group"`` (an expanded mapped task),
            ``"instance"`` (one of its instances) or ``"more"`` (the instances a collapsed
            group does not show, counted: :attr:`hidden`).
        group: the group of a ``"group"``, ``"instance"`` or ``"more"`` row, else ``None``.
        hidden: for a ``"more"`` row, how many instances in each state are not shown.
    """

    task: TaskRecord
    kind: str
    group: InstanceGroup | None = None
    hidden: dict[TaskState, int] | None = None


def layout(
    record: RunRecord, wanted: Collection[str] = (), found: dict[str, InstanceGroup] | None = None
) -> Iterator[Row]:
    """The rows of ``record``, in order: each task of the graph in definition order, an
    expanded mapped task followed by its shown instances (see :meth:`InstanceGroup.shown`,
    ``wanted`` names instances to show in any case) and, for a collapsed group, one
    ``"more"`` row. Instances whose mapped task is missing (a hand-edited record) come last.

    Args:
        record: the run record.
        wanted: names of instances to show even in a collapsed group.
        found: the result of :func:`groups` when the caller already has it.
    """
    found = groups(record) if found is None else found
    placed: set[str] = set()
    for name, task in record.tasks.items():
        if task.parent is not None:
            continue
        group = found.get(name)
        if group is None:
            yield Row(task, "task")
            continue
        yield Row(task, "group", group)
        shown = group.shown(wanted)
        for instance in shown:
            yield Row(instance, "instance", group)
        placed.update(t.name for t in group.instances)
        if len(shown) < len(group.instances):
            hidden: dict[TaskState, int] = dict(group.counts)
            for t in shown:
                hidden[t.state] -= 1
            yield Row(task, "more", group, {s: n for s, n in hidden.items() if n})
    for name, task in record.tasks.items():
        if task.parent is not None and name not in placed:
            yield Row(task, "task")

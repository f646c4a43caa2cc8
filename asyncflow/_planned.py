"""What a plan says: the action planned for each task and why (see :mod:`asyncflow._plan`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["MAYBE", "PLANNED", "Action", "Plan", "PlannedTask"]


class Action(enum.Enum):
    """What a run would do with one task."""

    RUN = "run"
    """Run it (no usable checkpoint, forced, or not checkpointed)."""
    CACHED = "cached"
    """Load its result from its checkpoint."""
    FAIL = "fail"
    """Fail before running: its ``cache_key_fn`` raises."""
    SKIP = "skip"
    """Skip it: an upstream task would fail."""
    MISSING = "missing"
    """A partial run needs its checkpoint and there is none: the run would not start."""


PLANNED = {
    Action.RUN: "would run",
    Action.CACHED: "cached",
    Action.FAIL: "would fail",
    Action.SKIP: "would be skipped",
    Action.MISSING: "missing a checkpoint",
}
"""How a count of planned tasks (or instances) is told, by action."""

MAYBE = "cached if its result is unchanged"
"""How a planned task's reason ends when it runs only if an upstream result changes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedTask:
    """The plan for one task.

    Attributes:
        name: the task's name.
        action: what the run would do.
        reason: why, in words (``no checkpoint``, ``its code changed``, ...).
        selected: False for a task that a partial run loads only because a selected
            task needs it.
        cache_key: the key the run would use (hex SHA-256), or ``None`` when unknown.
        stored_key: the key of its checkpoint, or ``None`` when it has none.
        over: for a mapped task, the names of the tasks it is mapped over; else ``()``.
        instances: for a mapped task whose items are known without running, the plan
            of each instance (``fetch[0]``, ...) in item order; else ``None``. A mapped
            task's ``action`` sums theirs up: FAIL if one would fail (or the mapping
            itself would: not a list, unequal lengths), else SKIP if one would be
            skipped, else RUN if one would run, else CACHED (also for no items).
    """

    name: str
    action: Action
    reason: str
    selected: bool = True
    cache_key: str | None = None
    stored_key: str | None = None
    over: tuple[str, ...] = ()
    instances: tuple[PlannedTask, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What a run of ``pipeline`` would do.

    Attributes:
        pipeline: the pipeline's name.
        tasks: one :class:`PlannedTask` per task of the run, in definition order (a
            partial run leaves out the tasks it does not need).
    """

    pipeline: str
    tasks: tuple[PlannedTask, ...]

    def by_action(self, action: Action) -> list[str]:
        """The names of the tasks planned for ``action``, in definition order."""
        return [t.name for t in self.tasks if t.action is action]

    @property
    def missing(self) -> list[str]:
        """Tasks whose missing checkpoint would stop a partial run from starting."""
        return self.by_action(Action.MISSING)

"""What a run hands back: a frozen :class:`RunResult` with one :class:`TaskRun` per task.

Failures are data first: a run with failed tasks returns normally, and
:meth:`RunResult.raise_for_failures` turns them into one :class:`~asyncflow.RunFailedError`
when the caller prefers an exception (like httpx's ``Response.raise_for_status``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import RunFailedError
from ._events import STATE_ORDER, TaskState
from ._graph import Node
from ._instances import instance_item

__all__ = ["RunResult", "TaskRun"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRun:
    """What happened to one task in one run.

    Attributes:
        name: the task's name.
        state: its final :class:`TaskState`.
        attempts: attempts started (0 for cached, skipped and never-started tasks).
        started_at: when its first attempt started (or its checkpoint was loaded), in
            seconds since the Unix epoch; ``None`` if it never started.
        finished_at: when it reached its final state, in seconds since the Unix epoch;
            ``None`` if it never started.
        duration: ``finished_at - started_at`` in seconds (attempts and backoff waits
            included), or ``None``.
        error: the exception of its last attempt (FAILED), with its traceback; else ``None``.
        result: its result (SUCCEEDED or CACHED), as its serializer's ``loads`` returns
            it when it is checkpointed; else ``None``.
        cache_key: its cache key (hex SHA-256) when the run used checkpoints, else ``None``.
        reason: why it was SKIPPED or CANCELLED, in words; else ``None``.
        result_size: the size in bytes of its serialized result, when it was
            checkpointed (or loaded from its checkpoint); else ``None``.
        instances: for a mapped task that was expanded (see :func:`~asyncflow.each`),
            the names of its instances in item order (``("fetch[0]", ...)``); its
            ``result`` is the list of their results. ``None`` for any other task.
        parent: for an instance of a mapped task, that task's name; else ``None``.
        item: for an instance, the item it received (``{parameter: item}`` for zipped
            inputs); else ``None``.
    """

    name: str
    state: TaskState
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    error: BaseException | None = None
    result: Any = None
    cache_key: str | None = None
    reason: str | None = None
    result_size: int | None = None
    instances: tuple[str, ...] | None = None
    parent: str | None = None
    item: Any = None


class TaskRuns(Mapping[str, TaskRun]):
    """``{task name: TaskRun}`` in definition order, read-only.

    Built from the runner's per-task columns; each :class:`TaskRun` is made on first
    access, so a run of 100k tasks does not pay for 100k objects that nobody reads.

    Args:
        index: ``{task name: position}`` in definition order.
        states, attempts, started, finished, errors, results, keys, reasons, sizes: one entry per
            task, by position; ``started``/``finished`` on the event loop's clock.
        offset: added to the event loop's clock to get seconds since the Unix epoch.
        nodes: the run's nodes, instances included, when it expanded a mapped task.
        expansions: ``{node index of a mapped task: node indices of its instances}``.

    Iteration gives the tasks of the graph in definition order, then the instances in
    the order they were made. :attr:`counts <RunResult.counts>` counts the instances, not
    the mapped task they summarize.
    """

    __slots__ = (
        "_attempts",
        "_cache",
        "_errors",
        "_finished",
        "_index",
        "_keys",
        "_nodes",
        "_offset",
        "_reasons",
        "_results",
        "_sizes",
        "_started",
        "expansions",
        "states",
    )

    def __init__(
        self,
        *,
        index: Mapping[str, int],
        states: Sequence[TaskState],
        attempts: Sequence[int],
        started: Sequence[float | None],
        finished: Sequence[float | None],
        errors: Sequence[BaseException | None],
        results: Sequence[Any],
        keys: Sequence[str | None],
        reasons: Sequence[str | None],
        offset: float,
        sizes: Sequence[int | None] | None = None,
        nodes: Sequence[Node] | None = None,
        expansions: Mapping[int, range] | None = None,
    ) -> None:
        self._index = index
        self._nodes = nodes
        self.expansions: Mapping[int, range] = expansions or {}
        self.states = states
        self._attempts, self._started, self._finished = attempts, started, finished
        self._errors, self._results, self._keys, self._reasons = errors, results, keys, reasons
        self._offset = offset
        self._sizes = sizes
        self._cache: dict[int, TaskRun] = {}

    def __getitem__(self, name: str) -> TaskRun:
        i = self._index[name]
        run = self._cache.get(i)
        if run is None:
            start, end = self._started[i], self._finished[i]
            run = self._cache[i] = TaskRun(
                name=name,
                state=self.states[i],
                attempts=self._attempts[i],
                started_at=None if start is None else start + self._offset,
                finished_at=None if end is None else end + self._offset,
                duration=None if start is None or end is None else end - start,
                error=self._errors[i],
                result=self._results[i],
                cache_key=self._keys[i],
                reason=self._reasons[i],
                result_size=None if self._sizes is None else self._sizes[i],
                **self._mapped(i),
            )
        return run

    def _mapped(self, i: int) -> dict[str, Any]:
        nodes = self._nodes
        if nodes is None:
            return {}
        node = nodes[i]
        if node.parent >= 0:
            template = nodes[node.parent]
            return {"parent": template.name, "item": instance_item(node, self._results, template)}
        span = self.expansions.get(i)
        return {} if span is None else {"instances": tuple(nodes[j].name for j in span)}

    def instances(self, name: str) -> list[TaskRun]:
        """The :class:`TaskRun` of each instance of mapped task ``name``, in item order
        (``[]`` for a task that is not mapped or was never expanded).

        Raises:
            KeyError: there is no task ``name``.
        """
        span = self.expansions.get(self._index[name], range(0))
        nodes = self._nodes
        return [self[nodes[j].name] for j in span] if nodes is not None else []

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"<TaskRuns of {len(self)} tasks>"


def _states(tasks: Mapping[str, TaskRun]) -> Sequence[TaskState]:
    if isinstance(tasks, TaskRuns):
        return tasks.states
    return [t.state for t in tasks.values()]


def _counted(tasks: Mapping[str, TaskRun]) -> Sequence[TaskState]:
    """The states that :attr:`RunResult.counts` counts: not those of expanded mapped tasks
    (a plain mapping, such as an interrupted run's, marks them with ``instances``)."""
    if not isinstance(tasks, TaskRuns):
        return [t.state for t in tasks.values() if t.instances is None]
    states = _states(tasks)
    expansions = tasks.expansions
    if not expansions:
        return states
    return [s for i, s in enumerate(states) if i not in expansions]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RunResult:
    """The outcome of one run of a pipeline.

    Attributes:
        run_id: the run's id (``YYYYmmddTHHMMSS-xxxxxx``, UTC, random suffix).
        pipeline: the pipeline's name.
        params: the run's parameters after defaults were applied.
        started_at, finished_at: in seconds since the Unix epoch.
        duration: the run's wall time in seconds.
        tasks: ``{task name: TaskRun}`` in definition order, then the instances of
            mapped tasks (``fetch[0]``, ...; see :meth:`instances`).
    """

    run_id: str
    pipeline: str
    params: Mapping[str, Any]
    started_at: float
    finished_at: float
    duration: float
    tasks: Mapping[str, TaskRun]

    def __repr__(self) -> str:
        # Short on purpose: a run of 100k tasks must not print (or pay for) 100k reprs.
        return (
            f"<RunResult {self.run_id} pipeline={self.pipeline!r} tasks={len(self.tasks)} "
            f"duration={self.duration:.3f}s>"
        )

    @property
    def ok(self) -> bool:
        """True when every task SUCCEEDED or was CACHED."""
        states = _states(self.tasks)
        return states.count(TaskState.SUCCEEDED) + states.count(TaskState.CACHED) == len(states)

    def by_state(self, state: TaskState) -> list[str]:
        """The names of the tasks that ended in ``state``, in definition order."""
        return [name for name, s in zip(self.tasks, _states(self.tasks), strict=True) if s is state]

    @property
    def counts(self) -> dict[TaskState, int]:
        """How many tasks ended in each state that occurred: each instance of a mapped task
        counts as a task, the mapped task itself (their summary) does not. In the order of
        :data:`~asyncflow._events.STATE_ORDER` (succeeded, cached, failed, ...)."""
        states = _counted(self.tasks)  # list.count compares by identity first: no enum hashing
        return {state: n for state in STATE_ORDER if (n := states.count(state))}

    def instances(self, name: str) -> list[TaskRun]:
        """The runs of the instances of mapped task ``name``, in item order (see
        :meth:`TaskRuns.instances`; ``[]`` when ``tasks`` is a plain mapping)."""
        tasks = self.tasks
        return tasks.instances(name) if isinstance(tasks, TaskRuns) else []

    @property
    def errors(self) -> dict[str, BaseException]:
        """``{task name: exception}`` for every FAILED task."""
        failed = self.by_state(TaskState.FAILED)
        return {n: error for n in failed if (error := self.tasks[n].error) is not None}

    def raise_for_failures(self) -> RunResult:
        """Return ``self`` if the run is :attr:`ok`, else raise.

        Raises:
            RunFailedError: some task FAILED, was SKIPPED or CANCELLED. Its ``.errors``
                maps each failed task to its exception (chained as ``__cause__`` is the
                first one); a run with only cancellations has empty ``.errors``.
        """
        if self.ok:
            return self
        errors = self.errors
        if not errors:
            states = ", ".join(f"{n}: {t.state.value}" for n, t in self.tasks.items() if not t.state.is_ok)
            raise RunFailedError({}) from RuntimeError(f"tasks did not finish: {states}")
        raise RunFailedError(errors) from next(iter(errors.values()))

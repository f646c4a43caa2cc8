"""Property-based tests of the scheduler with hypothesis, on asyncio and on trio.

Each example is a random DAG (up to 200 tasks) whose tasks fail a planned number of times
(some by timing out), with random retries, short sleeps (0-2 ms), thread and coroutine
tasks, tag pools, a concurrency limit, and one of three run modes: the default failure
policy, ``fail_fast``, or a caller that cancels the run after its k-th task start. The
outcome of every task is computable from the plan, so the default policy is checked
exactly; the other modes are checked against invariants. After each run:

* a task starts only after all its upstream tasks succeeded or were cached (events and
  the task bodies' own start/finish journal);
* a task makes at most ``retries + 1`` attempts;
* in the default policy the skipped set is exactly the set of tasks downstream of a failed
  one;
* every task ends in exactly one final state (one final event each);
* no pool and no concurrency limit is ever exceeded;
* the checkpoints in the store are exactly the succeeded tasks';
* a rerun caches exactly what succeeded before, and a rerun of an ok run runs nothing.

``@given`` decorates a plain test that calls ``anyio.run(..., backend=...)`` once per
example; the backend is a pytest parameter.
"""

from __future__ import annotations

import functools
import json
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncflow import (
    CheckpointStore,
    Event,
    FileStore,
    MemoryStore,
    Pipeline,
    RunContext,
    RunResult,
    TaskCached,
    TaskCancelled,
    TaskFailed,
    TaskSkipped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
)

FINAL_EVENTS = (TaskSucceeded, TaskFailed, TaskSkipped, TaskCached, TaskCancelled)
TAGS = ("db", "net", "gpu")
TIMEOUT = 0.1
"""Seconds; a planned timeout sleeps far longer, a planned success does not sleep at all."""


class Boom(Exception):
    """A planned failure."""


@dataclass(frozen=True)
class Plan:
    """What one task does: sleep ``delay`` s, fail its first ``fails`` attempts."""

    delay: float
    fails: int
    retries: int
    times_out: bool
    sync: bool
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Spec:
    """One example: the DAG, each task's plan, the run's limits and its mode."""

    upstream: tuple[tuple[int, ...], ...]
    plans: tuple[Plan, ...]
    pools: dict[str, int]
    max_concurrency: int | None
    mode: Literal["default", "fail_fast", "cancel"]
    cancel_after: int
    store: Literal["memory", "file"]
    seed: int

    @property
    def names(self) -> list[str]:
        return [f"t{i}" for i in range(len(self.plans))]


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    store: Literal["memory", "file"] = draw(st.sampled_from(["memory", "memory", "memory", "file"]))
    n = draw(st.integers(1, 200 if store == "memory" else 50))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    fan_in = draw(st.floats(0.0, 3.0))
    fail_rate = draw(st.sampled_from([0.0, 0.05, 0.2, 0.5]))
    sync_rate = draw(st.sampled_from([0.0, 0.1, 0.3]))
    timeout_rate = draw(st.sampled_from([0.0, 0.0, 0.02]))
    pools = draw(st.dictionaries(st.sampled_from(TAGS), st.integers(1, 3), max_size=3))
    max_concurrency = draw(st.one_of(st.none(), st.integers(1, 8)))
    mode: Literal["default", "fail_fast", "cancel"] = draw(
        st.sampled_from(["default", "default", "fail_fast", "cancel"])
    )
    cancel_after = draw(st.integers(1, max(1, n)))

    upstream = []
    plans = []
    for i in range(n):
        k = min(i, int(rng.random() * (fan_in + 1)))
        upstream.append(tuple(sorted(rng.sample(range(i), k))))
        retries = rng.choice([0, 0, 1, 2])
        fails = rng.choice([retries, retries + 1]) if rng.random() < fail_rate else 0
        sync = rng.random() < sync_rate
        plans.append(
            Plan(
                delay=rng.choice([0.0, 0.0, 0.0, 0.001, 0.002]),
                fails=fails,
                retries=retries,
                times_out=fails > 0 and not sync and rng.random() < timeout_rate * 10,
                sync=sync,
                tags=tuple(t for t in TAGS if rng.random() < 0.3),
            )
        )
    return Spec(
        upstream=tuple(upstream),
        plans=tuple(plans),
        pools=pools,
        max_concurrency=max_concurrency,
        mode=mode,
        cancel_after=cancel_after,
        store=store,
        seed=seed,
    )


class Journal:
    """What the task bodies did, thread-safe: start/ok order, attempts, concurrency peaks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.order: list[tuple[str, str]] = []
        self.attempts: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    def begin(self, task: str, tags: tuple[str, ...]) -> None:
        with self.lock:
            self.order.append(("start", task))
            self.attempts[task] += 1
            for key in ("*", *tags):
                self.running[key] += 1
                self.peak[key] = max(self.peak[key], self.running[key])

    def end(self, task: str, tags: tuple[str, ...], ok: bool) -> None:
        with self.lock:
            if ok:
                self.order.append(("ok", task))
            for key in ("*", *tags):
                self.running[key] -= 1


async def async_body(context: RunContext, *, plan: Plan, journal: Journal) -> str:
    journal.begin(context.task, plan.tags)
    ok = False
    try:
        if plan.delay:
            await anyio.sleep(plan.delay)
        if context.attempt <= plan.fails:
            if plan.times_out:
                await anyio.sleep(60)  # cut short by the task's timeout
            raise Boom(f"{context.task} attempt {context.attempt}")
        ok = True
        return context.task
    finally:
        journal.end(context.task, plan.tags, ok)


def sync_body(context: RunContext, *, plan: Plan, journal: Journal) -> str:
    journal.begin(context.task, plan.tags)
    ok = False
    try:
        if plan.delay:
            time.sleep(plan.delay)
        if context.attempt <= plan.fails:
            raise Boom(f"{context.task} attempt {context.attempt}")
        ok = True
        return context.task
    finally:
        journal.end(context.task, plan.tags, ok)


def build(spec: Spec, journal: Journal) -> Pipeline:
    p = Pipeline("prop")
    names = spec.names
    for i, plan in enumerate(spec.plans):
        body = sync_body if plan.sync else async_body
        p.task(
            functools.partial(body, plan=plan, journal=journal),
            name=names[i],
            after=[names[u] for u in spec.upstream[i]],
            retries=plan.retries,
            retry_delay=0.001,
            backoff=2.0,
            max_delay=0.002,
            jitter=0.5,
            timeout=TIMEOUT if plan.times_out else None,
            tags=plan.tags,
        )
    return p


def predict(spec: Spec, cached: set[str]) -> dict[str, TaskState]:
    """Each task's final state under the default policy (indices are topological)."""
    names, state = spec.names, {}
    for i, plan in enumerate(spec.plans):
        name = names[i]
        if name in cached:
            state[name] = TaskState.CACHED
        elif any(not state[names[u]].is_ok for u in spec.upstream[i]):
            state[name] = TaskState.SKIPPED
        elif plan.fails > plan.retries:
            state[name] = TaskState.FAILED
        else:
            state[name] = TaskState.SUCCEEDED
    return state


def downstream_of(spec: Spec, roots: Iterable[str]) -> set[str]:
    names = spec.names
    below: dict[str, list[str]] = {name: [] for name in names}
    for i, ups in enumerate(spec.upstream):
        for u in ups:
            below[names[u]].append(names[i])
    seen: set[str] = set()
    stack = [d for r in roots for d in below[r]]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(below[name])
    return seen


def stored(store: CheckpointStore, directory: Path) -> set[str]:
    if isinstance(store, MemoryStore):
        return set(store.texts)
    files = {p.name for p in directory.iterdir()} if directory.exists() else set()
    assert files <= {"journal.jsonl"}, files  # no leftovers (no temporary files)
    live: set[str] = set()
    if files:
        for line in (directory / "journal.jsonl").read_bytes().splitlines():
            doc = json.loads(line)  # every line is whole
            (live.discard if doc.get("deleted") else live.add)(doc["task"])
    return live


def check_run(spec: Spec, events: list[Event], journal: Journal, result: RunResult | None) -> dict[str, str]:
    """The invariants every run must hold; returns ``{task: final event name}``."""
    names, ups = spec.names, spec.upstream
    finals: dict[str, list[str]] = {name: [] for name in names}
    ok_at: dict[str, int] = {}
    first_start: dict[str, int] = {}
    starts: Counter[str] = Counter()
    for index, event in enumerate(events):
        if isinstance(event, FINAL_EVENTS):
            finals[event.task].append(type(event).__name__)
            if isinstance(event, TaskSucceeded | TaskCached):
                ok_at[event.task] = index
        elif isinstance(event, TaskStarted):
            starts[event.task] += 1
            first_start.setdefault(event.task, index)
    # every task ends in exactly one final state
    assert all(len(kinds) == 1 for kinds in finals.values()), {n: k for n, k in finals.items() if len(k) != 1}
    # a task starts only after all its upstream tasks succeeded or were cached
    for i, name in enumerate(names):
        if name in first_start:
            for u in ups[i]:
                assert ok_at.get(names[u], len(events)) < first_start[name], (names[u], name)
    position: dict[tuple[str, str], int] = {}
    for index, (what, task) in enumerate(journal.order):
        position.setdefault((what, task), index)
    for i, name in enumerate(names):
        if ("start", name) in position:
            for u in ups[i]:
                if ("start", names[u]) in position:  # ran in this run (not cached)
                    assert position.get(("ok", names[u]), len(journal.order)) < position[("start", name)]
    # at most retries + 1 attempts, counted by the runner and by the bodies (a cancelled
    # attempt may have been announced and then cancelled before its body ran)
    for i, name in enumerate(names):
        assert journal.attempts[name] <= starts[name] <= spec.plans[i].retries + 1
        if finals[name] != ["TaskCancelled"]:
            assert journal.attempts[name] == starts[name]
    # no limit exceeded
    for tag, limit in spec.pools.items():
        assert journal.peak[tag] <= limit, (tag, journal.peak[tag], limit)
    if spec.max_concurrency is not None:
        assert journal.peak["*"] <= spec.max_concurrency
    if result is not None:
        assert {n: t.state for n, t in result.tasks.items()}.keys() == set(names)
        assert all(t.state.is_final for t in result.tasks.values())
        kind = {TaskState.SUCCEEDED: "TaskSucceeded", TaskState.FAILED: "TaskFailed"}
        for name, run in result.tasks.items():
            if run.state in kind:
                assert finals[name] == [kind[run.state]]
                assert run.attempts == starts[name]
    return {name: kinds[0] for name, kinds in finals.items()}


async def run_once(
    spec: Spec, p: Pipeline, store: CheckpointStore, workdir: Path, mode: str, journal: Journal
) -> tuple[list[Event], RunResult | None]:
    events: list[Event] = []
    started = 0
    result = None
    with anyio.fail_after(60), anyio.CancelScope() as scope:  # a deadlock fails, never hangs

        def listen(event: Event) -> None:
            nonlocal started
            events.append(event)
            if mode == "cancel" and isinstance(event, TaskStarted):
                started += 1
                if started == spec.cancel_after:
                    scope.cancel()  # the caller cancels its own scope; the runner is not touched

        result = await p.run(
            workdir=workdir,
            store=store,
            log=False,
            listeners=[listen],
            fail_fast=mode == "fail_fast",
            max_concurrency=spec.max_concurrency,
            pools=spec.pools,
            seed=spec.seed,
        )
    assert (result is None) == scope.cancelled_caught
    return events, result


async def check(spec: Spec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        directory = workdir / "checkpoints"
        store: CheckpointStore = MemoryStore() if spec.store == "memory" else FileStore(directory)
        journal = Journal()
        p = build(spec, journal)
        names = spec.names
        expected = predict(spec, set())

        events, result = await run_once(spec, p, store, workdir, spec.mode, journal)
        finals = check_run(spec, events, journal, result)
        succeeded = {n for n, kind in finals.items() if kind == "TaskSucceeded"}
        assert stored(store, directory) == succeeded
        failed = {n for n, kind in finals.items() if kind == "TaskFailed"}
        assert all(expected[n] is TaskState.FAILED for n in failed)
        assert all(expected[n] is TaskState.SUCCEEDED for n in succeeded)
        skipped = {n for n, kind in finals.items() if kind == "TaskSkipped"}
        if spec.mode == "default":
            assert result is not None
            assert {n: t.state for n, t in result.tasks.items()} == expected
            assert skipped == downstream_of(spec, failed)
            for i, name in enumerate(names):
                plan, state = spec.plans[i], expected[name]
                attempts = {TaskState.SUCCEEDED: plan.fails + 1, TaskState.FAILED: plan.retries + 1}
                assert result.tasks[name].attempts == attempts.get(state, 0)
        else:
            assert skipped <= downstream_of(spec, failed)
        if spec.mode == "fail_fast" and failed:
            first_failure = next(i for i, e in enumerate(events) if isinstance(e, TaskFailed))
            assert not any(isinstance(e, TaskStarted) for e in events[first_failure:])
        if spec.mode == "fail_fast" and any(s is TaskState.FAILED for s in expected.values()):
            assert failed

        # The rerun caches exactly what succeeded, and otherwise follows the default policy.
        journal.__init__()  # type: ignore[misc]
        events, result = await run_once(spec, p, store, workdir, "default", journal)
        assert result is not None
        check_run(spec, events, journal, result)
        again = predict(spec, succeeded)
        assert {n: t.state for n, t in result.tasks.items()} == again
        assert not any(isinstance(e, TaskStarted) and e.task in succeeded for e in events)
        assert stored(store, directory) == {n for n, s in again.items() if s.is_ok}

        if result.ok:  # nothing changed: nothing runs
            journal.__init__()  # type: ignore[misc]
            events, result = await run_once(spec, p, store, workdir, "default", journal)
            assert result is not None
            assert set(result.by_state(TaskState.CACHED)) == set(names)
            assert not any(isinstance(e, TaskStarted) for e in events)
            assert not journal.order


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs())
def test_random_dags_keep_every_scheduling_invariant(backend: str, spec: Spec) -> None:
    anyio.run(check, spec, backend=backend)


def test_the_strategy_covers_large_graphs_failures_and_every_mode() -> None:
    """The examples above are not all trivial: the strategy can produce each feature."""
    seen: dict[str, Any] = {"large": False, "failure": False, "sync": False, "timeout": False}
    modes: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(spec=specs())
    def sample(spec: Spec) -> None:
        seen["large"] |= len(spec.plans) >= 100
        seen["failure"] |= any(p.fails > p.retries for p in spec.plans)
        seen["sync"] |= any(p.sync for p in spec.plans)
        seen["timeout"] |= any(p.times_out for p in spec.plans)
        modes.add(spec.mode)

    sample()
    assert all(seen.values()), seen
    assert modes == {"default", "fail_fast", "cancel"}

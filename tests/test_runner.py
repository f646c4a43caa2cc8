"""The scheduler (asyncflow._runner), through Pipeline.run, on asyncio and on trio.

Timing assertions use generous bounds (the suite must pass on a slow, noisy 2-core
machine); where possible the tests record the order of events instead of times.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

import asyncflow
from asyncflow import (
    AttemptFailed,
    Event,
    ForgottenAwaitError,
    Pipeline,
    RunFailedError,
    RunFinished,
    RunResult,
    RunStarted,
    TaskCancelled,
    TaskFailed,
    TaskSkipped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
    TaskTimeoutError,
)


async def run(p: Pipeline, workdir: Path, **kwargs: Any) -> RunResult:
    """Run ``p`` without logging and, unless asked, without checkpoints."""
    kwargs.setdefault("checkpoints", False)
    kwargs.setdefault("log", False)
    return await p.run(workdir=workdir, **kwargs)


_E = TypeVar("_E", bound=Event)


def of_type(events: list[Event], kind: type[_E]) -> list[_E]:
    return [e for e in events if isinstance(e, kind)]


def index_of(events: list[Event], kind: type[Event], task: str) -> int:
    for i, e in enumerate(events):
        if isinstance(e, kind) and getattr(e, "task", None) == task:
            return i
    raise AssertionError(f"no {kind.__name__} event for {task!r}")


# -- scheduling -----------------------------------------------------------------------------


async def test_fast_branch_child_starts_before_slow_sibling_finishes(tmp_path: Path) -> None:
    p = Pipeline("p")
    starts: dict[str, float] = {}

    @p.task
    async def fast() -> int:
        starts["fast"] = anyio.current_time()
        await anyio.sleep(0.05)
        return 1

    @p.task
    async def slow() -> int:
        starts["slow"] = anyio.current_time()
        await anyio.sleep(0.5)
        return 2

    @p.task
    async def fast_child(fast: int) -> int:
        starts["fast_child"] = anyio.current_time()
        return fast + 1

    events: list[Event] = []
    result = await run(p, tmp_path, listeners=[events.append])
    assert result.ok
    # Event-driven, not in waves: the child of the fast branch does not wait for "slow".
    assert index_of(events, TaskStarted, "fast_child") < index_of(events, TaskSucceeded, "slow")
    slow_end = of_type(events, TaskSucceeded)[-1]
    assert slow_end.task == "slow"
    assert starts["fast_child"] - starts["fast"] < 0.35
    assert slow_end.time - starts["fast_child"] > 0.1


async def test_independent_branches_run_concurrently(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task
    async def left() -> str:
        await anyio.sleep(0.25)
        return "l"

    @p.task
    async def left2(left: str) -> str:
        await anyio.sleep(0.25)
        return left * 2

    @p.task
    async def right() -> str:
        await anyio.sleep(0.25)
        return "r"

    @p.task
    async def right2(right: str) -> str:
        await anyio.sleep(0.25)
        return right * 2

    start = anyio.current_time()
    result = await run(p, tmp_path)
    elapsed = anyio.current_time() - start
    assert result.ok
    assert (result.tasks["left2"].result, result.tasks["right2"].result) == ("ll", "rr")
    assert 0.45 <= elapsed < 0.9
    assert 0.45 <= result.duration < 0.9


async def test_sync_branches_run_concurrently_in_threads(tmp_path: Path) -> None:
    import time

    p = Pipeline("p")

    @p.task
    def one() -> int:
        time.sleep(0.5)
        return 1

    @p.task
    def two() -> int:
        time.sleep(0.5)
        return 2

    result = await run(p, tmp_path)
    assert result.ok
    assert result.duration < 0.9


async def test_diamond_runs_shared_upstream_exactly_once(tmp_path: Path) -> None:
    p = Pipeline("p")
    calls: Counter[str] = Counter()

    @p.task
    async def top() -> int:
        calls["top"] += 1
        await anyio.sleep(0.01)
        return 10

    @p.task
    async def left(top: int) -> int:
        calls["left"] += 1
        await anyio.sleep(0.05)
        return top + 1

    @p.task
    async def right(top: int) -> int:
        calls["right"] += 1
        return top + 2

    @p.task
    async def bottom(left: int, right: int) -> list[int]:
        calls["bottom"] += 1
        return [left, right]

    result = await run(p, tmp_path)
    assert result.ok
    assert calls == {"top": 1, "left": 1, "right": 1, "bottom": 1}
    assert result.tasks["bottom"].result == [11, 12]
    assert {name: t.attempts for name, t in result.tasks.items()} == dict.fromkeys(calls, 1)


def _counting_pipeline(n: int, live: list[int], peak: list[int]) -> Pipeline:
    """``n`` roots and ``n`` children (child i after root i), each tracking a live counter."""
    p = Pipeline("p")
    for i in range(n):

        async def body(**_: Any) -> None:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            try:
                await anyio.sleep(0.03)
            finally:
                live[0] -= 1

        async def root() -> None:
            await body()

        async def child() -> None:
            await body()

        p.task(name=f"root{i}")(root)
        p.task(name=f"child{i}", after=[f"root{i}"])(child)
    return p


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_max_concurrency_bounds_running_tasks(tmp_path: Path, limit: int) -> None:
    live, peak = [0], [0]
    p = _counting_pipeline(6, live, peak)
    result = await run(p, tmp_path, max_concurrency=limit)
    assert result.ok
    assert len(result.by_state(TaskState.SUCCEEDED)) == 12
    assert peak[0] == limit
    assert live[0] == 0


async def test_without_limit_all_ready_tasks_run_at_once(tmp_path: Path) -> None:
    live, peak = [0], [0]
    p = _counting_pipeline(6, live, peak)
    result = await run(p, tmp_path)
    assert result.ok
    assert peak[0] == 6


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
async def test_invalid_max_concurrency_is_rejected(tmp_path: Path, bad: Any) -> None:
    p = Pipeline("p")
    ran = []

    @p.task
    async def t() -> None:
        ran.append(1)

    with pytest.raises(ValueError, match="max_concurrency"):
        await run(p, tmp_path, max_concurrency=bad)
    assert ran == []


def _ordered_pipeline() -> Pipeline:
    p = Pipeline("ordered")

    @p.task
    async def r1() -> int:
        await anyio.sleep(0.05)
        return 1

    @p.task
    async def r2() -> int:
        return 2

    @p.task
    async def a(r1: int) -> int:
        await anyio.sleep(0.02)
        return r1

    @p.task
    async def b(r2: int) -> int:
        return r2

    @p.task
    def c(a: int, b: int) -> int:
        return a + b

    @p.task
    async def d(r1: int) -> int:
        return r1

    @p.task
    async def e(c: int, d: int) -> int:
        return c + d

    return p


async def test_event_order_is_deterministic_with_max_concurrency_one(tmp_path: Path) -> None:
    p = _ordered_pipeline()
    sequences = []
    for attempt in range(2):
        events: list[Event] = []
        result = await run(p, tmp_path / str(attempt), max_concurrency=1, listeners=[events.append])
        assert result.ok
        assert result.tasks["e"].result == 4
        sequences.append([(type(e).__name__, getattr(e, "task", None)) for e in events])
    assert sequences[0] == sequences[1]
    # First in, first out: roots in definition order, then tasks in the order they became ready.
    started = [task for kind, task in sequences[0] if kind == "TaskStarted"]
    assert started == ["r1", "r2", "a", "d", "b", "c", "e"]
    assert sequences[0][0] == ("RunStarted", None)
    assert sequences[0][-1] == ("RunFinished", None)
    # One task at a time: every start is followed by that task's success.
    body = sequences[0][1:-1]
    assert body == [pair for t in started for pair in (("TaskStarted", t), ("TaskSucceeded", t))]


async def test_empty_pipeline_runs_ok(tmp_path: Path) -> None:
    events: list[Event] = []
    result = await run(Pipeline("empty"), tmp_path, listeners=[events.append])
    assert result.ok
    assert result.tasks == {}
    assert [type(e) for e in events] == [RunStarted, RunFinished]


async def test_pipeline_can_run_concurrently_with_itself(tmp_path: Path) -> None:
    p = Pipeline("p", params={"n": 0})

    @p.task
    async def value(params: dict[str, Any]) -> int:
        await anyio.sleep(0.05)
        return int(params["n"])

    @p.task
    async def double(value: int) -> int:
        return value * 2

    results: dict[int, RunResult] = {}

    async def one(n: int) -> None:
        results[n] = await run(p, tmp_path / str(n), params={"n": n})

    async with anyio.create_task_group() as tg:
        for n in (1, 2, 3):
            tg.start_soon(one, n)
    assert {n: r.tasks["double"].result for n, r in results.items()} == {1: 2, 2: 4, 3: 6}
    assert len({r.run_id for r in results.values()}) == 3


# -- retries --------------------------------------------------------------------------------


async def test_permanent_failure_makes_retries_plus_one_attempts(tmp_path: Path) -> None:
    p = Pipeline("p")
    calls: list[int] = []

    @p.task(retries=2, retry_delay=0.01)
    async def flaky() -> None:
        calls.append(len(calls) + 1)
        raise RuntimeError(f"attempt {len(calls)}")

    events: list[Event] = []
    result = await run(p, tmp_path, listeners=[events.append])
    run_ = result.tasks["flaky"]
    assert calls == [1, 2, 3]
    assert run_.state is TaskState.FAILED
    assert run_.attempts == 3
    assert isinstance(run_.error, RuntimeError)
    assert str(run_.error) == "attempt 3"
    failed_attempts = of_type(events, AttemptFailed)
    assert [(e.attempt, e.retry_in is None) for e in failed_attempts] == [(1, False), (2, False), (3, True)]
    assert [e.attempt for e in of_type(events, TaskStarted)] == [1, 2, 3]
    (final,) = of_type(events, TaskFailed)
    assert final.attempts == 3
    assert final.error is run_.error


async def test_success_on_a_later_attempt(tmp_path: Path) -> None:
    p = Pipeline("p")
    calls: list[int] = []

    @p.task(retries=4, retry_delay=0.01)
    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "done"

    @p.task
    async def after_it(flaky: str) -> str:
        return flaky + "!"

    events: list[Event] = []
    result = await run(p, tmp_path, listeners=[events.append])
    assert result.ok
    assert len(calls) == 3
    assert result.tasks["flaky"].attempts == 3
    assert result.tasks["flaky"].state is TaskState.SUCCEEDED
    assert result.tasks["flaky"].error is None
    assert result.tasks["after_it"].result == "done!"
    assert [e.attempt for e in of_type(events, TaskSucceeded) if e.task == "flaky"] == [3]


async def test_backoff_delays_between_attempts(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task(retries=3, retry_delay=0.1, backoff=2.0)
    async def flaky() -> None:
        raise OSError("down")

    events: list[Event] = []
    result = await run(p, tmp_path, listeners=[events.append])
    assert result.tasks["flaky"].attempts == 4
    flow = [e for e in events if isinstance(e, (AttemptFailed, TaskStarted))]
    gaps = [
        (fail.retry_in, start.time - fail.time)
        for fail, start in itertools.pairwise(flow)
        if isinstance(fail, AttemptFailed) and isinstance(start, TaskStarted)
    ]
    assert [planned for planned, _ in gaps] == pytest.approx([0.1, 0.2, 0.4])
    for planned, measured in gaps:
        assert planned is not None
        assert planned - 0.01 <= measured < planned + 0.3
    assert 0.69 <= result.tasks["flaky"].duration < 1.5  # type: ignore[operator]


async def test_jitter_with_seed_is_reproducible_and_bounded(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task(retries=3, retry_delay=0.04, backoff=1.0, jitter=1.0)
    async def flaky() -> None:
        raise OSError("down")

    waits = []
    for n in range(2):
        events: list[Event] = []
        await run(p, tmp_path / str(n), listeners=[events.append], seed=99)
        waits.append([e.retry_in for e in of_type(events, AttemptFailed)])
    assert waits[0] == waits[1]
    assert waits[0][-1] is None
    assert all(w is not None and 0 <= w <= 0.04 for w in waits[0][:-1])
    assert len(set(waits[0][:-1])) == 3


async def test_retry_on_excludes_other_exceptions(tmp_path: Path) -> None:
    p = Pipeline("p")
    calls: Counter[str] = Counter()

    @p.task(retries=3, retry_delay=0.01, retry_on=ConnectionError)
    async def wrong_kind() -> None:
        calls["wrong_kind"] += 1
        raise ValueError("bad data")

    @p.task(retries=3, retry_delay=0.01, retry_on=(KeyError, ConnectionError))
    async def right_kind() -> None:
        calls["right_kind"] += 1
        raise ConnectionResetError("reset")  # a ConnectionError subclass

    events: list[Event] = []
    result = await run(p, tmp_path, listeners=[events.append])
    assert calls == {"wrong_kind": 1, "right_kind": 4}
    assert result.tasks["wrong_kind"].attempts == 1
    assert isinstance(result.tasks["wrong_kind"].error, ValueError)
    assert result.tasks["right_kind"].attempts == 4
    wrong = [e for e in of_type(events, AttemptFailed) if e.task == "wrong_kind"]
    assert [e.retry_in for e in wrong] == [None]


async def test_cancellation_is_not_retried(tmp_path: Path) -> None:
    p = Pipeline("p")
    attempts: list[int] = []
    cancelled: list[int] = []

    @p.task
    async def bad() -> None:
        await anyio.sleep(0.05)
        raise RuntimeError("boom")

    @p.task(retries=5, retry_delay=0)
    async def slow(context: asyncflow.RunContext) -> None:
        attempts.append(context.attempt)
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            cancelled.append(context.attempt)
            raise

    events: list[Event] = []
    start = anyio.current_time()
    result = await run(p, tmp_path, fail_fast=True, listeners=[events.append])
    assert anyio.current_time() - start < 2
    assert attempts == [1]
    assert cancelled == [1]
    assert result.tasks["slow"].state is TaskState.CANCELLED
    assert result.tasks["slow"].attempts == 1
    assert [e.task for e in of_type(events, AttemptFailed)] == ["bad"]


async def test_caller_cancellation_is_not_retried(tmp_path: Path) -> None:
    p = Pipeline("p")
    attempts: list[int] = []

    @p.task(retries=5, retry_delay=0)
    async def slow(context: asyncflow.RunContext) -> None:
        attempts.append(context.attempt)
        await anyio.sleep(10)

    with anyio.move_on_after(0.1) as scope:
        await run(p, tmp_path)
    assert scope.cancelled_caught
    assert attempts == [1]


# -- timeouts -------------------------------------------------------------------------------


async def test_timeout_counts_as_a_failed_attempt(tmp_path: Path) -> None:
    p = Pipeline("p")
    calls: list[int] = []

    @p.task(timeout=0.1, retries=1, retry_delay=0)
    async def hangs() -> None:
        calls.append(1)
        await anyio.sleep(10)

    events: list[Event] = []
    start = anyio.current_time()
    result = await run(p, tmp_path, listeners=[events.append])
    assert anyio.current_time() - start < 2
    run_ = result.tasks["hangs"]
    assert run_.state is TaskState.FAILED
    assert run_.attempts == 2
    assert len(calls) == 2
    error = run_.error
    assert isinstance(error, TaskTimeoutError)
    assert isinstance(error, TimeoutError)
    assert error.task == "hangs"
    assert error.timeout == 0.1
    assert not error.thread_abandoned
    assert str(error) == "task 'hangs' timed out after 0.1 s"
    assert [type(e.error) for e in of_type(events, AttemptFailed)] == [TaskTimeoutError, TaskTimeoutError]


async def test_timeout_then_success_on_retry(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task(timeout=0.1, retries=2, retry_delay=0)
    async def slow_once(context: asyncflow.RunContext) -> int:
        if context.attempt == 1:
            await anyio.sleep(10)
        return context.attempt

    result = await run(p, tmp_path)
    assert result.ok
    assert result.tasks["slow_once"].result == 2
    assert result.tasks["slow_once"].attempts == 2


async def test_timeout_is_not_retried_when_retry_on_excludes_it(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task(timeout=0.05, retries=3, retry_delay=0, retry_on=ValueError)
    async def hangs() -> None:
        await anyio.sleep(10)

    result = await run(p, tmp_path)
    assert result.tasks["hangs"].attempts == 1
    assert isinstance(result.tasks["hangs"].error, TaskTimeoutError)


async def test_timeout_on_sync_task_does_not_hang_and_says_thread_left_running(tmp_path: Path) -> None:
    p = Pipeline("p")
    release = threading.Event()
    finished = threading.Event()

    @p.task(timeout=0.2)
    def blocks() -> None:
        release.wait(10)
        finished.set()

    @p.task
    async def independent() -> int:
        return 1

    start = anyio.current_time()
    try:
        result = await run(p, tmp_path)
        elapsed = anyio.current_time() - start
        # The thread is still blocked: the run did not wait for it.
        assert not finished.is_set()
    finally:
        release.set()
    assert elapsed < 2
    assert result.tasks["independent"].state is TaskState.SUCCEEDED
    error = result.tasks["blocks"].error
    assert isinstance(error, TaskTimeoutError)
    assert error.thread_abandoned
    assert "left running" in str(error)
    # Let the abandoned thread end before the event loop closes.
    await anyio.to_thread.run_sync(finished.wait, 5)
    assert finished.is_set()


# -- failures -------------------------------------------------------------------------------


async def test_failure_skips_downstream_while_independent_branch_succeeds(tmp_path: Path) -> None:
    p = Pipeline("p")
    ran: list[str] = []

    @p.task
    async def bad() -> int:
        ran.append("bad")
        raise KeyError("missing column")

    @p.task
    async def child(bad: int) -> int:
        ran.append("child")
        return bad

    @p.task
    async def grandchild(child: int) -> int:
        ran.append("grandchild")
        return child

    @p.task
    async def good() -> int:
        await anyio.sleep(0.05)
        ran.append("good")
        return 1

    @p.task
    async def good_child(good: int) -> int:
        ran.append("good_child")
        return good + 1

    events: list[Event] = []
    # log=True (the default) exercises the log listener on every kind of event.
    result = await p.run(workdir=tmp_path, checkpoints=False, listeners=[events.append])
    assert sorted(ran) == ["bad", "good", "good_child"]
    assert result.by_state(TaskState.FAILED) == ["bad"]
    assert result.by_state(TaskState.SKIPPED) == ["child", "grandchild"]
    assert result.by_state(TaskState.SUCCEEDED) == ["good", "good_child"]
    assert result.tasks["good_child"].result == 2
    assert result.tasks["child"].reason == "upstream task 'bad' failed"
    assert result.tasks["grandchild"].reason == "upstream task 'child' was skipped"
    assert result.tasks["child"].attempts == 0
    assert result.tasks["child"].started_at is None
    skipped = {e.task: e.upstream for e in of_type(events, TaskSkipped)}
    assert skipped == {"child": "bad", "grandchild": "child"}
    assert result.counts == {TaskState.FAILED: 1, TaskState.SKIPPED: 2, TaskState.SUCCEEDED: 2}
    assert not result.ok
    assert of_type(events, RunFinished)[0].ok is False


async def test_fail_fast_cancels_the_rest(tmp_path: Path) -> None:
    p = Pipeline("p")
    cancelled: list[str] = []

    @p.task
    async def bad() -> None:
        await anyio.sleep(0.05)
        raise RuntimeError("boom")

    @p.task
    async def after_bad(bad: None) -> None:
        return None

    @p.task
    async def slow() -> int:
        try:
            await anyio.sleep(10)
        finally:
            cancelled.append("slow")
        return 1

    @p.task
    async def after_slow(slow: int) -> int:
        return slow

    events: list[Event] = []
    start = anyio.current_time()
    result = await run(p, tmp_path, fail_fast=True, listeners=[events.append])
    assert anyio.current_time() - start < 2
    assert cancelled == ["slow"]
    assert result.tasks["bad"].state is TaskState.FAILED
    assert result.tasks["after_bad"].state is TaskState.SKIPPED
    assert result.tasks["slow"].state is TaskState.CANCELLED
    assert result.tasks["after_slow"].state is TaskState.CANCELLED
    assert result.tasks["slow"].reason == "fail_fast: task 'bad' failed"
    assert result.tasks["slow"].finished_at is not None
    assert result.tasks["after_slow"].started_at is None
    assert {e.task for e in of_type(events, TaskCancelled)} == {"slow", "after_slow"}
    assert not result.ok


async def test_without_fail_fast_other_tasks_finish(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task
    async def bad() -> None:
        raise RuntimeError("boom")

    @p.task
    async def slow() -> int:
        await anyio.sleep(0.1)
        return 1

    result = await run(p, tmp_path)
    assert result.tasks["slow"].state is TaskState.SUCCEEDED


async def test_run_result_ok_and_raise_for_failures(tmp_path: Path) -> None:
    good = Pipeline("good")

    @good.task
    async def fine() -> int:
        return 1

    ok_result = await run(good, tmp_path / "good")
    assert ok_result.ok
    assert ok_result.raise_for_failures() is ok_result
    assert ok_result.errors == {}

    bad = Pipeline("bad")

    @bad.task
    async def first() -> None:
        raise ValueError("first broke")

    @bad.task
    async def second() -> None:
        await anyio.sleep(0.05)
        raise KeyError("second broke")

    @bad.task
    async def third(first: None) -> None:
        return None

    failed = await run(bad, tmp_path / "bad")
    assert not failed.ok
    with pytest.raises(RunFailedError) as info:
        failed.raise_for_failures()
    error = info.value
    assert list(error.errors) == ["first", "second"]
    assert error.errors["first"] is failed.tasks["first"].error
    assert isinstance(error.errors["second"], KeyError)
    assert error.__cause__ is failed.tasks["first"].error
    assert str(error).startswith("2 tasks failed: first: ValueError: first broke; second: KeyError:")
    assert error.errors["first"].__traceback__ is not None
    assert "third" not in error.errors


async def test_forgotten_await_fails_without_retry(tmp_path: Path) -> None:
    p = Pipeline("p")

    async def fetch() -> int:
        return 1

    @p.task(retries=3, retry_delay=0)
    async def forgot() -> Any:
        return fetch()  # missing await

    @p.task
    def forgot_sync() -> Any:
        return fetch()

    result = await run(p, tmp_path)
    for name in ("forgot", "forgot_sync"):
        error = result.tasks[name].error
        assert isinstance(error, ForgottenAwaitError)
        assert isinstance(error, TypeError)
        assert error.task == name
        assert "an 'await' is missing" in str(error)
        assert result.tasks[name].attempts == 1


# -- how tasks are called -------------------------------------------------------------------


async def test_sync_task_runs_in_a_worker_thread(tmp_path: Path) -> None:
    p = Pipeline("p")
    loop_thread = threading.get_ident()

    @p.task
    def in_thread() -> int:
        return threading.get_ident()

    @p.task
    async def on_loop() -> int:
        return threading.get_ident()

    result = await run(p, tmp_path)
    assert result.tasks["in_thread"].result != loop_thread
    assert result.tasks["on_loop"].result == loop_thread


async def test_params_and_context_are_injected(tmp_path: Path) -> None:
    p = Pipeline("ctx", params={"window": 5, "name": "x"})
    seen: dict[str, Any] = {}

    @p.task(retries=1, retry_delay=0)
    async def uses(params: dict[str, Any], context: asyncflow.RunContext) -> int:
        seen.setdefault("attempts", []).append(context.attempt)
        seen["params"] = params
        seen["context"] = context
        if context.attempt == 1:
            raise RuntimeError("again")
        (context.workdir / "out.txt").write_text(f"window={params['window']}")
        return int(params["window"]) * 2

    @p.task
    def sync_uses(uses: int, params: dict[str, Any]) -> list[Any]:
        return [uses, params["name"]]

    result = await run(p, tmp_path, params={"window": 7}, run_id="run-1")
    assert result.ok
    assert result.run_id == "run-1"
    assert result.params == {"window": 7, "name": "x"}
    assert seen["attempts"] == [1, 2]
    assert seen["params"] == {"window": 7, "name": "x"}
    context = seen["context"]
    assert isinstance(context, asyncflow.RunContext)
    assert (context.run_id, context.pipeline, context.task, context.attempt) == ("run-1", "ctx", "uses", 2)
    assert context.workdir == await anyio.Path(tmp_path).resolve()
    assert context.params == {"window": 7, "name": "x"}
    assert (tmp_path / "out.txt").read_text() == "window=7"
    assert result.tasks["sync_uses"].result == [14, "x"]
    assert p.params == {"window": 5, "name": "x"}  # the run did not change the defaults


async def test_loop_generated_tasks_with_name_and_inputs(tmp_path: Path) -> None:
    p = Pipeline("p")
    tickers = ["aapl", "msft", "goog"]
    for ticker in tickers:

        @p.task(name=f"load_{ticker}")
        async def load(symbol: str = ticker) -> str:
            await anyio.sleep(0.01)
            return symbol.upper()

        @p.task(name=f"report_{ticker}", inputs={"data": f"load_{ticker}"})
        def report(data: str) -> str:
            return f"report for {data}"

    @p.task(inputs={"first": "load_aapl", "second": "load_goog"})
    async def pair(first: str, second: str) -> list[str]:
        return [first, second]

    # Checkpoints on: one function registered per ticker keeps one result per ticker.
    for attempt in range(2):
        result = await run(p, tmp_path, checkpoints=True)
        assert result.ok
        assert {t: result.tasks[f"report_{t}"].result for t in tickers} == {
            "aapl": "report for AAPL",
            "msft": "report for MSFT",
            "goog": "report for GOOG",
        }
        assert result.tasks["pair"].result == ["AAPL", "GOOG"]
        expected = TaskState.SUCCEEDED if attempt == 0 else TaskState.CACHED
        assert set(result.counts) == {expected}


async def test_after_is_an_ordering_only_dependency(tmp_path: Path) -> None:
    p = Pipeline("p")
    order: list[str] = []

    @p.task
    async def first() -> str:
        await anyio.sleep(0.1)
        order.append("first")
        return "ignored"

    @p.task(after=["first"])
    async def second() -> str:
        order.append("second")
        return "second"

    @p.task(after=[second, first])
    def third() -> int:
        order.append("third")
        return 3

    result = await run(p, tmp_path)
    assert result.ok
    assert order == ["first", "second", "third"]
    assert result.tasks["second"].result == "second"


async def test_after_dependency_failure_skips(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task
    async def setup() -> None:
        raise RuntimeError("no database")

    @p.task(after=["setup"])
    async def query() -> int:
        return 1

    result = await run(p, tmp_path)
    assert result.tasks["query"].state is TaskState.SKIPPED
    assert result.tasks["query"].reason == "upstream task 'setup' failed"


# -- cancellation by the caller -------------------------------------------------------------


async def test_caller_cancellation_cancels_every_task(tmp_path: Path) -> None:
    p = Pipeline("p")
    running: set[str] = set()
    cancelled: list[str] = []
    started: list[str] = []

    def sleeper(name: str) -> Any:
        async def body() -> None:
            started.append(name)
            running.add(name)
            try:
                await anyio.sleep(10)
            except anyio.get_cancelled_exc_class():
                cancelled.append(name)
                raise
            finally:
                running.discard(name)

        return body

    for name in ("a", "b", "c"):
        p.task(name=name)(sleeper(name))

    @p.task
    async def downstream(a: None) -> None:
        started.append("downstream")

    events: list[Event] = []
    start = anyio.current_time()
    with anyio.move_on_after(0.2) as scope:
        await run(p, tmp_path, listeners=[events.append])
    elapsed = anyio.current_time() - start
    assert scope.cancelled_caught
    assert running == set()
    assert sorted(cancelled) == ["a", "b", "c"]
    assert sorted(started) == ["a", "b", "c"]
    assert elapsed < 2
    reasons = {e.task: e.reason for e in of_type(events, TaskCancelled)}
    assert reasons == dict.fromkeys(["a", "b", "c", "downstream"], "the run was cancelled by its caller")
    for finished in of_type(events, RunFinished):  # if the run reports its end at all
        assert finished is events[-1]
        assert not finished.ok
        assert finished.counts == {TaskState.CANCELLED: 4}
    # Nothing left behind: a later sleep in this task is not disturbed.
    await anyio.sleep(0.05)
    assert sorted(started) == ["a", "b", "c"]


# -- listeners ------------------------------------------------------------------------------


async def test_listener_that_raises_is_disabled_and_run_succeeds(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task
    async def a() -> int:
        return 1

    @p.task
    async def b(a: int) -> int:
        return a + 1

    bad_calls: list[Event] = []

    def bad(event: Event) -> None:
        bad_calls.append(event)
        raise RuntimeError("listener bug")

    events: list[Event] = []
    result = await run(p, tmp_path, listeners=[bad, events.append])
    assert result.ok
    assert result.tasks["b"].result == 2
    assert len(bad_calls) == 1
    assert isinstance(bad_calls[0], RunStarted)
    kinds = [type(e) for e in events]
    assert kinds == [RunStarted, TaskStarted, TaskSucceeded, TaskStarted, TaskSucceeded, RunFinished]


async def test_events_carry_run_id_and_monotonic_times(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task
    async def a() -> int:
        await anyio.sleep(0.05)
        return 1

    events: list[Event] = []
    result = await run(p, tmp_path, listeners=[events.append], run_id="r-42")
    assert {e.run_id for e in events} == {"r-42"}
    times = [e.time for e in events]
    assert times == sorted(times)
    (succeeded,) = of_type(events, TaskSucceeded)
    assert 0.04 <= succeeded.duration < 1
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.counts == {TaskState.SUCCEEDED: 1}
    assert finished.ok
    task = result.tasks["a"]
    assert task.started_at is not None and task.finished_at is not None
    assert result.started_at <= task.started_at <= task.finished_at <= result.finished_at
    assert task.duration == pytest.approx(task.finished_at - task.started_at, abs=1e-4)


@pytest.mark.parametrize("checkpoints", [False, True])
async def test_caller_cancellation_during_a_thread_task_starts_no_downstream_task(
    tmp_path: Path, checkpoints: bool
) -> None:
    # A worker thread cannot be interrupted, so the cancellation waits for it; it must then
    # reach the run before a downstream coroutine that never awaits could start (found by
    # a user: with --no-skip, Ctrl-C during a thread task let the rest of the run finish).
    p = Pipeline("p")
    started: list[str] = []

    @p.task
    def slow() -> int:
        started.append("slow")
        time.sleep(0.5)
        return 1

    @p.task
    async def after_slow(slow: int) -> int:
        started.append("after_slow")
        return slow + 1

    with anyio.move_on_after(0.1) as scope:
        await run(p, tmp_path, checkpoints=checkpoints, force=True)
    assert scope.cancelled_caught
    assert started == ["slow"]


@pytest.mark.parametrize("kind", ["coroutine", "thread"])
async def test_keyboardinterrupt_from_a_task_cancels_the_run_and_is_reraised_naming_it(
    tmp_path: Path, kind: str
) -> None:
    p = Pipeline("p")
    cleaned: list[str] = []

    @p.task
    async def long() -> int:
        try:
            await anyio.sleep(30)
        finally:
            cleaned.append("long")
        return 1

    def interrupt() -> int:
        raise KeyboardInterrupt

    async def interrupt_async() -> int:
        await anyio.sleep(0.05)
        raise KeyboardInterrupt

    p.task(name="boom")(interrupt if kind == "thread" else interrupt_async)
    events: list[Event] = []
    with anyio.fail_after(10), pytest.raises(KeyboardInterrupt) as caught:
        await p.run(workdir=tmp_path, log=False, checkpoints=False, listeners=[events.append])
    assert "raised by asyncflow task 'boom' of pipeline 'p'" in getattr(caught.value, "__notes__", [])
    assert cleaned == ["long"]
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert len(finished) == 1 and not finished[0].ok

"""One attempt of a task (asyncflow._attempt): the run's own worker threads, where a
timeout starts, and coroutines that block the event loop. Every test runs on asyncio and trio."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from loguru import logger

from asyncflow import Pipeline, TaskState, TaskTimeoutError


def _sleepers(p: Pipeline, count: int, seconds: float, timeout: float | None = None) -> dict[str, int]:
    """Define ``count`` independent plain def tasks that each sleep ``seconds``; returns a
    dict whose ``now``/``peak`` count the threads computing at once."""
    lock = threading.Lock()
    counts = {"now": 0, "peak": 0}

    def make(n: int) -> None:
        def sleeper() -> int:
            with lock:
                counts["now"] += 1
                counts["peak"] = max(counts["peak"], counts["now"])
            time.sleep(seconds)
            with lock:
                counts["now"] -= 1
            return n

        p.task(name=f"t{n}", timeout=timeout)(sleeper)

    for n in range(count):
        make(n)
    return counts


async def test_max_concurrency_is_not_capped_by_anyios_forty_default_threads(tmp_path: Path) -> None:
    p = Pipeline("wide")
    counts = _sleepers(p, 100, 1.0)
    began = time.monotonic()
    result = await p.run(workdir=tmp_path, log=False, checkpoints=False, max_concurrency=100)
    elapsed = time.monotonic() - began
    assert result.ok
    assert counts["peak"] > 40  # anyio's default limiter would stop at 40
    assert elapsed < 2.5, f"100 one-second tasks with 100 threads took {elapsed:.1f} s"


async def test_without_max_concurrency_every_thread_task_can_run_at_once(tmp_path: Path) -> None:
    p = Pipeline("wide")
    counts = _sleepers(p, 60, 0.5)
    result = await p.run(workdir=tmp_path, log=False, checkpoints=False)
    assert result.ok
    assert counts["peak"] > 40


async def test_threads_option_bounds_the_worker_threads_of_the_run(tmp_path: Path) -> None:
    p = Pipeline("narrow")
    counts = _sleepers(p, 6, 0.1)
    result = await p.run(workdir=tmp_path, log=False, checkpoints=False, threads=2)
    assert result.ok
    assert counts["peak"] == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
async def test_threads_must_be_a_positive_int(tmp_path: Path, bad: object) -> None:
    p = Pipeline("p")
    _sleepers(p, 1, 0)
    with pytest.raises(ValueError, match="threads must be a positive int"):
        await p.run(workdir=tmp_path, log=False, checkpoints=False, threads=bad)  # type: ignore[arg-type]


async def test_timeout_starts_when_the_thread_starts_not_while_waiting_for_one(tmp_path: Path) -> None:
    # Two threads, six tasks of 0.4 s with a 1.2 s timeout: the last pair waits 0.8 s for a
    # thread, which must not count against its timeout.
    p = Pipeline("queue")
    _sleepers(p, 6, 0.4, timeout=1.2)
    result = await p.run(workdir=tmp_path, log=False, checkpoints=False, threads=2)
    assert {name: run.state for name, run in result.tasks.items()} == {
        f"t{n}": TaskState.SUCCEEDED for n in range(6)
    }


async def test_timeout_message_tells_never_started_from_left_running(tmp_path: Path) -> None:
    p = Pipeline("p")
    ran: list[str] = []
    release = threading.Event()

    @p.task(timeout=0.2)
    def blocks() -> int:
        ran.append("blocks")
        release.wait(10)
        return 1

    @p.task(timeout=1e-9)  # expires before any thread can begin it
    def never() -> int:
        ran.append("never")
        return 2

    try:
        result = await p.run(workdir=tmp_path, log=False, checkpoints=False, threads=1)
    finally:
        release.set()
    left = result.tasks["blocks"].error
    assert isinstance(left, TaskTimeoutError) and left.thread_abandoned and left.started
    assert "its worker thread could not be stopped and was left running" in str(left)
    never_started = result.tasks["never"].error
    assert isinstance(never_started, TaskTimeoutError)
    assert not never_started.started and not never_started.thread_abandoned
    assert "it never started" in str(never_started)
    await anyio.sleep(0.2)
    assert ran == ["blocks"]  # the function that never started never runs later either


async def test_coroutine_blocking_the_loop_past_its_timeout_fails_and_is_named(tmp_path: Path) -> None:
    p = Pipeline("p")
    warnings: list[str] = []

    @p.task(timeout=0.3)
    async def blocks() -> int:
        await anyio.lowlevel.checkpoint()
        time.sleep(0.6)  # noqa: ASYNC251  (the fault under test: blocks the loop, returns without awaiting)
        return 1

    @p.task
    async def fine() -> int:
        return 2

    logger.enable("asyncflow")
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING", format="{message}")
    try:
        result = await p.run(workdir=tmp_path, log=False, checkpoints=False)
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")
    error = result.tasks["blocks"].error
    assert isinstance(error, TaskTimeoutError), error
    assert error.held_loop is not None and error.held_loop >= 0.5
    assert "held the event loop" in str(error)
    assert result.tasks["fine"].state is TaskState.SUCCEEDED
    [warning] = [w for w in warnings if "held the event loop" in w]
    assert "'blocks'" in warning and "plain def" in warning


async def test_coroutine_that_awaits_within_its_timeout_is_not_blamed(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task(timeout=5)
    async def quick() -> int:
        for _ in range(3):
            await anyio.sleep(0.01)
        return 1

    result = await p.run(workdir=tmp_path, log=False, checkpoints=False)
    assert result.tasks["quick"].state is TaskState.SUCCEEDED


async def test_a_thread_task_cancelled_while_waiting_for_a_thread_never_runs(tmp_path: Path) -> None:
    p = Pipeline("p")
    ran: list[str] = []

    @p.task(timeout=5)  # takes the only thread first (a timed attempt waits for it in order)
    def hold() -> int:
        time.sleep(0.4)
        return 1

    @p.task(timeout=5)
    def queued() -> int:
        ran.append("queued")
        return 2

    @p.task
    async def fails() -> int:
        await anyio.sleep(0.1)
        raise ValueError("boom")

    result = await p.run(workdir=tmp_path, log=False, checkpoints=False, threads=1, fail_fast=True)
    await anyio.sleep(0.6)  # hold's thread is free again: queued would have run by now
    assert ran == []
    assert result.tasks["queued"].state is TaskState.CANCELLED

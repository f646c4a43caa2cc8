"""EventStream (asyncflow._stream): a run's events read with ``async for`` by the embedding app."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from loguru import logger

import asyncflow._outcomes
import asyncflow._runner
from asyncflow import (
    AttemptFailed,
    Event,
    EventStream,
    MemoryStore,
    Pipeline,
    RunFinished,
    RunResult,
    RunStarted,
    TaskCached,
    TaskCancelled,
    TaskFailed,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
)


def every_kind_of_event() -> Pipeline:
    """A retried task, a failure and its skipped downstream task; cached on a second run."""
    p = Pipeline("stream")
    calls: Counter[str] = Counter()

    @p.task
    async def a() -> int:
        return 1

    @p.task
    async def broken() -> int:
        raise ValueError("always broken")

    @p.task(retries=1, retry_delay=0)
    async def flaky(a: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("the first attempt fails")
        return a + 1

    @p.task
    async def after_broken(broken: int) -> int:
        return broken

    return p


FIRST_RUN = [
    (RunStarted, None),
    (TaskStarted, "a"),
    (TaskSucceeded, "a"),
    (TaskStarted, "broken"),
    (AttemptFailed, "broken"),
    (TaskFailed, "broken"),
    (TaskSkipped, "after_broken"),
    (TaskStarted, "flaky"),
    (AttemptFailed, "flaky"),
    (TaskStarted, "flaky"),
    (TaskSucceeded, "flaky"),
    (RunFinished, None),
]
SECOND_RUN = [
    (RunStarted, None),
    (TaskCached, "a"),
    (TaskStarted, "broken"),
    (AttemptFailed, "broken"),
    (TaskFailed, "broken"),
    (TaskSkipped, "after_broken"),
    (TaskCached, "flaky"),
    (RunFinished, None),
]


def kinds(events: list[Event]) -> list[tuple[type[Event], str | None]]:
    return [(type(e), getattr(e, "task", None)) for e in events]


async def collect(stream: EventStream, into: list[Event]) -> None:
    async for event in stream:
        into.append(event)


async def run_with_stream(p: Pipeline, **kwargs: Any) -> tuple[RunResult, list[Event], list[Event]]:
    """Run ``p`` with a callback listener and a stream read by a concurrent task."""
    called: list[Event] = []
    streamed: list[Event] = []
    stream = EventStream()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, stream, streamed)
            result = await p.run(log=False, listeners=[called.append, stream], **kwargs)
    return result, called, streamed


async def test_stream_yields_the_same_events_as_a_callback_listener(tmp_path: Path) -> None:
    p = every_kind_of_event()
    store = MemoryStore()
    for expected in (FIRST_RUN, SECOND_RUN):
        result, called, streamed = await run_with_stream(p, workdir=tmp_path, store=store, max_concurrency=1)
        assert kinds(streamed) == kinds(called) == expected
        assert all(s is c for s, c in zip(streamed, called, strict=True))
        assert {e.run_id for e in streamed} == {result.run_id}
        times = [e.time for e in streamed]
        assert times == sorted(times)
    retried = [e for e in called if isinstance(e, AttemptFailed) and e.task == "flaky"]
    assert retried == []  # the second run loaded flaky from its checkpoint


async def test_retry_events_carry_attempt_delay_and_error(tmp_path: Path) -> None:
    _, _, streamed = await run_with_stream(every_kind_of_event(), workdir=tmp_path, checkpoints=False)
    failed = {e.task: e for e in streamed if isinstance(e, AttemptFailed)}
    assert failed["flaky"].attempt == 1 and failed["flaky"].retry_in == 0 and failed["flaky"].will_retry
    assert isinstance(failed["flaky"].error, ConnectionError)
    assert failed["broken"].retry_in is None and not failed["broken"].will_retry
    skipped = next(e for e in streamed if isinstance(e, TaskSkipped))
    assert (skipped.upstream, skipped.reason) == ("broken", "upstream task 'broken' failed")


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_an_app_on_its_own_event_loop_reads_the_stream(tmp_path: Path, loop: str) -> None:
    """An application using asyncio's or trio's own primitives, not anyio's."""
    p = every_kind_of_event()

    async def app() -> tuple[list[Event], list[Event]]:
        stream = EventStream()
        called: list[Event] = []
        streamed: list[Event] = []
        run = p.run(
            workdir=tmp_path,
            checkpoints=False,
            log=False,
            max_concurrency=1,
            listeners=[called.append, stream],
        )
        if loop == "trio":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect, stream, streamed)
                await run
        else:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(collect(stream, streamed))
                await run
        return called, streamed

    called, streamed = trio.run(app) if loop == "trio" else asyncio.run(app())
    assert kinds(streamed) == kinds(called) == FIRST_RUN


async def test_the_reader_gets_each_event_while_the_run_goes_on(tmp_path: Path) -> None:
    p = Pipeline("live")
    seen_start = anyio.Event()

    @p.task
    async def waits() -> str:
        await seen_start.wait()  # only the stream's reader can let this task finish
        return "done"

    async def reader(stream: EventStream) -> None:
        async for event in stream:
            if isinstance(event, TaskStarted) and event.task == "waits":
                seen_start.set()

    stream = EventStream()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, stream)
            result = await p.run(workdir=tmp_path, checkpoints=False, log=False, listeners=[stream])
    assert result.tasks["waits"].result == "done"


async def test_the_stream_ends_when_the_caller_cancels_the_run(tmp_path: Path) -> None:
    p = Pipeline("cancelled")

    @p.task
    async def sleeps() -> None:
        await anyio.sleep(30)

    stream = EventStream()
    streamed: list[Event] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, stream, streamed)  # outside the cancelled scope
            with anyio.move_on_after(0.1):
                await p.run(workdir=tmp_path, checkpoints=False, log=False, listeners=[stream])
    assert kinds(streamed) == [
        (RunStarted, None),
        (TaskStarted, "sleeps"),
        (TaskCancelled, "sleeps"),
        (RunFinished, None),
    ]
    finished = streamed[-1]
    assert isinstance(finished, RunFinished) and not finished.ok


async def test_a_stream_serves_one_run(tmp_path: Path) -> None:
    p = every_kind_of_event()
    stream = EventStream()
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, stream, [])
        await p.run(workdir=tmp_path, checkpoints=False, log=False, listeners=[stream])
    errors: list[str] = []
    logger.enable("asyncflow")
    sink = logger.add(lambda message: errors.append(str(message)), level="ERROR")
    try:
        called: list[Event] = []
        result = await p.run(
            workdir=tmp_path, checkpoints=False, log=False, listeners=[stream, called.append]
        )
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")
    assert kinds(called)[0] == (RunStarted, None) and kinds(called)[-1] == (RunFinished, None)
    assert result.tasks["a"].result == 1  # the run went on without the disabled stream
    assert len(errors) == 1 and "create one EventStream per run" in errors[0]


async def test_a_reader_that_stops_early_does_not_disturb_the_run(tmp_path: Path) -> None:
    p = every_kind_of_event()
    stream = EventStream()
    errors: list[str] = []
    logger.enable("asyncflow")
    sink = logger.add(lambda message: errors.append(str(message)), level="ERROR")
    try:
        async with stream, anyio.create_task_group() as tg:

            async def first_only() -> None:
                async for _ in stream:
                    await stream.aclose()

            tg.start_soon(first_only)
            result = await p.run(workdir=tmp_path, checkpoints=False, log=False, listeners=[stream])
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")
    assert result.tasks["flaky"].result == 2
    assert errors == []


async def test_close_ends_the_iteration_after_the_queued_events(tmp_path: Path) -> None:
    stream = EventStream()
    stream(RunStarted(run_id="r", time=0.0, pipeline="p", tasks=0))
    stream.close()
    assert [type(e) async for e in stream] == [RunStarted]
    assert [e async for e in stream] == []


def test_an_unread_stream_is_dropped_without_a_warning() -> None:
    stream = EventStream()  # no event loop needed
    stream(RunStarted(run_id="r", time=0.0, pipeline="p", tasks=0))
    assert "1 events buffered" in repr(stream)
    del stream
    gc.collect()  # anyio's ResourceWarning for unclosed memory streams would fail the test


async def test_without_listeners_no_event_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    for kind in (
        RunStarted,
        RunFinished,
        TaskStarted,
        AttemptFailed,
        TaskSucceeded,
        TaskFailed,
        TaskSkipped,
        TaskCached,
        TaskCancelled,
    ):
        name = kind.__name__
        for module in (asyncflow._runner, asyncflow._outcomes):  # the scheduler and the outcomes
            if hasattr(module, name):
                assert getattr(module, name) is kind
                monkeypatch.setattr(module, name, lambda _name=name, **_: built.append(_name))
    p = every_kind_of_event()
    store = MemoryStore()
    first = await p.run(workdir=tmp_path, store=store, log=False)  # retried, failed, skipped
    second = await p.run(workdir=tmp_path, store=store, log=False)  # cached
    q = Pipeline("fail_fast")

    @q.task
    async def slow() -> None:
        await anyio.sleep(30)

    @q.task
    async def bad() -> None:
        await anyio.sleep(0.01)
        raise ValueError("bad")

    third = await q.run(workdir=tmp_path, checkpoints=False, log=False, fail_fast=True)  # cancelled
    assert first.tasks["flaky"].attempts == 2 and first.tasks["after_broken"].state.value == "skipped"
    assert second.tasks["a"].state.value == "cached"
    assert third.tasks["slow"].state.value == "cancelled"
    assert built == []


async def test_the_stream_ends_when_the_run_fails_before_it_starts(tmp_path: Path) -> None:
    p = Pipeline("p", params={"n": 1})

    @p.task
    async def a() -> int:
        return 1

    stream = EventStream()
    seen: list[Event] = []

    async def read() -> None:
        async for event in stream:
            seen.append(event)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            with pytest.raises(asyncflow.ParamError):
                await p.run(params={"bogus": 1}, workdir=tmp_path, listeners=[stream], log=False)
    assert seen == []

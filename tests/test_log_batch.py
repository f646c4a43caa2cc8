"""The CLI's routine log lines reach loguru in batches (asyncflow._log_batch): same text,
same order, never held back while a task runs; other sinks still get one record a line."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from loguru import logger

from asyncflow import Pipeline, RunContext, TaskState, each
from asyncflow._events import TaskCached, TaskStarted, TaskSucceeded
from asyncflow._log_batch import MAX_AGE, MAX_LINES, LineBatch, batching_sinks_only, routine_message
from asyncflow._log_sinks import _console_format, _file_format, add_cli_sinks, batch_renderer

pytestmark = pytest.mark.anyio

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


@pytest.fixture
def cli_sinks(tmp_path: Path) -> Iterator[Path]:
    """The CLI's console (INFO) and run.log (DEBUG) sinks; yields the log file."""
    log_file = tmp_path / "run.log"
    ids = add_cli_sinks(level="INFO", log_file=log_file)
    try:
        yield log_file
    finally:
        for sink_id in ids:
            logger.remove(sink_id)
        logger.disable("asyncflow")


def _retrying() -> Pipeline:
    p = Pipeline("batched")
    attempts = {"flaky": 0}

    @p.task
    async def first() -> int:
        return 1

    @p.task(retries=1, retry_delay=0.01)
    async def flaky(first: int) -> int:
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            raise ConnectionError("once")
        return first + 1

    @p.task
    async def last(flaky: int) -> int:
        return flaky + 1

    return p


async def test_run_log_has_every_line_in_order_with_the_retry_warning_between(
    cli_sinks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert batching_sinks_only() == 10  # only the CLI's sinks: batched, from DEBUG up
    result = await _retrying().run(checkpoints=False, run_id="r1")
    assert result.ok
    lines = (await anyio.Path(cli_sinks).read_text()).splitlines()
    assert all(re.match(STAMP + r" (DEBUG|INFO|WARNING) +run=r1 task=", line) for line in lines), lines
    said = [re.sub(STAMP + r" \w+ +run=r1 ", "", line) for line in lines]
    said = [re.sub(r"in \d\.\d{3} s", "in T s", line) for line in said]
    assert said == [
        "task=- run r1 of pipeline 'batched' started (3 tasks)",
        "task=first attempt 1 started",
        "task=first succeeded on attempt 1 in T s",
        "task=flaky attempt 1 started",
        "task=flaky attempt 1 failed (ConnectionError: once); retrying in T s",
        "task=flaky attempt 2 started",
        "task=flaky succeeded on attempt 2 in T s",
        "task=last attempt 1 started",
        "task=last succeeded on attempt 1 in T s",
        "task=- run r1 finished in T s: 3 succeeded",
    ]
    console = capsys.readouterr().err.splitlines()
    tasks = [line.split()[2] for line in console if re.match(r"\d\d:\d\d:\d\d\.\d{3} INFO", line)]
    assert tasks == ["-", "first", "flaky", "last", "-"]  # INFO and up: no "started" lines
    assert any("WARNING flaky attempt 1 failed" in line for line in console)


async def test_a_finished_task_s_line_is_written_while_a_long_task_still_runs(cli_sinks: Path) -> None:
    p = Pipeline("slow")
    seen: list[str] = []

    @p.task
    async def quick() -> int:
        return 1

    @p.task
    async def slow(quick: int) -> int:
        await anyio.sleep(10 * MAX_AGE)  # no event meanwhile: only the flusher thread writes
        seen.append(await anyio.Path(cli_sinks).read_text())
        return quick

    assert (await p.run(checkpoints=False)).ok
    assert "task=quick succeeded on attempt 1" in seen[0]
    assert "task=slow attempt 1 started" in seen[0]


async def test_an_application_s_own_sink_gets_one_record_per_line() -> None:
    records: list[Any] = []
    logger.enable("asyncflow")
    sink = logger.add(lambda m: records.append(m.record), level="DEBUG")
    try:
        assert batching_sinks_only() is None
        assert (await _retrying().run(checkpoints=False)).ok
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")
    assert not any("batch" in r["extra"] for r in records)
    messages = [(r["extra"]["task"], r["message"]) for r in records]
    assert ("first", "attempt 1 started") in messages and len(messages) == 10


async def test_json_lines_on_the_console_are_one_record_per_event(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ids = add_cli_sinks(level="DEBUG", log_file=None, json_lines=True)
    try:
        assert batching_sinks_only() is None
        assert (await _retrying().run(checkpoints=False)).ok
    finally:
        for sink_id in ids:
            logger.remove(sink_id)
        logger.disable("asyncflow")
    docs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(docs) == 10 and docs[1]["record"]["message"] == "attempt 1 started"


ROUTINE_EVENTS = [
    TaskStarted(run_id="r", time=0.0, task="fit", attempt=1),  # the renderer's made-once texts
    TaskSucceeded(run_id="r", time=0.0, task="fit", attempt=1, duration=0.000499),
    TaskStarted(run_id="r", time=0.0, task="fit", attempt=2),
    TaskSucceeded(run_id="r", time=0.0, task="fit", attempt=2, duration=0.0002),
    TaskSucceeded(run_id="r", time=0.0, task="fit", attempt=1, duration=0.0005),
    TaskSucceeded(run_id="r", time=0.0, task="fit", attempt=1, duration=0.5),
    TaskCached(run_id="r", time=0.0, task="fit", cache_key="3f2a9c41d0e8" + "0" * 52),
]


@pytest.mark.parametrize("colored", [False, True], ids=["plain", "colored"])
def test_a_batched_line_is_the_text_of_a_record_of_its_own(colored: bool) -> None:
    console, log_file = io.StringIO(), io.StringIO()
    logger.enable("asyncflow")
    sinks = [
        logger.add(console, level="DEBUG", format=_console_format, colorize=colored),
        logger.add(log_file, level="DEBUG", format=_file_format, colorize=False),
    ]
    try:
        for event in ROUTINE_EVENTS:  # each a record of its own, as an application's sink gets them
            log = logger.bind(run_id="r", task="fit")
            log.log("DEBUG" if isinstance(event, TaskStarted) else "INFO", routine_message(event))
        batch = LineBatch("r", render=batch_renderer(10, colored=colored, file=True))
        for event in ROUTINE_EVENTS:
            batch.add(event)
        batch.close()
    finally:
        for sink in sinks:
            logger.remove(sink)
        logger.disable("asyncflow")
    times = re.compile(STAMP + "|" + r"\d\d:\d\d:\d\d\.\d{3}")
    for out in (console, log_file):
        lines = [times.sub("T", line) for line in out.getvalue().splitlines()]
        own, batched = lines[: len(ROUTINE_EVENTS)], lines[len(ROUTINE_EVENTS) :]
        assert len(batched) == len(ROUTINE_EVENTS) and batched == own
    assert ("\x1b[" in console.getvalue()) is colored
    said = log_file.getvalue()
    assert "task=fit cached (checkpoint matches cache key 3f2a9c41d0e8…)" in said
    assert "task=fit succeeded on attempt 1 in 0.000 s" in said and "attempt 1 in 0.001 s" in said


async def test_a_console_above_info_gets_no_routine_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = add_cli_sinks(level="WARNING", log_file=tmp_path / "run.log")
    try:
        result = await _retrying().run(checkpoints=False)
    finally:
        for sink_id in ids:
            logger.remove(sink_id)
        logger.disable("asyncflow")
    assert result.counts == {TaskState.SUCCEEDED: 3}
    console = capsys.readouterr().err.splitlines()
    assert len(console) == 1 and "WARNING flaky attempt 1 failed" in console[0]
    assert len((await anyio.Path(tmp_path / "run.log").read_text()).splitlines()) == 10


def test_a_full_batch_is_flushed_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("asyncflow._log_batch.MAX_AGE", 60.0)  # the flusher thread stays out of it
    out: list[int] = []
    logger.enable("asyncflow")
    sink = logger.add(lambda m: out.append(len(m.record["extra"]["batch"].file.splitlines())), level="DEBUG")
    try:
        batch = LineBatch("r", render=batch_renderer(20, colored=False, file=True))
        for k in range(MAX_LINES + 88):
            batch.add(TaskStarted(run_id="r", time=0.0, task=f"t{k}", attempt=1))
        assert out == [MAX_LINES]  # at once: the rest waits
        batch.close()
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")
    assert out == [MAX_LINES, 88]


async def test_a_task_s_own_log_line_follows_its_attempt_started_line(cli_sinks: Path) -> None:
    p = Pipeline("own")

    @p.task
    async def ingest(context: RunContext) -> int:
        context.logger.info("read 3 rows")
        return 3

    @p.task
    def total(ingest: int, context: RunContext) -> int:  # in a worker thread
        context.logger.info("adding up")
        return ingest

    assert (await p.run(checkpoints=False)).ok
    said = [line.split(" task=", 1)[1] for line in (await anyio.Path(cli_sinks).read_text()).splitlines()]
    assert said[1:7] == [
        "ingest attempt 1 started",
        "ingest read 3 rows",
        said[3],  # ingest succeeded ...
        "total attempt 1 started",
        "total adding up",
        said[6],
    ]
    assert said[3].startswith("ingest succeeded") and said[6].startswith("total succeeded")


def _stamps(clock_reads: list[float], *, wait: bool) -> list[float]:
    """The times (seconds since the epoch) of the lines of TaskStarted events at
    ``clock_reads`` of the run's clock, flushed by ``close``, or (``wait``) each but the
    last flushed at once and the last by the flusher thread."""
    from datetime import datetime

    out: list[float] = []
    logger.enable("asyncflow")

    def sink_(message: Any) -> None:
        lines = message.record["extra"]["batch"].file.splitlines()
        out.extend(datetime.fromisoformat(line.split(" ", 1)[0]).timestamp() for line in lines)

    sink = logger.add(sink_, level="DEBUG")
    try:
        batch = LineBatch("r", render=batch_renderer(20, colored=False, file=True))
        for k, now in enumerate(clock_reads):
            batch.add(TaskStarted(run_id="r", time=now, task=f"t{k}", attempt=1))
            if wait and k < len(clock_reads) - 1:
                batch.flush()  # as a failure's line would: the next line starts a batch
        if wait:
            deadline = time.monotonic() + 50 * MAX_AGE
            while len(out) < len(clock_reads) and time.monotonic() < deadline:
                time.sleep(MAX_AGE / 4)
            assert len(out) == len(clock_reads), "the flusher thread did not write the lines"
        batch.close()
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")
    return out


def test_a_line_s_time_is_the_wall_time_of_its_event_whatever_the_run_s_clock() -> None:
    before = time.time()
    # trio's clock starts at a random offset; the run's clock is anything monotonic
    stamps = _stamps([123_456.0, 123_456.25, 123_457.0], wait=False)
    assert len(stamps) == 3
    assert before - 0.01 <= stamps[0] <= time.time() + 0.01  # the first line syncs the offset
    assert stamps[1] - stamps[0] == pytest.approx(0.25, abs=0.002)  # milliseconds in the text
    assert stamps[2] - stamps[0] == pytest.approx(1.0, abs=0.002)


def test_the_flusher_thread_writes_lines_whose_clock_runs_ahead_of_the_wall() -> None:
    # A virtual clock jumped an hour ahead: the last line's age is negative (-3600 s), and
    # it is written within a few tenths of a second all the same.
    stamps = _stamps([0.0, 3600.0], wait=True)
    assert len(stamps) == 2 and stamps[1] - stamps[0] == pytest.approx(3600.0, abs=0.002)


async def test_lines_after_a_mapped_task_are_queued_again_and_none_is_lost(cli_sinks: Path) -> None:
    # Routine lines go straight to the batch until a task is mapped (each instance's line
    # is then counted first), and straight again once no mapped task is open.
    p = Pipeline("mapped")

    @p.task
    async def first() -> list[int]:
        return [1, 2, 3]

    @p.task(inputs={"x": each("first")})
    async def double(x: int) -> int:
        return 2 * x

    @p.task
    async def total(double: list[int]) -> int:
        return sum(double)

    @p.task
    async def last(total: int) -> int:
        return total

    result = await p.run(checkpoints=False)
    assert result.ok and result.tasks["last"].result == 12
    said = [line.split(" task=", 1)[1] for line in (await anyio.Path(cli_sinks).read_text()).splitlines()]
    said = [re.sub(r"in \d\.\d{3} s", "in T s", line) for line in said]
    started = [line.split()[0] for line in said if line.endswith(" attempt 1 started")]
    succeeded = [line.split()[0] for line in said if line.endswith(" succeeded on attempt 1 in T s")]
    instances = ["double[0]", "double[1]", "double[2]"]
    assert sorted(started) == sorted(succeeded) == sorted(["first", "last", "total", *instances])
    assert "double all 3 instances succeeded in T s" in said
    assert said.index("double all 3 instances succeeded in T s") < said.index("total attempt 1 started")
    assert said[-3:] == ["last attempt 1 started", "last succeeded on attempt 1 in T s", said[-1]]
    assert said[-1].startswith("- run ") and said[-1].endswith(": 6 succeeded")

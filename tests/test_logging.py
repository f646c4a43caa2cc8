"""Logging (asyncflow._logging, asyncflow._context): logging never breaks a run."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

import asyncflow._context
from asyncflow import Event, Pipeline, RunContext, TaskState
from asyncflow._logging import add_cli_sinks


@pytest.fixture
def raising_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """An application's loguru sink added with ``catch=False`` that raises on every line."""
    monkeypatch.setattr(asyncflow._context, "_sink_failure_reported", False, raising=False)
    seen: list[str] = []

    def sink(message: object) -> None:
        seen.append(str(message))
        raise RuntimeError("the log server is down")

    logger.enable("asyncflow")
    sink_id = logger.add(sink, catch=False, level="DEBUG")
    try:
        yield seen
    finally:
        logger.remove(sink_id)
        logger.disable("asyncflow")


async def test_a_sink_that_raises_never_breaks_the_run(
    tmp_path: Path, raising_sink: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    p = Pipeline("p")

    @p.task
    async def first(context: RunContext) -> int:
        context.logger.info("computing {}", 1)
        context.logger.exception("and an exception line")
        return 1

    @p.task
    def second(first: int, context: RunContext) -> int:
        context.logger.warning("from a thread")
        return first + 1

    def broken_listener(event: Event) -> None:
        raise ValueError("listener bug")  # disabled and logged, through the broken sink

    result = await p.run(workdir=tmp_path, listeners=[broken_listener], record=True)
    assert result.ok
    assert result.tasks["second"].result == 2
    assert result.tasks["second"].state is TaskState.SUCCEEDED
    assert raising_sink  # the sink was called (and raised) for the run's lines
    err = capsys.readouterr().err
    assert err.count("asyncflow: a loguru sink raised RuntimeError: the log server is down") == 1


async def test_cli_sinks_write_the_documented_line_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Console: ``HH:MM:SS.mmm LEVEL task message``; run.log: ISO 8601 time to the
    millisecond with its UTC offset, level, run id, task, message, then any traceback."""
    p = Pipeline("formats")

    @p.task
    async def fine() -> int:
        return 1

    @p.task
    async def broken(fine: int) -> int:
        raise ValueError("on purpose")

    log_file = tmp_path / "run.log"
    ids = add_cli_sinks(level="INFO", log_file=log_file)
    try:
        result = await p.run(checkpoints=False, run_id="r1")
    finally:
        for sink_id in ids:
            logger.remove(sink_id)
        logger.disable("asyncflow")
    assert result.tasks["broken"].state is TaskState.FAILED
    console = capsys.readouterr().err.splitlines()
    assert any(
        re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO    fine succeeded on attempt 1 in \d\.\d{3} s", line)
        for line in console
    )
    lines = log_file.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
    assert any(re.fullmatch(stamp + r" DEBUG   run=r1 task=fine attempt 1 started", line) for line in lines)
    failed = next(i for i, line in enumerate(lines) if "task=broken failed after 1 attempt" in line)
    assert re.match(stamp + " ERROR   run=r1 task=broken ", lines[failed])
    assert lines[failed + 1].startswith("Traceback") and "ValueError: on purpose" in "\n".join(lines[failed:])

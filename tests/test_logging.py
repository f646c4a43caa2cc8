"""Logging (asyncflow._logging, asyncflow._context): logging never breaks a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

import asyncflow._context
from asyncflow import Event, Pipeline, RunContext, TaskState


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

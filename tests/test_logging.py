"""Logging (asyncflow._logging, asyncflow._context): logging never breaks a run; a mapped
task's expansion and end are told in words."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from mapped_pipeline import make

import asyncflow
import asyncflow._context
from asyncflow import Event, Pipeline, RunContext, TaskState
from asyncflow._log_sinks import add_cli_sinks
from asyncflow._logging import LogListener

E: dict[str, Any] = {"run_id": "r", "time": 0.0}


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


# -- mapped tasks ---------------------------------------------------------------------------------


@pytest.fixture
def lines() -> Iterator[list[str]]:
    logger.enable("asyncflow")
    out: list[str] = []
    sink = logger.add(
        lambda m: out.append(f"{m.record['level'].name} {m.record['extra']['task']} {m.record['message']}"),
        level="DEBUG",
    )
    try:
        yield out
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")


def test_task_mapped_is_logged_at_info_in_words(lines: list[str]) -> None:
    log = LogListener()
    log(
        asyncflow.TaskMapped(
            **E, task="fetch", instances=tuple(f"fetch[{k}]" for k in range(200)), over=("urls",)
        )
    )
    log(asyncflow.TaskMapped(**E, task="pair", instances=("pair[0]",), over=("a", "b")))
    log(asyncflow.TaskMapped(**E, task="none", instances=(), over=("urls",)))
    assert lines == [
        "INFO fetch mapped over urls: 200 instances",
        "INFO pair mapped over a and b: 1 instance",
        "INFO none mapped over urls: 0 instances",
    ]


async def test_a_mapped_task_ends_in_words_about_its_instances(lines: list[str], anyio_backend: str) -> None:
    result = await make(["a", "bad", "c"]).run(checkpoints=False)
    assert not result.ok
    assert "INFO fetch mapped over urls: 3 instances" in lines
    assert "INFO parse mapped over fetch: 3 instances" in lines
    assert "INFO fetch[0] succeeded on attempt 1 in " in "\n".join(lines)
    failed = [line for line in lines if line.startswith("ERROR fetch ")]
    assert failed == [
        "ERROR fetch failed: MappingError: 1 of 3 instances of task 'fetch' did not succeed: fetch[1]"
    ]
    assert not any("attempt 0" in line or "0 attempts" in line for line in lines)
    lines.clear()
    result = await make(["a", "c"]).run(checkpoints=False)
    assert result.ok
    done = [line for line in lines if line.startswith(("INFO fetch ", "INFO parse "))]
    assert done[0] == "INFO fetch mapped over urls: 2 instances"
    assert any(line.startswith("INFO fetch all 2 instances succeeded in ") for line in done), done
    assert any(line.startswith("INFO parse all 2 instances succeeded in ") for line in done), done

"""The event-loop watchdog (asyncflow._watchdog): a coroutine task that blocks the loop is
named, with the blocking line; nothing is watched unless asked. Both backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from faults import cli, env, write_pipeline
from loguru import logger

from asyncflow import Pipeline

WATCHDOG = "asyncflow event-loop watchdog"


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """The WARNING lines asyncflow logs during the test."""
    lines: list[str] = []
    logger.enable("asyncflow")
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{extra[task]} | {message}")
    try:
        yield lines
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")


async def test_a_coroutine_task_holding_the_loop_is_named_with_its_line(
    tmp_path: Path, warnings: list[str]
) -> None:
    p = Pipeline("p")

    @p.task
    async def fine() -> int:
        for _ in range(20):
            await anyio.sleep(0.01)
        return 1

    @p.task
    async def blocker(fine: int) -> int:
        await anyio.lowlevel.checkpoint()
        time.sleep(1.2)  # noqa: ASYNC251  (the fault under test)
        return fine

    result = await p.run(workdir=tmp_path, log=False, checkpoints=False, warn_blocking=0.2)
    assert result.ok
    held = [w for w in warnings if "has held the event loop" in w]
    assert len(held) == 1, warnings
    assert held[0].startswith("blocker | task 'blocker' has held the event loop for ")
    assert "test_watchdog.py:" in held[0] and "in blocker" in held[0] and "plain def" in held[0]
    [total] = [w for w in warnings if "held the event loop for" in w and "has held" not in w]
    seconds = float(total.split("for ")[1].split(" s")[0])
    assert 0.6 <= seconds <= 3.0
    assert not any("'fine'" in w for w in warnings)


async def test_tasks_that_await_are_never_blamed(tmp_path: Path, warnings: list[str]) -> None:
    p = Pipeline("p")
    for n in range(20):

        async def ticks() -> int:
            for _ in range(30):
                await anyio.sleep(0.01)
            return 1

        p.task(name=f"t{n}")(ticks)
    result = await p.run(workdir=tmp_path, log=False, checkpoints=False, warn_blocking=0.2)
    assert result.ok
    assert not [w for w in warnings if "event loop" in w]


async def test_no_watchdog_runs_unless_asked(tmp_path: Path) -> None:
    p = Pipeline("p")
    seen: list[bool] = []

    @p.task
    async def look() -> int:
        seen.append(any(t.name == WATCHDOG for t in threading.enumerate()))
        return 1

    await p.run(workdir=tmp_path, log=False, checkpoints=False)
    await p.run(workdir=tmp_path, log=False, checkpoints=False, warn_blocking=0.5)
    assert seen == [False, True]
    await anyio.sleep(0.7)
    assert not any(t.name == WATCHDOG for t in threading.enumerate())  # it ended with the run


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "1"])
async def test_warn_blocking_must_be_a_positive_number_of_seconds(tmp_path: Path, bad: object) -> None:
    p = Pipeline("p")
    p.task(name="x")(lambda: 1)
    with pytest.raises(ValueError, match="warn_blocking must be a positive number of seconds"):
        await p.run(workdir=tmp_path, log=False, checkpoints=False, warn_blocking=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_cli_warns_about_a_blocking_coroutine_by_default_and_0_turns_it_off(
    tmp_path: Path, backend: str
) -> None:
    path = write_pipeline(
        tmp_path,
        """
        import time

        import asyncflow

        pipeline = asyncflow.Pipeline("blocking")


        @pipeline.task
        async def fetch() -> int:
            time.sleep(1.0)
            return 1
        """,
    )
    on = cli(path, "--workdir", tmp_path / "w1", "--backend", backend, environ=env())
    assert on.returncode == 0, on.stderr
    assert "task 'fetch' has held the event loop for" in on.stderr
    assert "flow.py:11 in fetch" in on.stderr
    off = cli(path, "--workdir", tmp_path / "w2", "--backend", backend, "--warn-blocking", "0")
    assert off.returncode == 0, off.stderr
    assert "held the event loop" not in off.stderr

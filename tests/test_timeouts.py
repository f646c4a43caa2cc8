"""Timeouts as faults: a timed-out coroutine is cancelled for real; a timed-out thread is
abandoned, and neither the run nor the command line waits for it."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from faults import cli, states, write_pipeline

from asyncflow import Pipeline, TaskState, TaskTimeoutError


async def test_timed_out_coroutine_is_cancelled_for_real(tmp_path: Path) -> None:
    p = Pipeline("p")
    reached: list[str] = []

    @p.task(timeout=0.1)
    async def hangs() -> int:
        try:
            await anyio.sleep(10)
            reached.append("after the sleep")
        finally:
            reached.append("finally")
        return 1

    began = anyio.current_time()
    result = await p.run(workdir=tmp_path, log=False, checkpoints=False)
    assert anyio.current_time() - began < 2
    assert reached == ["finally"]  # its cleanup ran before the run returned; nothing else did
    error = result.tasks["hangs"].error
    assert isinstance(error, TaskTimeoutError) and not error.thread_abandoned
    assert result.tasks["hangs"].state is TaskState.FAILED


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cli_reports_an_abandoned_thread_and_does_not_wait_for_it(tmp_path: Path, backend: str) -> None:
    path = write_pipeline(
        tmp_path,
        """
        import time

        import asyncflow

        pipeline = asyncflow.Pipeline("to")


        @pipeline.task(timeout=0.2)
        def blocks() -> int:
            time.sleep(30)
            return 1


        @pipeline.task
        async def other() -> int:
            return 2
        """,
    )
    began = time.monotonic()
    result = cli(path, "--workdir", tmp_path / "w", "--backend", backend)
    assert time.monotonic() - began < 20  # far from the thread's 30 s
    assert result.returncode == 1
    assert states(result.stdout) == {"blocks": "failed", "other": "succeeded"}
    assert (
        "asyncflow: task 'blocks' failed: TaskTimeoutError: task 'blocks' timed out after 0.2 s "
        "(its worker thread could not be stopped and was left running)"
    ) in result.stderr
    assert "exiting without waiting for the worker thread that blocks left behind" in result.stderr

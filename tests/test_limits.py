"""Limits that must hold at scale: open files under a low descriptor limit (issue: resume at scale)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import anyio
    import asyncflow

    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))  # macOS's default
    workdir, backend, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    p = asyncflow.Pipeline("wide")

    @p.task
    async def root() -> int:
        return 1

    def make(i):
        async def leaf(root: int) -> int:
            await anyio.sleep(0)
            return i + root
        return leaf

    for i in range(tasks):
        p.task(make(i), name=f"leaf_{i}")
    for attempt in ("first", "second"):
        result = p.run_sync(workdir=workdir, log=False, backend=backend)
        counts = {state.value: n for state, n in result.counts.items()}
        print(attempt, sorted(counts.items()), flush=True)
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_wide_fan_out_under_256_descriptors_checkpoints_everything_and_resumes_cached(
    tmp_path: Path, backend: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "work"), backend, "1000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "first [('succeeded', 1001)]",
        "second [('cached', 1001)]",
    ], proc.stderr[-3000:]
    assert "Too many open files" not in proc.stderr


async def test_too_many_open_files_is_retried_and_never_taken_for_a_missing_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import asyncflow._files
    import asyncflow._journal as store_module
    from asyncflow import CheckpointError, Pipeline, TaskState

    ran: list[str] = []
    p = Pipeline("fd")

    @p.task
    async def done() -> int:
        ran.append("done")
        return 1

    assert (await p.run(workdir=tmp_path, log=False)).ok
    real = asyncflow._files.read_bytes
    failures = {"left": 2}

    async def flaky(path: Any, **kwargs: Any) -> bytes:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await real(path, **kwargs)

    monkeypatch.setattr(store_module, "read_bytes", flaky)
    again = await p.run(workdir=tmp_path, log=False)
    assert again.tasks["done"].state is TaskState.CACHED and ran == ["done"]  # retried, then read

    async def broken(path: Any, **kwargs: Any) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module, "read_bytes", broken)
    failed = await p.run(workdir=tmp_path, log=False)
    run = failed.tasks["done"]
    assert run.state is TaskState.FAILED and ran == ["done"]  # not run again silently
    assert isinstance(run.error, CheckpointError)
    assert "cannot be read" in str(run.error) and "Input/output error" in str(run.error)


async def test_a_result_nested_too_deeply_fails_its_task_and_nothing_else(tmp_path: Path) -> None:
    from asyncflow import CheckpointError, Pipeline, TaskState

    p = Pipeline("deep")

    @p.task
    async def deep() -> list[Any]:
        value: list[Any] = []
        for _ in range(100_000):
            value = [value]
        return value

    @p.task
    async def sibling() -> int:
        await anyio.sleep(0.05)
        return 2

    result = await p.run(workdir=tmp_path, log=False)
    assert result.tasks["sibling"].state is TaskState.SUCCEEDED
    assert result.tasks["deep"].state is TaskState.FAILED
    assert isinstance(result.tasks["deep"].error, CheckpointError)
    assert "nested too deeply" in str(result.tasks["deep"].error)


async def test_a_checkpoint_line_nested_too_deeply_is_treated_as_corrupted(tmp_path: Path) -> None:
    from journal import append, journal_of

    from asyncflow import Pipeline, TaskState

    p = Pipeline("deepfile")

    @p.task
    async def value() -> int:
        return 3

    await p.run(workdir=tmp_path, log=False)
    nested = "[" * 200_000 + "]" * 200_000
    head = '{"task": "value", "key": "k", "at": 1.0, "ser": "json", "digest": "d", "size": 1'
    line = f'{head}, "result": {nested}}}\n'
    append(journal_of(tmp_path, "deepfile"), line)
    result = await p.run(workdir=tmp_path, log=False)
    # The deep line is ignored; the line before it still stands.
    assert result.tasks["value"].state is TaskState.CACHED and result.tasks["value"].result == 3


async def test_cancelled_while_thread_tasks_finish_no_downstream_task_starts(tmp_path: Path) -> None:
    """Thread tasks finishing after a cancellation are committed (shielded), but the task
    their commit readies must not start, even one that never awaits."""
    import functools
    import time

    from asyncflow import Pipeline, TaskState

    started: list[str] = []
    p = Pipeline("commit_cancel")

    def slow(i: int = 0) -> int:  # CPU-bound, like a model fit: it holds the GIL
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:
            pass
        return i

    for i in range(3):
        p.task(functools.partial(slow, i=i), name=f"slow{i}")

    @p.task(inputs={"parts": ["slow0", "slow1", "slow2"]})
    async def total(parts: list[int]) -> int:
        started.append("total")  # no await: nothing else could stop it once started
        return sum(parts)

    for attempt in range(3):  # the race it guards against does not strike every time
        with anyio.move_on_after(0.15):
            await p.run(workdir=tmp_path / str(attempt), log=False)
        assert started == []
    tmp_path = tmp_path / "0"
    rerun = await p.run(workdir=tmp_path, log=False)
    assert {n: t.state for n, t in rerun.tasks.items()} == {
        "slow0": TaskState.CACHED,
        "slow1": TaskState.CACHED,
        "slow2": TaskState.CACHED,
        "total": TaskState.SUCCEEDED,
    }

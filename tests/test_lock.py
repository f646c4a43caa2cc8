"""Two runs on one working directory: the second fails naming the first, or waits for it.

End to end with two real ``python -m asyncflow`` processes, and in-process through
``Pipeline.run(lock=...)`` on both backends.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from faults import cli, env, read_stderr_until, start, states, wait_for_file, write_pipeline

import asyncflow
from asyncflow import Event, MemoryStore, Pipeline, RunFinished, TaskCached, TaskStarted, WorkdirLockedError

PIPELINE = """
    import os
    from pathlib import Path

    import anyio

    import asyncflow

    MARKS = Path(os.environ["MARKS"])
    pipeline = asyncflow.Pipeline("lk")


    def note(what: str) -> None:
        with open(MARKS / "journal.txt", "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {what}\\n")


    @pipeline.task
    async def hold() -> int:
        note("hold start")
        (MARKS / f"hold.{os.getpid()}").touch()
        if os.environ.get("HOLD"):
            while not (MARKS / "release").exists():
                await anyio.sleep(0.01)
        note("hold end")
        return 1


    @pipeline.task(checkpoint=False)
    async def stamp(hold: int) -> int:
        note("stamp")
        return hold
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(pipeline file, working directory, marker directory)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    return write_pipeline(tmp_path, PIPELINE), tmp_path / "work", marks


def journal(marks: Path) -> list[tuple[int, str]]:
    lines = (marks / "journal.txt").read_text(encoding="utf-8").splitlines()
    return [(int(pid), what) for pid, what in (line.split(" ", 1) for line in lines)]


def test_second_process_fails_at_once_naming_the_run_that_holds_the_lock(
    setup: tuple[Path, Path, Path],
) -> None:
    path, workdir, marks = setup
    holder = start(path, "--workdir", workdir, environ=env(MARKS=str(marks), HOLD="1"))
    wait_for_file(marks / f"hold.{holder.pid}", holder)
    info = json.loads((workdir / ".lock.info").read_text())

    began = time.monotonic()
    second = cli(path, "--workdir", workdir, environ=env(MARKS=str(marks)))
    assert time.monotonic() - began < 20  # at once: no waiting for the holder
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith("asyncflow: error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr
    assert f"is in use by run {info['run_id']} (pid {holder.pid}, pipeline 'lk', started " in errors[0]
    assert "--lock wait" in errors[0]
    assert second.stdout == ""

    (marks / "release").touch()
    out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    assert f"run {info['run_id']} ok" in out
    assert {pid for pid, _ in journal(marks)} == {holder.pid}  # the second run ran nothing
    assert not (workdir / ".lock.info").exists()  # released
    assert [p.name for p in (workdir / "runs").iterdir()] == [info["run_id"]]  # and left no log


def test_second_process_with_lock_wait_runs_after_the_first_without_interleaving(
    setup: tuple[Path, Path, Path],
) -> None:
    path, workdir, marks = setup
    holder = start(path, "--workdir", workdir, environ=env(MARKS=str(marks), HOLD="1"))
    wait_for_file(marks / f"hold.{holder.pid}", holder)

    waiter = start(path, "--workdir", workdir, "--lock", "wait", environ=env(MARKS=str(marks)))
    lines = read_stderr_until(waiter, "waiting for it to finish")
    assert f"(pid {holder.pid}, pipeline 'lk'" in lines[-1]
    assert waiter.poll() is None
    (marks / "release").touch()

    _, err_holder = holder.communicate(timeout=30)
    out_waiter, err_waiter = waiter.communicate(timeout=30)
    assert holder.returncode == 0, err_holder
    assert waiter.returncode == 0, err_waiter
    assert states(out_waiter) == {"hold": "cached", "stamp": "succeeded"}  # it saw the first run's work
    pids = [pid for pid, _ in journal(marks)]
    assert pids == [holder.pid] * 3 + [waiter.pid]  # hold start, hold end, stamp; then stamp


def test_sigint_while_waiting_for_the_lock_stops_the_waiting_run(setup: tuple[Path, Path, Path]) -> None:
    path, workdir, marks = setup
    holder = start(path, "--workdir", workdir, environ=env(MARKS=str(marks), HOLD="1"))
    wait_for_file(marks / f"hold.{holder.pid}", holder)
    waiter = start(path, "--workdir", workdir, "--lock", "wait", environ=env(MARKS=str(marks)))
    read_stderr_until(waiter, "waiting for it to finish")

    waiter.send_signal(signal.SIGINT)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 130, err
    assert states(out) == {"hold": "cancelled", "stamp": "cancelled"}
    assert holder.poll() is None  # the holder is unaffected
    (marks / "release").touch()
    holder.communicate(timeout=30)
    assert holder.returncode == 0
    assert {pid for pid, _ in journal(marks)} == {holder.pid}


# -- in-process: Pipeline.run(lock=...) ----------------------------------------------------------


def holding_pipeline(started: anyio.Event, release: anyio.Event) -> Pipeline:
    p = Pipeline("p")

    @p.task
    async def hold() -> int:
        started.set()
        await release.wait()
        return 1

    @p.task
    async def after(hold: int) -> int:
        return hold + 1

    return p


async def test_second_run_in_process_fails_with_the_holders_run_id_and_pid(tmp_path: Path) -> None:
    started, release = anyio.Event(), anyio.Event()
    p = holding_pipeline(started, release)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: p.run(workdir=tmp_path, log=False, run_id="run-a"))
        await started.wait()
        with pytest.raises(WorkdirLockedError) as caught:
            await p.run(workdir=tmp_path, log=False)
        release.set()
    assert caught.value.holder is not None
    assert caught.value.holder["run_id"] == "run-a"
    assert caught.value.holder["pid"] == os.getpid()
    assert caught.value.holder["pipeline"] == "p"
    assert "run run-a (pid " in str(caught.value)
    assert caught.value.workdir == str(tmp_path)


async def test_wait_mode_starts_only_after_the_holder_finished_and_never_blocks_the_loop(
    tmp_path: Path,
) -> None:
    started, release = anyio.Event(), anyio.Event()
    p = holding_pipeline(started, release)
    events: list[tuple[str, Event]] = []
    second_done = anyio.Event()
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async def run(tag: str, **kwargs: Any) -> None:
        await p.run(workdir=tmp_path, log=False, listeners=[lambda e: events.append((tag, e))], **kwargs)
        if tag == "second":
            second_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "first")
        await started.wait()
        tg.start_soon(heartbeat)
        tg.start_soon(lambda: run("second", lock="wait"))
        await anyio.sleep(0.3)
        assert not any(tag == "second" for tag, _ in events)  # still waiting for the lock
        assert ticks >= 5  # the event loop kept running while it waited
        release.set()
        with anyio.fail_after(10):
            await second_done.wait()
        tg.cancel_scope.cancel()

    first_end = next(i for i, (tag, e) in enumerate(events) if tag == "first" and isinstance(e, RunFinished))
    second = [(i, e) for i, (tag, e) in enumerate(events) if tag == "second"]
    assert second[0][0] > first_end
    assert {e.task for _, e in second if isinstance(e, TaskCached)} == {"hold", "after"}
    assert not any(isinstance(e, TaskStarted) for _, e in second)


async def test_cancelling_a_run_that_waits_for_the_lock_is_prompt(tmp_path: Path) -> None:
    started, release = anyio.Event(), anyio.Event()
    p = holding_pipeline(started, release)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: p.run(workdir=tmp_path, log=False))
        await started.wait()
        began = anyio.current_time()
        with anyio.move_on_after(0.2) as scope:
            await p.run(workdir=tmp_path, log=False, lock="wait")
        assert scope.cancelled_caught
        assert anyio.current_time() - began < 2  # within a poll interval, not at the holder's end
        release.set()
    result = await p.run(workdir=tmp_path, log=False)  # the lock is free again
    assert result.ok


async def test_lock_is_released_on_every_exit_path(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task
    async def fails() -> int:
        raise ValueError("no")

    @p.task
    async def slow() -> int:
        await anyio.sleep(10)
        return 1

    async def lock_is_free() -> bool:
        q = Pipeline("q")
        await q.run(workdir=tmp_path, log=False)  # raises WorkdirLockedError if still held
        return not (tmp_path / ".lock.info").exists()

    with anyio.move_on_after(0.1):  # the caller cancels the run
        await p.run(workdir=tmp_path, log=False)
    assert await lock_is_free()

    result = await p.run(workdir=tmp_path, log=False, fail_fast=True)  # a failed run
    assert not result.ok
    assert await lock_is_free()

    q = Pipeline("q2")

    @q.task
    async def up() -> int:
        return 1

    @q.task
    async def down(up: int) -> int:
        return up

    with pytest.raises(asyncflow.MissingCheckpointError):  # raised while the lock is held
        await q.run(workdir=tmp_path / "fresh", log=False, only=["down"])
    await q.run(workdir=tmp_path / "fresh", log=False)  # free again
    assert not (tmp_path / "fresh" / ".lock.info").exists()


async def test_runs_without_file_checkpoints_take_no_lock(tmp_path: Path) -> None:
    started, release = anyio.Event(), anyio.Event()
    p = holding_pipeline(started, release)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: p.run(workdir=tmp_path, log=False))
        await started.wait()
        q = Pipeline("q")

        @q.task
        async def one() -> int:
            return 1

        assert (await q.run(workdir=tmp_path, log=False, checkpoints=False)).ok
        assert (await q.run(workdir=tmp_path, log=False, store=MemoryStore())).ok
        assert (await q.run(workdir=tmp_path, log=False, lock=None)).ok
        release.set()


async def test_unknown_lock_mode_is_a_value_error(tmp_path: Path) -> None:
    p = Pipeline("p")
    with pytest.raises(ValueError, match="lock must be 'fail', 'wait' or None, not 'maybe'"):
        await p.run(workdir=tmp_path, log=False, lock="maybe")  # type: ignore[arg-type]


FULL_DISK = """
import builtins, errno, io, os, runpy, sys

FULL = os.path.realpath(os.environ["FULL_DIR"])
real_open = io.open


class NoSpace:
    # A file on a full disk: it can be created, but no byte can be written to it.
    def __init__(self, raw):
        self.raw = raw

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()


def full_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    path = os.path.realpath(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
    if path.startswith(FULL + os.sep) and any(m in mode for m in "wax+"):
        return NoSpace(f)
    return f


io.open = builtins.open = full_open
sys.argv = ["asyncflow", *sys.argv[1:]]
runpy.run_module("asyncflow", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_disk_full_at_start_is_one_line_and_leaves_nothing_behind(tmp_path: Path, backend: str) -> None:
    import subprocess
    import sys

    from faults import ROOT, env

    wrapper = tmp_path / "full_disk.py"
    wrapper.write_text(FULL_DISK, encoding="utf-8")
    workdir = tmp_path / "w"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, str(wrapper), "pipelines.prices", "--workdir", str(workdir), "--backend", backend],
        cwd=ROOT,
        env=env(FULL_DIR=str(workdir)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"asyncflow: error: cannot write to working directory {str(workdir)!r}: No space left on device"
    ]
    assert result.stdout == ""
    left = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    assert left == [".lock"]  # the OS lock file itself, which every run keeps; no .part, no empty run.log

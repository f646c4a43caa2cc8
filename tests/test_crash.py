"""``kill -9`` in the middle of a run, and in the middle of a checkpoint write.

A SIGKILL cannot be caught: whatever the process was doing stops. These tests kill real
``python -m asyncflow`` subprocesses and check that every checkpoint left is the old one or
the new one, never half of one (the journal is whole, every result file has the digest its
line records), that the next run loads every complete checkpoint, removes the temporary
files of the interrupted writes, and re-runs only what is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import (
    checkpoints,
    cli,
    env,
    journal_lines,
    leftovers,
    pipeline_folder,
    start,
    states,
    wait_for_file,
    wait_until,
    write_pipeline,
)

STALLING = """
    import os
    import re
    import time
    from pathlib import Path

    import asyncflow

    MARKS = Path(os.environ["MARKS"])
    STALL = os.environ.get("STALL_FILE")
    if STALL:
        # Injected slow write: the fsync of the first file whose name matches STALL stops
        # (the temporary file of a result, after it is written and before it is renamed;
        # or the journal, after the batch is appended and before it is durable).
        _fsync = os.fsync

        def _stalling_fsync(fd: int) -> None:
            if re.fullmatch(STALL, os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))):
                (MARKS / "stalled").touch()
                time.sleep(600)
            _fsync(fd)

        os.fsync = _stalling_fsync

    pipeline = asyncflow.Pipeline("crash", params={"v": 1})


    @pipeline.task
    async def a() -> int:
        return 1


    @pipeline.task
    async def b(a: int, params) -> dict:
        return {"v": params["v"], "blob": "y" * 200_000}  # over 16 KiB: a file of its own


    @pipeline.task
    async def c(b: dict) -> int:
        return b["v"] * 10


    @pipeline.task
    async def d() -> str:
        return "independent"
"""

MANY = """
    import os

    import anyio

    import asyncflow

    pipeline = asyncflow.Pipeline("many")
    for i in range(60):
        async def step(previous: object = None, i: int = i) -> dict:
            await anyio.sleep(0.005)
            if i >= 30 and not os.environ.get("FINISH"):
                await anyio.sleep(600)  # the first run never gets past t29: it is killed
            return {"i": i, "blob": "z" * 50_000}

        inputs = {"previous": f"t{i - 3}"} if i >= 3 else None
        pipeline.task(step, name=f"t{i}", inputs=inputs)
"""

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="the slow-write injection reads /proc/self/fd (Linux)"
)


@needs_proc
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_kill_during_checkpoint_write_keeps_old_checkpoint_and_rerun_cleans_up(
    tmp_path: Path, backend: str
) -> None:
    path, workdir, marks = write_pipeline(tmp_path, STALLING), tmp_path / "work", tmp_path / "marks"
    marks.mkdir()
    base = ("--workdir", workdir, "--backend", backend)
    first = cli(path, *base, environ=env(MARKS=str(marks)))
    assert first.returncode == 0, first.stderr
    before, lines = checkpoints(workdir), journal_lines(workdir)
    assert before["b"]["v"] == 1
    folder = pipeline_folder(workdir, "crash")
    [old_file] = [line["file"] for line in lines if line["task"] == "b"]
    old_bytes = (folder / old_file).read_bytes()

    # b's new result stops inside the fsync of its temporary file, before the rename.
    stall = r"\.b\.[0-9a-f]{16}\.json\.[0-9a-f]{8}\.tmp"
    proc = start(path, *base, "--param", "v=2", environ=env(MARKS=str(marks), STALL_FILE=stall))
    wait_for_file(marks / "stalled", proc)
    proc.kill()  # SIGKILL, mid-write
    proc.communicate(timeout=30)
    assert proc.returncode == -9

    # The journal is unchanged and whole; b's checkpoint is the old one, its file intact.
    assert journal_lines(workdir) == lines
    assert checkpoints(workdir) == before
    assert (folder / old_file).read_bytes() == old_bytes
    [tmp] = leftovers(workdir)
    assert tmp.startswith("crash/.b.") and tmp.endswith(".tmp")
    # And the torn temporary file of a compaction of the journal, killed mid-write.
    (folder / ".journal.jsonl.0123abcd.tmp").write_text('{"task": "c", "key": "')
    assert (workdir / ".lock.info").exists()  # the killed run's record; its OS lock is gone

    rerun = cli(path, *base, "--param", "v=2", environ=env(MARKS=str(marks)))
    assert rerun.returncode == 0, rerun.stderr
    assert states(rerun.stdout) == {"a": "cached", "b": "succeeded", "c": "succeeded", "d": "cached"}
    assert "removed 2 temporary files left by an interrupted run" in rerun.stderr
    assert leftovers(workdir) == []
    after = checkpoints(workdir)
    assert (after["b"]["v"], after["c"], after["d"]) == (2, 20, "independent")


@needs_proc
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_kill_before_the_journal_is_durable_leaves_whole_lines_only(tmp_path: Path, backend: str) -> None:
    # Killed inside the journal's fsync: the batch was appended (the kernel has it) but the
    # run never reported b succeeded. What is left must be b's old checkpoint or its new
    # one, whole, with the file its line names: here the new one, since a SIGKILL does not
    # lose what was written to the kernel.
    path, workdir, marks = write_pipeline(tmp_path, STALLING), tmp_path / "work", tmp_path / "marks"
    marks.mkdir()
    base = ("--workdir", workdir, "--backend", backend)
    assert cli(path, *base, environ=env(MARKS=str(marks))).returncode == 0
    before = checkpoints(workdir)

    proc = start(path, *base, "--param", "v=2", environ=env(MARKS=str(marks), STALL_FILE="journal.jsonl"))
    wait_for_file(marks / "stalled", proc)
    proc.kill()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -9
    assert "succeeded" not in out  # no summary: the run never got that far

    killed = checkpoints(workdir)  # fails on a torn line or a half-written result file
    assert killed == {**before, "b": {"v": 2, "blob": "y" * 200_000}}
    assert leftovers(workdir) == []

    rerun = cli(path, *base, "--param", "v=2", environ=env(MARKS=str(marks)))
    assert rerun.returncode == 0, rerun.stderr
    assert states(rerun.stdout) == {"a": "cached", "b": "cached", "c": "succeeded", "d": "cached"}
    assert checkpoints(workdir)["c"] == 20


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_kill_at_a_random_moment_rerun_caches_exactly_the_complete_checkpoints(
    tmp_path: Path, backend: str
) -> None:
    path, workdir = write_pipeline(tmp_path, MANY), tmp_path / "work"
    proc = start(path, "--workdir", workdir, "--backend", backend, "--max-concurrency", "4")
    journal = pipeline_folder(workdir, "many") / "journal.jsonl"

    def enough() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was killed: {proc.communicate()}")
        return journal.exists() and journal.read_bytes().count(b"\n") >= 15

    wait_until(enough, "15 checkpoints")
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -9

    survived = set(checkpoints(workdir))  # fails on a torn line or a half-written result file
    assert 15 <= len(survived) <= 30
    rerun = cli(path, "--workdir", workdir, "--backend", backend, environ=env(FINISH="1"))
    assert rerun.returncode == 0, rerun.stderr
    final = states(rerun.stdout)
    assert {t for t, s in final.items() if s == "cached"} == survived
    assert {t for t, s in final.items() if s == "succeeded"} == {f"t{i}" for i in range(60)} - survived
    assert leftovers(workdir) == []
    assert set(checkpoints(workdir)) == {f"t{i}" for i in range(60)}

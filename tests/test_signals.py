"""SIGINT and SIGTERM to ``python -m asyncflow``: real signals to a real subprocess.

The pipeline below runs ``first -> second -> slow -> last`` plus an independent ``idle``.
``slow`` and ``idle`` create a marker file when they start and then sleep; ``slow`` records
its cleanup (in ``finally``) with another marker. Each test waits for the start markers,
sends the signal, and checks the exit code, the summary, the checkpoints and the rerun.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from faults import (
    checkpoints,
    cli,
    env,
    leftovers,
    read_stderr_until,
    start,
    states,
    wait_for_file,
    wait_until,
    write_pipeline,
)

PIPELINE = """
    import os
    import time
    from pathlib import Path

    import anyio

    import asyncflow

    MARKS = Path(os.environ["MARKS"])
    SLOW_S = float(os.environ.get("SLOW_S", "60"))
    pipeline = asyncflow.Pipeline("sig")


    @pipeline.task
    async def first() -> int:
        return 1


    @pipeline.task
    async def second(first: int) -> dict:
        return {"value": first + 1, "blob": "x" * 100_000}


    @pipeline.task
    async def slow(second: dict) -> int:
        (MARKS / "slow.started").touch()
        try:
            await anyio.sleep(SLOW_S)
        finally:
            cleanup_s = float(os.environ.get("CLEANUP_S", "0.1"))
            if os.environ.get("CLEANUP", "await") == "block":
                time.sleep(cleanup_s)  # blocks the event loop: only a signal handler can act
            else:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(cleanup_s)
            (MARKS / "slow.cleaned").touch()
        return second["value"] + 1


    @pipeline.task
    async def idle() -> str:
        (MARKS / "idle.started").touch()
        await anyio.sleep(SLOW_S)
        return "idle"


    @pipeline.task
    async def last(slow: int, idle: str) -> int:
        return slow
"""

BACKENDS = ["asyncio", "trio"]


@pytest.fixture
def flow(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(pipeline file, working directory, marker directory)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    return write_pipeline(tmp_path, PIPELINE), tmp_path / "work", marks


def interrupt_when_running(
    flow: tuple[Path, Path, Path], *args: str, signum: signal.Signals = signal.SIGINT, **environ: str
) -> tuple[subprocess.Popen[str], float]:
    """Start the pipeline, wait until ``slow`` and ``idle`` run, send ``signum``."""
    path, workdir, marks = flow
    proc = start(path, "--workdir", workdir, *args, environ=env(MARKS=str(marks), **environ))
    wait_for_file(marks / "slow.started", proc)
    wait_for_file(marks / "idle.started", proc)
    proc.send_signal(signum)
    return proc, time.monotonic()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_cancels_running_tasks_keeps_checkpoints_and_the_rerun_resumes(
    flow: tuple[Path, Path, Path], backend: str, signum: signal.Signals, code: int
) -> None:
    path, workdir, marks = flow
    proc, _ = interrupt_when_running(flow, "--backend", backend, signum=signum)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == code, err
    assert (marks / "slow.cleaned").exists()  # the cancelled task's finally block ran
    assert states(out) == {
        "first": "succeeded",
        "second": "succeeded",
        "slow": "cancelled",
        "idle": "cancelled",
        "last": "cancelled",
    }
    assert f"interrupted by {signum.name} while running" in out
    assert f"interrupted by {signum.name} before it started" in out  # last
    assert f"asyncflow: interrupted by {signum.name}; cancelled: slow, idle, last" in err
    assert "Traceback" not in out + err
    assert checkpoints(workdir)["second"]["value"] == 2
    assert set(checkpoints(workdir)) == {"first", "second"}
    assert leftovers(workdir) == []

    rerun = cli(path, "--workdir", workdir, "--backend", backend, environ=env(MARKS=str(marks), SLOW_S="0"))
    assert rerun.returncode == 0, rerun.stderr
    assert states(rerun.stdout) == {
        "first": "cached",
        "second": "cached",
        "slow": "succeeded",
        "idle": "succeeded",
        "last": "succeeded",
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_cleanup_longer_than_the_grace_period_is_abandoned(
    flow: tuple[Path, Path, Path], backend: str
) -> None:
    _, workdir, marks = flow
    proc, sent = interrupt_when_running(
        flow, "--backend", backend, "--grace", "0.5", signum=signal.SIGTERM, CLEANUP_S="60"
    )
    out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent

    assert proc.returncode == 143, err
    assert 0.5 <= elapsed < 15
    assert not (marks / "slow.cleaned").exists()
    assert states(out)["slow"] == "cancelled"
    assert "did not finish within the 0.5 s grace period" in out + err
    assert set(checkpoints(workdir)) == {"first", "second"}
    assert leftovers(workdir) == []
    assert_interrupted_run_recorded(workdir)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cleanup", ["await", "block"])
def test_second_sigint_stops_at_once_even_when_the_cleanup_blocks_the_loop(
    flow: tuple[Path, Path, Path], backend: str, cleanup: str
) -> None:
    workdir = flow[1]
    proc, _ = interrupt_when_running(
        flow, "--backend", backend, "--grace", "60", CLEANUP=cleanup, CLEANUP_S="60"
    )
    read_stderr_until(proc, "received SIGINT")
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 10  # far below the 60 s of cleanup and of grace
    assert "stopped at once by a second SIGINT" in out + err
    assert states(out)["slow"] == "cancelled"
    assert set(checkpoints(workdir)) == {"first", "second"}
    assert leftovers(workdir) == []
    assert_interrupted_run_recorded(workdir)


def assert_interrupted_run_recorded(workdir: Path) -> None:
    """A run the process had to abandon still leaves its record, status "interrupted"."""
    (record_file,) = (workdir / "runs").glob("*/record.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "interrupted"
    assert record["tasks"]["first"]["state"] == "succeeded"
    assert record["tasks"]["slow"]["attempts"][0]["finished_at_s"] is None


def test_grace_option_documents_its_default() -> None:
    result = cli("--help")
    assert result.returncode == 0
    assert "--grace SECONDS" in result.stdout
    assert "(default: 5)" in " ".join(result.stdout.split())


THREADED = """
    import os
    import time
    from pathlib import Path

    import asyncflow

    MARKS = Path(os.environ["MARKS"])
    pipeline = asyncflow.Pipeline("threaded")


    @pipeline.task
    def crunch() -> int:
        (MARKS / "crunch.started").touch()
        time.sleep(1.0)  # a thread cannot be cancelled: it runs to its end
        return 42


    @pipeline.task
    async def report(crunch: int) -> int:
        return crunch
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_thread_running_at_the_signal_finishes_within_the_grace_and_is_checkpointed(
    tmp_path: Path, backend: str
) -> None:
    marks, workdir = tmp_path / "marks", tmp_path / "work"
    marks.mkdir()
    path = write_pipeline(tmp_path, THREADED)
    proc = start(path, "--workdir", workdir, "--backend", backend, environ=env(MARKS=str(marks)))
    wait_for_file(marks / "crunch.started", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 130, err
    assert states(out) == {"crunch": "succeeded", "report": "cancelled"}
    assert checkpoints(workdir) == {"crunch": 42}
    assert leftovers(workdir) == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("kind", ["async def", "def"])
def test_a_task_raising_keyboardinterrupt_stops_the_run_alike_on_both_backends(
    tmp_path: Path, backend: str, kind: str
) -> None:
    path = write_pipeline(
        tmp_path,
        f"""
        import anyio

        import asyncflow

        pipeline = asyncflow.Pipeline("ki")


        @pipeline.task
        async def ok() -> int:
            return 1


        @pipeline.task
        async def other(ok: int) -> int:
            await anyio.sleep(30)
            return ok


        @pipeline.task
        {kind} boom(ok: int) -> int:
            raise KeyboardInterrupt
        """,
    )
    workdir = tmp_path / "w"
    began = time.monotonic()
    result = cli(path, "--workdir", workdir, "--backend", backend)
    assert time.monotonic() - began < 20  # `other` was cancelled, not awaited for 30 s
    assert result.returncode == 130, result.stderr
    assert states(result.stdout) == {"ok": "succeeded", "other": "cancelled", "boom": "failed"}
    assert "asyncflow: task 'boom' raised KeyboardInterrupt: the run stopped" in result.stderr
    for raw in ("Traceback", "ExceptionGroup", "  File "):
        assert raw not in result.stdout + result.stderr
    assert set(checkpoints(workdir)) == {"ok"}


FAN_IN_OF_CPU_THREADS = """
    import functools
    import os
    import time
    from pathlib import Path

    import asyncflow

    pipeline = asyncflow.Pipeline("fan_in")


    def crunch(i: int = 0) -> int:
        Path(os.environ["READY_DIR"], f"c{i}").touch()
        end = time.perf_counter() + 1.5
        while time.perf_counter() < end:  # CPU-bound, like a model fit
            pass
        return i


    for i in range(3):
        pipeline.task(functools.partial(crunch, i=i), name=f"c{i}")


    @pipeline.task(inputs={"parts": ["c0", "c1", "c2"]})
    async def total(parts: list[int]) -> int:
        return sum(parts)  # never awaits: only the runner can keep it from starting
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigint_while_cpu_threads_finish_keeps_their_fan_in_from_starting(
    tmp_path: Path, backend: str
) -> None:
    write_pipeline(tmp_path, FAN_IN_OF_CPU_THREADS)
    for attempt in range(3):  # the race this guards against does not strike every time
        ready = tmp_path / f"ready{attempt}"
        ready.mkdir()
        proc = start(
            "flow", "--workdir", tmp_path / f"work{attempt}", "--backend", backend,
            cwd=tmp_path, environ={"READY_DIR": str(ready)},
        )  # fmt: skip
        wait_until(lambda: len(list(ready.iterdir())) == 3, "the three threads to start")  # noqa: B023
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        found = states(out)
        assert found["total"] == "cancelled", (found, err)
        assert {found[f"c{i}"] for i in range(3)} == {"succeeded"}, (found, err)


MAPPED = """
import os
from pathlib import Path

import anyio

import asyncflow

pipeline = asyncflow.Pipeline("napping")


@pipeline.task
async def items() -> list[int]:
    return list(range(30))


@pipeline.task(inputs={"n": asyncflow.each("items")})
async def nap(n: int) -> int:
    if n >= 5:
        (Path(os.environ["MARKS"]) / f"nap{n}.started").touch()
        await anyio.sleep(60)
    return n
"""


def test_an_interrupted_mapped_run_counts_instances_and_caps_the_cancelled_list(tmp_path: Path) -> None:
    """The summary, --json and the log agree (the mapped task is not counted with its
    instances), and stderr names at most 10 cancelled tasks, then how many more."""
    marks = tmp_path / "marks"
    marks.mkdir()
    path = write_pipeline(tmp_path, MAPPED)
    proc = start(path, "--workdir", tmp_path / "work", "--json", environ=env(MARKS=str(marks)))
    wait_for_file(marks / "nap29.started", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert json.loads(out)["counts"] == {"succeeded": 6, "cancelled": 25}  # items + nap[0..4]; nap[5..29]
    line = next(x for x in err.splitlines() if x.startswith("asyncflow: interrupted by SIGINT"))
    assert "and 16 more;" in line and len(line) < 400  # nap and nap[5..29]: 26 named, 10 shown
    assert "finished in" in err and "6 succeeded, 25 cancelled" in err

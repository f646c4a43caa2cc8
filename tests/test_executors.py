"""The executor seam (asyncflow._executors): one contract that every executor passes.

:class:`ExecutorContract` states what a run promises whatever executes its plain ``def``
tasks: results flow between local coroutine tasks and executor tasks, failed attempts are
retried by the runner, a timeout or a cancellation stops the work, a function, argument
or result that cannot travel fails the task with a :class:`~asyncflow.TaskPicklingError`
naming it. It runs here for :class:`~asyncflow.LocalExecutor` (threads) and
:class:`~asyncflow.ProcessExecutor`, on asyncio and on trio, and in ``test_dask.py`` for
:class:`~asyncflow.DaskExecutor` (like dask's own ``local.py`` test suite).

The task functions are module-level so that worker processes can import this module to
unpickle them. Tasks that must block long wait on a "release" file that each test
creates when it ends, so an abandoned thread (or a Dask worker thread, which cannot be
interrupted) never outlives its test by more than a moment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from journal import saved

import asyncflow
from asyncflow import (
    AttemptFailed,
    Event,
    Executor,
    ForgottenAwaitError,
    LocalExecutor,
    Pipeline,
    ProcessExecutor,
    RunResult,
    TaskPicklingError,
    TaskStarted,
    TaskState,
    TaskTimeoutError,
)

ROOT = Path(__file__).resolve().parent.parent

# -- task functions (module level: picklable by reference) ------------------------------------


def square_all(numbers: list[int]) -> list[int]:
    return [n * n for n in numbers]


def pid_of_worker() -> int:
    return os.getpid()


def square_with_pid(n: int) -> list[int]:
    return [n * n, os.getpid()]


def flaky(params: dict[str, Any]) -> str:
    """Fail the first two attempts; the count lives in a file, shared by every process."""
    counter = Path(params["dir"]) / "flaky.count"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    if count < 3:
        raise ConnectionError(f"attempt {count} failed")
    return f"ok after {count} attempts"


def blocking(params: dict[str, Any]) -> int:
    """Write this process's pid, then wait (at most 30 s) for the test's release file."""
    directory = Path(params["dir"])
    (directory / "blocking.tmp").write_text(str(os.getpid()))
    (directory / "blocking.tmp").replace(directory / "blocking.pid")  # never seen half-written
    deadline = time.monotonic() + 30
    while not (directory / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.getpid()


def make_lock() -> Any:
    return threading.Lock()


def describe_context(context: asyncflow.RunContext) -> dict[str, Any]:
    context.logger.info("running in process {}", os.getpid())
    return {"task": context.task, "attempt": context.attempt, "run_id": context.run_id}


async def _never_awaited() -> int:
    return 1


def forgets_await() -> Any:
    return _never_awaited()


# -- helpers ----------------------------------------------------------------------------------


async def run(p: Pipeline, workdir: Path, executor: Executor, **kwargs: Any) -> RunResult:
    """Run ``p`` on ``executor`` without logging and, unless asked, without checkpoints."""
    kwargs.setdefault("checkpoints", False)
    kwargs.setdefault("log", False)
    return await p.run(workdir=workdir, executor=executor, params=kwargs.pop("params", None), **kwargs)


async def poll(condition: Callable[[], Awaitable[bool] | bool], what: str, seconds: float = 30) -> None:
    """Wait until ``condition()`` is true, checking every 20 ms, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        outcome = condition()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {seconds} s for {what}")
        await anyio.sleep(0.02)


async def wait_for_file(path: Path) -> str:
    await poll(anyio.Path(path).exists, f"{path} to exist")
    return await anyio.Path(path).read_text()


# -- the contract -----------------------------------------------------------------------------


class ExecutorContract:
    """What every executor must do; a subclass provides the ``executor`` fixture."""

    remote = True
    """Whether plain tasks run in another process (and so their calls are pickled)."""

    @pytest.fixture
    def release(self, tmp_path: Path) -> Iterator[Path]:
        """The test's directory; its ``release`` file, created when the test ends,
        unblocks :func:`blocking` wherever it still runs."""
        yield tmp_path
        (tmp_path / "release").touch()

    async def check_work_stopped(self, executor: Executor, pid: int, task: str) -> None:
        """After a timeout or a cancellation: assert that the task's work was stopped."""

    async def test_results_flow_between_local_coroutines_and_executor_tasks(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        p = Pipeline("mixed")

        @p.task
        async def numbers() -> list[int]:
            await anyio.lowlevel.checkpoint()
            return [1, 2, 3, 4]

        p.task(square_all, name="squares", inputs={"numbers": "numbers"})
        p.task(pid_of_worker, name="where")

        @p.task
        async def total(squares: list[int], where: int) -> dict[str, int]:
            return {"sum": sum(squares), "where": where}

        result = await run(p, tmp_path, executor, checkpoints=True)
        assert result.ok, result.errors
        assert result.tasks["squares"].result == [1, 4, 9, 16]
        assert result.tasks["total"].result["sum"] == 30
        assert (result.tasks["where"].result != os.getpid()) is self.remote
        # Checkpoints are written here, by the runner, and a rerun loads them.
        assert "squares" in saved(tmp_path, "mixed")
        again = await run(p, tmp_path, executor, checkpoints=True)
        assert again.counts == {TaskState.CACHED: 4}

    async def test_instances_of_a_mapped_task_are_submitted_like_tasks(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        p = Pipeline("mapped")

        @p.task
        async def numbers() -> list[int]:
            return [1, 2, 3]

        p.task(square_with_pid, name="square", inputs={"n": asyncflow.each("numbers")})

        @p.task
        async def total(square: list[list[int]]) -> int:
            return sum(s for s, _ in square)

        result = await run(p, tmp_path, executor, checkpoints=True)
        assert result.ok, result.errors
        assert result.tasks["total"].result == 14
        pids = {pid for _, pid in result.tasks["square"].result}
        assert (os.getpid() not in pids) is self.remote
        assert [t.attempts for t in result.instances("square")] == [1, 1, 1]
        again = await run(p, tmp_path, executor, checkpoints=True)
        assert again.counts == {TaskState.CACHED: 5}

    async def test_task_declared_local_stays_in_this_process(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        p = Pipeline("placement")
        p.task(pid_of_worker, name="pinned", executor="local")
        p.task(pid_of_worker, name="free")
        result = await run(p, tmp_path, executor)
        assert result.ok, result.errors
        assert result.tasks["pinned"].result == os.getpid()
        assert (result.tasks["free"].result != os.getpid()) is self.remote

    async def test_failed_attempts_are_retried_by_the_runner(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        p = Pipeline("retry", params={"dir": str(tmp_path)})
        p.task(flaky, name="flaky", retries=2, retry_delay=0.0)
        events: list[Event] = []
        result = await run(p, tmp_path, executor, listeners=[events.append])
        assert result.ok, result.errors
        assert result.tasks["flaky"].result == "ok after 3 attempts"
        assert result.tasks["flaky"].attempts == 3
        failures = [e for e in events if isinstance(e, AttemptFailed)]
        assert [type(e.error) for e in failures] == [ConnectionError, ConnectionError]
        assert str(failures[0].error) == "attempt 1 failed"

    async def test_timeout_fails_the_attempt_and_stops_the_work(
        self, executor: Executor, release: Path
    ) -> None:
        p = Pipeline("timeout", params={"dir": str(release)})
        p.task(blocking, name="slow", timeout=1.0)
        start = time.monotonic()
        result = await run(p, release, executor)
        assert time.monotonic() - start < 15
        run_ = result.tasks["slow"]
        assert run_.state is TaskState.FAILED
        assert isinstance(run_.error, TaskTimeoutError)
        assert run_.error.task == "slow"
        pid = int(await wait_for_file(release / "blocking.pid"))
        await self.check_work_stopped(executor, pid, "slow")

    async def test_cancelling_the_run_stops_the_work(self, executor: Executor, release: Path) -> None:
        p = Pipeline("cancel", params={"dir": str(release)})
        p.task(blocking, name="slow")
        started = anyio.Event()

        def listener(event: Event) -> None:
            if isinstance(event, TaskStarted):
                started.set()

        results: list[RunResult] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def run_it() -> None:
                    results.append(await run(p, release, executor, listeners=[listener]))

                tg.start_soon(run_it)
                await started.wait()
                pid = int(await wait_for_file(release / "blocking.pid"))
                if not self.remote:
                    (release / "release").touch()  # a thread cannot be stopped: let it end
                tg.cancel_scope.cancel()
        if self.remote:
            assert results == []
            await self.check_work_stopped(executor, pid, "slow")

    async def test_unpicklable_result_fails_naming_the_task_and_is_not_retried(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        p = Pipeline("result")
        p.task(make_lock, name="locked", retries=2, retry_delay=0.0, checkpoint=False)
        result = await run(p, tmp_path, executor)
        run_ = result.tasks["locked"]
        if not self.remote:
            assert run_.state is TaskState.SUCCEEDED  # nothing to pickle in a thread
            return
        assert run_.state is TaskState.FAILED
        assert run_.attempts == 1
        assert isinstance(run_.error, TaskPicklingError)
        assert run_.error.task == "locked"
        message = str(run_.error)
        assert "'locked'" in message and "result" in message and "lock" in message

    async def test_unpicklable_argument_fails_naming_the_task(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        p = Pipeline("argument")

        @p.task(checkpoint=False)
        async def lock() -> Any:
            return threading.Lock()

        p.task(pid_of_worker, name="after_lock", after=["lock"])
        p.task(square_all, name="squares", inputs={"numbers": "lock"})
        result = await run(p, tmp_path, executor)
        assert result.tasks["after_lock"].state is TaskState.SUCCEEDED  # no data: nothing to send
        run_ = result.tasks["squares"]
        assert run_.state is TaskState.FAILED
        if not self.remote:
            assert isinstance(run_.error, TypeError)  # the function's own error, iterating a lock
            return
        assert isinstance(run_.error, TaskPicklingError)
        assert "task 'squares' cannot be sent to" in str(run_.error)
        assert run_.error.__cause__ is not None

    async def test_unpicklable_function_fails_naming_the_task(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        lock = threading.Lock()

        def closure() -> bool:
            with lock:
                return True

        p = Pipeline("function")
        p.task(closure, name="closure")
        result = await run(p, tmp_path, executor)
        run_ = result.tasks["closure"]
        if not self.remote:
            assert run_.result is True
            return
        assert run_.state is TaskState.FAILED
        assert isinstance(run_.error, TaskPicklingError)
        assert "task 'closure' cannot be sent to" in str(run_.error)
        assert "executor='local'" in str(run_.error)

    async def test_context_reaches_the_task(self, executor: Executor, tmp_path: Path) -> None:
        p = Pipeline("context")
        p.task(describe_context, name="ctx")
        result = await run(p, tmp_path, executor, run_id="run-42")
        assert result.ok, result.errors
        assert result.tasks["ctx"].result == {"task": "ctx", "attempt": 1, "run_id": "run-42"}

    async def test_returning_a_coroutine_is_a_forgotten_await(
        self, executor: Executor, tmp_path: Path
    ) -> None:
        p = Pipeline("await")
        p.task(forgets_await, name="forgot", retries=2, retry_delay=0.0, checkpoint=False)
        result = await run(p, tmp_path, executor)
        run_ = result.tasks["forgot"]
        assert isinstance(run_.error, ForgottenAwaitError)
        assert run_.attempts == 1
        assert "'forgot' returned coroutine object" in str(run_.error)


class TestLocalExecutor(ExecutorContract):
    """Worker threads of this process: the control for the contract."""

    remote = False

    @pytest.fixture
    def executor(self) -> Executor:
        return LocalExecutor()


class TestProcessExecutor(ExecutorContract):
    """anyio's worker processes, on asyncio and on trio."""

    @pytest.fixture
    def executor(self) -> Executor:
        return ProcessExecutor(max_workers=2)

    async def check_work_stopped(self, executor: Executor, pid: int, task: str) -> None:
        # anyio kills the worker (SIGKILL) and reaps it before the cancellation propagates.
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- choosing an executor ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("local", LocalExecutor), ("processes", ProcessExecutor), ("dask", asyncflow.DaskExecutor)],
)
def test_executor_names_resolve_to_executors(spec: str, kind: type) -> None:
    from asyncflow._executors import resolve_executor

    assert isinstance(resolve_executor(spec), kind)
    assert resolve_executor(None) is None
    custom = ProcessExecutor(max_workers=3)
    assert resolve_executor(custom) is custom


async def test_unknown_executor_name_is_refused_before_anything_runs(tmp_path: Path) -> None:
    p = Pipeline("p")
    p.task(pid_of_worker, name="t")
    with pytest.raises(ValueError, match="unknown executor 'dusk'; did you mean 'dask'"):
        await p.run(workdir=tmp_path / "w", executor="dusk", log=False)
    assert not (tmp_path / "w").exists()


def test_task_executor_option_accepts_only_local() -> None:
    p = Pipeline("p")
    with pytest.raises(asyncflow.PipelineDefinitionError, match="executor must be 'local'"):
        p.task(pid_of_worker, name="t", executor="dask")  # type: ignore[call-overload]


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_process_executor_refuses_a_bad_worker_count(workers: Any) -> None:
    with pytest.raises(ValueError, match="max_workers must be a positive int"):
        ProcessExecutor(max_workers=workers)


def test_executors_are_immutable_configuration() -> None:
    executor = ProcessExecutor(max_workers=2)
    with pytest.raises(AttributeError):
        executor.max_workers = 3  # type: ignore[misc]
    assert executor == ProcessExecutor(max_workers=2)
    assert isinstance(executor, Executor) and isinstance(LocalExecutor(), Executor)


async def test_process_executor_limits_the_workers_running_at_once(tmp_path: Path) -> None:
    p = Pipeline("limit")
    for i in range(4):
        p.task(pid_of_worker, name=f"t{i}")
    result = await run(p, tmp_path, ProcessExecutor(max_workers=1))
    assert result.ok, result.errors
    assert len({r.result for r in result.tasks.values()}) == 1  # one worker, reused


def test_a_main_script_that_breaks_in_workers_fails_the_run_before_any_task(tmp_path: Path) -> None:
    # anyio's workers re-run the main script by path; a relative import there cannot work.
    package = tmp_path / "app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text("def double(x: int = 2) -> int:\n    return 2 * x\n")
    (package / "__main__.py").write_text(
        textwrap.dedent(
            """
            import asyncflow
            from .tasks import double

            pipeline = asyncflow.Pipeline("app")
            pipeline.task(double)
            if __name__ == "__main__":
                try:
                    pipeline.run_sync(workdir="work", executor="processes", log=False)
                except asyncflow.ExecutorError as exc:
                    print("ExecutorError:", exc)
                    print("ran:", (__import__("pathlib").Path("work") / "checkpoints").exists())
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "app"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "ExecutorError: the process executor could not start a worker process" in proc.stdout
    assert "relative import" in proc.stdout
    assert "ran: False" in proc.stdout


# -- the command line -------------------------------------------------------------------------


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncflow", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_prices_pipeline_on_processes_writes_the_same_report(tmp_path: Path) -> None:
    local = cli("pipelines.prices", "--workdir", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    pooled = cli("pipelines.prices", "--workdir", tmp_path / "pooled", "--executor", "processes")
    assert pooled.returncode == 0, pooled.stderr
    report: Callable[[str], str] = lambda d: (tmp_path / d / "prices_report.md").read_text()  # noqa: E731
    assert report("pooled") == report("local")
    assert "## Damped Holt, tuned by grid search" in report("pooled")


async def test_process_executor_runs_on_both_backends(anyio_backend: str, tmp_path: Path) -> None:
    p = Pipeline("both")
    p.task(pid_of_worker, name="where")
    result = await run(p, tmp_path, ProcessExecutor())
    assert result.ok, (anyio_backend, result.errors)
    assert result.tasks["where"].result != os.getpid()

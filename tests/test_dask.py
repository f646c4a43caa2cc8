"""The Dask executor (asyncflow._dask) against a real ``distributed.LocalCluster``.

One cluster serves the whole module: two worker processes with one thread each, on the
loopback interface, HTTP on a free port; real processes, so every call and result crosses a
process boundary as it would on a remote cluster. The executor contract of
``test_executors.py`` runs against it, plus what only Dask has: the scheduler address,
the cluster started for a run, the client's need for asyncio.

These tests run on asyncio only: Dask's client is asyncio code (tornado and asyncio
streams) and cannot run on trio's event loop, which is exactly what the executor refuses
at start-up (tested below on trio).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest
from journal import journal_of
from test_executors import ROOT, ExecutorContract, cli, pid_of_worker, poll, square_all

from asyncflow import DaskExecutor, Event, Executor, ExecutorError, Pipeline, TaskState


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two single-threaded worker processes on 127.0.0.1, for every test of the module."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # None would still serve HTTP on 8787, and warn if taken
    ) as local:
        yield local


@pytest.fixture
def anyio_backend() -> str:
    """Dask's client needs asyncio (see the module docstring)."""
    return "asyncio"


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestDaskExecutor(ExecutorContract):
    """The executor contract, on the module's cluster."""

    @pytest.fixture
    def executor(self, cluster: distributed.LocalCluster) -> Executor:
        return DaskExecutor(address=cluster.scheduler_address)

    async def check_work_stopped(self, executor: Executor, pid: int, task: str) -> None:
        # Dask cannot interrupt a running function; what it can do is forget the future,
        # so that the task is neither kept nor run again.
        assert isinstance(executor, DaskExecutor)
        async with distributed.Client(executor.address, asynchronous=True) as client:

            async def forgotten() -> bool:
                keys = await client.run_on_scheduler(_scheduler_keys)
                return not any(key.startswith(f"{task}-") for key in keys)

            await poll(forgotten, f"the scheduler to forget {task!r}", seconds=10)
        os.kill(pid, 0)  # the worker process itself lives on


def _scheduler_keys(dask_scheduler: distributed.Scheduler) -> list[str]:
    return [str(key) for key in dask_scheduler.tasks]


async def test_each_attempt_is_a_future_named_after_its_task(
    cluster: distributed.LocalCluster, tmp_path: Path
) -> None:
    p = Pipeline("keys")
    p.task(square_all, name="squares", inputs={"numbers": "numbers"})

    @p.task
    async def numbers() -> list[int]:
        return [3]

    async with distributed.Client(cluster.scheduler_address, asynchronous=True) as observer:
        await observer.get_task_stream()  # the first call starts the scheduler's recording
        result = await p.run(
            workdir=tmp_path,
            executor=DaskExecutor(address=cluster.scheduler_address),
            checkpoints=False,
            log=False,
        )
        assert result.tasks["squares"].result == [9]
        stream = await observer.get_task_stream()
    keys = [str(record["key"]) for record in stream]
    assert [key.split("-")[0] for key in keys] == ["squares"]
    assert len(keys[0]) == len("squares-") + 32  # a fresh uuid per attempt: never a cached future


async def test_unreachable_scheduler_fails_before_any_task_runs(tmp_path: Path) -> None:
    p = Pipeline("unreachable")
    p.task(pid_of_worker, name="where")
    local = await p.run(workdir=tmp_path, log=False)
    assert local.ok
    checkpoint = journal_of(tmp_path, "unreachable")
    before = checkpoint.read_bytes()

    address = f"tcp://127.0.0.1:{free_port()}"
    events: list[Event] = []
    start = time.monotonic()
    with pytest.raises(
        ExecutorError, match=f"cannot connect to the Dask scheduler at '{address}' within 1 s"
    ):
        await p.run(
            workdir=tmp_path,
            force=True,
            executor=DaskExecutor(address=address, connect_timeout=1),
            listeners=[events.append],
            log=False,
        )
    assert time.monotonic() - start < 15
    assert events == []  # not even RunStarted: nothing ran
    assert checkpoint.read_bytes() == before
    again = await p.run(workdir=tmp_path, log=False)
    assert again.counts == {TaskState.CACHED: 1}


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_the_dask_executor_fails_before_any_task_runs(
    anyio_backend: str, tmp_path: Path
) -> None:
    p = Pipeline("trio")
    p.task(pid_of_worker, name="where")
    events: list[Event] = []
    with pytest.raises(ExecutorError, match="the Dask executor needs the asyncio backend"):
        await p.run(workdir=tmp_path, executor="dask", listeners=[events.append], log=False)
    assert events == []


async def test_without_address_a_local_cluster_lives_for_the_run(tmp_path: Path) -> None:
    p = Pipeline("own_cluster")
    for i in range(4):
        p.task(pid_of_worker, name=f"where{i}")
    result = await p.run(workdir=tmp_path, executor=DaskExecutor(n_workers=1), checkpoints=False, log=False)
    assert result.ok, result.errors
    (pid,) = {task.result for task in result.tasks.values()}
    assert pid != os.getpid()
    # The cluster, and so its worker process, closed with the run.
    await poll(lambda: not _alive(pid), f"worker process {pid} to exit", seconds=20)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("value", [{"n_workers": 0}, {"threads_per_worker": 0}, {"connect_timeout": 0}])
def test_dask_executor_refuses_out_of_range_options(value: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(value))):
        DaskExecutor(**value)  # type: ignore[arg-type]


def test_importing_asyncflow_does_not_import_dask() -> None:
    code = "import sys, asyncflow; print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


# -- the command line -------------------------------------------------------------------------


def test_prices_pipeline_on_the_cluster_and_an_unreachable_scheduler(
    cluster: distributed.LocalCluster, tmp_path: Path
) -> None:
    local = cli("pipelines.prices", "--workdir", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    remote = cli(
        "pipelines.prices", "--workdir", tmp_path / "dask", "--dask-address", cluster.scheduler_address
    )
    assert remote.returncode == 0, remote.stderr
    own = cli("pipelines.prices", "--workdir", tmp_path / "own", "--executor", "dask")  # a cluster of its own
    assert own.returncode == 0, own.stderr
    assert "exiting without waiting" not in own.stderr  # Dask's own threads are not the pipeline's
    report = "prices_report.md"
    assert (tmp_path / "dask" / report).read_text() == (tmp_path / "local" / report).read_text()

    # An unreachable scheduler: one line, exit code 1, and the checkpoints are untouched.
    checkpoints = {p.name: p.read_bytes() for p in (tmp_path / "local" / "checkpoints").rglob("*.*")}
    address = f"tcp://127.0.0.1:{free_port()}"
    down = cli(
        "pipelines.prices", "--workdir", tmp_path / "local", "--no-skip", "--dask-address", address,
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"},
    )  # fmt: skip
    assert down.returncode == 1
    assert down.stdout == ""
    (line,) = [line for line in down.stderr.splitlines() if line.startswith("asyncflow:")]
    assert line.startswith(
        f"asyncflow: error: cannot connect to the Dask scheduler at '{address}' within 1 s"
    )
    assert "Traceback" not in down.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "local" / "checkpoints").rglob("*.*")} == checkpoints

    # Where tasks compute is not part of their cache keys: the cluster run finds them all cached.
    cached = cli("pipelines.prices", "--workdir", tmp_path / "local", "--executor", "dask",
                 "--dask-address", cluster.scheduler_address)  # fmt: skip
    assert cached.returncode == 0, cached.stderr
    assert "ok: 12 cached" in cached.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--backend", "trio", "--executor", "dask"), "--executor dask needs --backend asyncio"),
        (
            ("--backend", "trio", "--dask-address", "tcp://127.0.0.1:1"),
            "--executor dask needs --backend asyncio",
        ),
        (
            ("--executor", "processes", "--dask-address", "tcp://127.0.0.1:1"),
            "--dask-address needs --executor dask",
        ),
        (("--executor", "spark"), "argument --executor: invalid choice: 'spark'"),
    ],
)
def test_executor_usage_errors_exit_2_with_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    proc = cli("pipelines.prices", "--workdir", tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"asyncflow: error: {message}")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "checkpoints").exists()


def test_scale_out_benchmark_runs_every_executor(tmp_path: Path) -> None:
    """A smoke test of ``python -m benchmarks.scale_out`` on tiny tasks: it cannot rot."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_out", "--tasks", "2", "--seconds", "0.01", "--reps", "1",
         "--out", str(tmp_path / "scale_out.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "scale_out.json").read_text())["rows"]
    assert [row["executor"].split()[0] for row in rows] == ["event", "threads", "processes", "dask"]
    assert "| dask (LocalCluster, 2 workers) | 2 |" in proc.stdout

"""The public surface of asyncflow: exported names, docstrings, silence on import, entry points."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import itertools
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from journal import saved

import asyncflow

EXPECTED_ALL = [
    "DEFAULT_WORKDIR",
    "JSON",
    "PICKLE",
    "AsyncflowError",
    "AttemptFailed",
    "AttemptRecord",
    "AttemptState",
    "Checkpoint",
    "CheckpointError",
    "CheckpointReadError",
    "CheckpointStore",
    "CycleError",
    "DaskExecutor",
    "DuplicateTaskError",
    "Each",
    "Event",
    "EventStream",
    "Executor",
    "ExecutorError",
    "FileStore",
    "ForgottenAwaitError",
    "Graph",
    "InvalidTaskNameError",
    "Listener",
    "LocalExecutor",
    "MappingError",
    "MemoryStore",
    "MissingCheckpointError",
    "Node",
    "ParamError",
    "Pipeline",
    "PipelineDefinitionError",
    "ProcessExecutor",
    "ProgressDisplay",
    "RetryPolicy",
    "RunContext",
    "RunFailedError",
    "RunFinished",
    "RunRecord",
    "RunRecorder",
    "RunResult",
    "RunStarted",
    "Serializer",
    "Task",
    "TaskCached",
    "TaskCancelled",
    "TaskError",
    "TaskFailed",
    "TaskLogger",
    "TaskMapped",
    "TaskPicklingError",
    "TaskRecord",
    "TaskRun",
    "TaskSkipped",
    "TaskStarted",
    "TaskState",
    "TaskSucceeded",
    "TaskTimeoutError",
    "UnboundParameterError",
    "UnknownDependencyError",
    "WorkdirLockedError",
    "__version__",
    "code_digest",
    "each",
    "file_digest",
    "list_records",
    "read_json",
    "read_record",
    "read_text",
    "render_timeline",
    "write_json",
    "write_text",
]

PACKAGE_DIR = Path(asyncflow.__file__).parent


# -- exported names -------------------------------------------------------------------------


def test_all_is_exactly_the_expected_list() -> None:
    assert asyncflow.__all__ == EXPECTED_ALL
    assert len(set(asyncflow.__all__)) == len(asyncflow.__all__)


def test_all_is_sorted_constants_then_classes_then_functions() -> None:
    # ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest, each alphabetical.
    def group(name: str) -> int:
        if name.isupper():
            return 0
        return 1 if name[0].isupper() else 2

    assert asyncflow.__all__ == sorted(asyncflow.__all__, key=lambda n: (group(n), n))


def test_every_exported_name_exists_and_star_import_matches() -> None:
    for name in asyncflow.__all__:
        assert hasattr(asyncflow, name), name
    namespace: dict[str, object] = {}
    exec("from asyncflow import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(EXPECTED_ALL)


def test_version_matches_the_installed_distribution() -> None:
    from asyncflow._dist import DISTRIBUTION

    assert asyncflow.__version__ == importlib.metadata.version(DISTRIBUTION)


def _attribute_docstrings() -> dict[str, str]:
    """Module-level ``NAME = value`` followed by a string literal, across the package."""
    docs: dict[str, str] = {}
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for stmt, nxt in itertools.pairwise(body):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else []
            if isinstance(stmt, ast.AnnAssign):
                targets = [stmt.target]
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                for target in targets:
                    if isinstance(target, ast.Name):
                        docs[target.id] = nxt.value.value
    return docs


def test_every_exported_name_has_a_docstring() -> None:
    attribute_docs = _attribute_docstrings()
    missing = []
    for name in asyncflow.__all__:
        if name == "__version__":
            continue
        obj = getattr(asyncflow, name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            doc = obj.__doc__ or ""
            # A dataclass without a docstring gets "Name(field: type, ...)" generated.
            if not doc.strip() or doc.startswith(f"{obj.__name__}("):
                missing.append(name)
        elif not attribute_docs.get(name, "").strip():
            missing.append(name)
    assert missing == []


def test_public_methods_of_exported_classes_have_docstrings() -> None:
    missing = []
    for name in asyncflow.__all__:
        obj = getattr(asyncflow, name)
        if not inspect.isclass(obj) or not obj.__module__.startswith("asyncflow"):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, (classmethod, staticmethod)):
                value = value.__func__
            documentable = inspect.isfunction(value) or isinstance(value, property)
            if documentable and not (value.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
    assert missing == []


# -- silence: no sink, no output ------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import sys

    from loguru import logger

    import asyncflow

    if sys.argv[2] == "enable":
        logger.enable("asyncflow")

    one = asyncflow.Pipeline("one")

    @one.task
    async def only(context) -> int:
        context.logger.info("a line from the task itself")
        return 1

    result = one.run_sync(workdir=sys.argv[1])
    assert result.ok and result.tasks["only"].result == 1, result

    failing = asyncflow.Pipeline("failing")

    @failing.task(retries=1, retry_delay=0)
    async def broken() -> None:
        raise RuntimeError("boom")

    @failing.task
    async def after_broken(broken: None) -> None:
        return None

    result = failing.run_sync(workdir=sys.argv[1], backend="trio")
    assert not result.ok, result

    # loguru's own default sink has id 0: had anything added a sink, the next id would not be 1.
    assert logger.add(lambda message: None) == 1
    """
)


def _run_script(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT, str(tmp_path / "work"), mode],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_and_runs_add_no_sink_and_print_nothing(tmp_path: Path) -> None:
    proc = _run_script(tmp_path, "quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == ""
    assert "only" in saved(tmp_path / "work", "one")
    assert not (tmp_path / ".asyncflow").exists()


def test_enabling_asyncflow_logging_shows_run_events(tmp_path: Path) -> None:
    # The control for the test above: the same script does log once the app enables it.
    proc = _run_script(tmp_path, "enable")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "succeeded on attempt 1" in proc.stderr
    assert "a line from the task itself" in proc.stderr
    assert "retrying in" in proc.stderr
    assert "RuntimeError: boom" in proc.stderr
    assert "skipped: upstream task 'broken' failed" in proc.stderr


def test_bare_import_prints_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import asyncflow"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


# -- entry points ---------------------------------------------------------------------------


def _two_step(calls: Counter[str]) -> asyncflow.Pipeline:
    # calls is a Counter, not a list: a flat list of strings in a closure is part of the
    # task's code digest, so appending to one would invalidate the checkpoints.
    p = asyncflow.Pipeline("two_step", params={"base": 1})

    @p.task
    async def first(params: dict[str, Any]) -> int:
        calls["first"] += 1
        await anyio.sleep(0.01)
        return int(params["base"])

    @p.task
    def second(first: int) -> int:
        calls["second"] += 1
        return first + 1

    return p


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_sync_runs_the_pipeline(tmp_path: Path, backend: Literal["asyncio", "trio"]) -> None:
    calls: Counter[str] = Counter()
    p = _two_step(calls)
    result = p.run_sync(params={"base": 41}, workdir=tmp_path, log=False, backend=backend)
    assert isinstance(result, asyncflow.RunResult)
    assert result.ok
    assert result.tasks["second"].result == 42
    assert calls == {"first": 1, "second": 1}
    assert result.raise_for_failures() is result
    # Positional arguments follow run()'s order: params, workdir, force.
    forced = p.run_sync({"base": 41}, tmp_path, True, log=False, backend=backend)
    assert forced.counts == {asyncflow.TaskState.SUCCEEDED: 2}
    assert calls == {"first": 2, "second": 2}
    cached = p.run_sync({"base": 41}, tmp_path, log=False, backend=backend)
    assert cached.counts == {asyncflow.TaskState.CACHED: 2}
    assert calls == {"first": 2, "second": 2}


async def test_run_sync_inside_a_running_loop_is_refused(tmp_path: Path) -> None:
    p = _two_step(Counter())
    with pytest.raises(RuntimeError):
        p.run_sync(workdir=tmp_path, log=False)


async def test_run_embeds_in_a_running_program(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    p = _two_step(calls)
    ticks: list[float] = []
    results: list[asyncflow.RunResult] = []

    async def other_work() -> None:
        for _ in range(3):
            ticks.append(anyio.current_time())
            await anyio.sleep(0.005)

    async def pipeline_run() -> None:
        results.append(await p.run(workdir=tmp_path, log=False))

    loop_thread = threading.get_ident()
    async with anyio.create_task_group() as tg:
        tg.start_soon(other_work)
        tg.start_soon(pipeline_run)
    assert threading.get_ident() == loop_thread
    (result,) = results
    assert isinstance(result, asyncflow.RunResult)
    assert result.ok
    assert result.pipeline == "two_step"
    assert result.tasks["second"].result == 2
    assert len(ticks) == 3
    assert calls == {"first": 1, "second": 1}


def test_counts_and_ok_follow_the_states_not_the_order_tasks_finished() -> None:
    from asyncflow._events import STATE_ORDER

    p = asyncflow.Pipeline("counts_order")

    @p.task()
    async def broken() -> int:
        raise ValueError("no")

    @p.task()
    async def after(broken: int) -> int:
        return broken

    @p.task()
    async def fine() -> int:
        return 1

    result = p.run_sync(checkpoints=False, log=False, fail_fast=False)
    states = asyncflow.TaskState
    assert result.counts == {states.SUCCEEDED: 1, states.FAILED: 1, states.SKIPPED: 1}
    assert list(result.counts) == [s for s in STATE_ORDER if s in result.counts]  # not finish order
    assert not result.ok
    assert p.run_sync(checkpoints=False, log=False, only=["fine"]).ok

"""Bad input: one clear line naming the culprit, the right exit code, nothing lost.

Exit code 2 for usage errors (nothing ran), 1 for runs with failed tasks. The CLI cases
run ``python -m asyncflow`` in a subprocess; the disk-full case injects ``ENOSPC`` into
the checkpoint writer in-process, and the embedding cases check what ``RunResult`` and
``RunFailedError`` expose.
"""

from __future__ import annotations

import errno
import json
import math
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
from faults import checkpoints, cli, journal_lines, leftovers, pipeline_folder, states, write_pipeline

from asyncflow import CheckpointError, FileStore, Pipeline, RunFailedError, TaskState
from asyncflow._interrupt import describe_error

GOOD = """
    import asyncflow

    pipeline = asyncflow.Pipeline("good", params={"n": 3, "label": "x"})


    @pipeline.task(tags=["fast_io"])
    async def a(params) -> int:
        return params["n"]


    @pipeline.task
    async def b(a: int) -> int:
        return a + 1


    @pipeline.task
    async def c(b: int) -> int:
        return b * 2


    @pipeline.task
    async def d(c: int) -> list:
        return [c]
"""


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("asyncflow: error:")]


def snapshot(workdir: Path) -> dict[str, bytes]:
    """Every file under ``<workdir>/checkpoints`` (the journal, result files), by relative path."""
    root = workdir / "checkpoints"
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert "good/journal.jsonl" in files
    return files


def run_good(directory: Path) -> tuple[Path, Path]:
    path, workdir = write_pipeline(directory, GOOD), directory / "work"
    first = cli(path, "--workdir", workdir)
    assert first.returncode == 0, first.stderr
    return path, workdir


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, Path]:
    """A pipeline file that has run once: (its path, its working directory)."""
    return run_good(tmp_path)


@pytest.fixture(scope="module")
def shared_good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Like ``good``, shared by the tests that must leave it unchanged."""
    return run_good(tmp_path_factory.mktemp("shared"))


# -- the module ----------------------------------------------------------------------------------


def test_module_not_found_is_one_line_exit_2(tmp_path: Path) -> None:
    result = cli("no_such_pipeline_module", "--workdir", tmp_path / "w", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "asyncflow: error: no module named 'no_such_pipeline_module' (run from the directory that "
        "contains it, or pass the path of a .py file)"
    ]


def test_missing_dependency_of_the_module_names_the_dependency(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "import no_such_dependency_xyz\n")
    result = cli(path, "--workdir", tmp_path / "w")
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("asyncflow: error: importing ")
    assert "ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in first


def test_module_raising_on_import_shows_its_own_traceback_not_the_loaders(tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        """
        import asyncflow

        pipeline = asyncflow.Pipeline("r")


        def load_settings():
            raise ValueError("bad config value 42")


        load_settings()
        """,
    )
    result = cli(path, "--workdir", tmp_path / "w")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"asyncflow: error: importing {str(path)!r} failed: ValueError: bad config value 42"
    assert any("in load_settings" in line for line in lines)
    assert any('raise ValueError("bad config value 42")' in line for line in lines)
    for loader in ("importlib", "<frozen", "_cli.py", "_bootstrap"):
        assert loader not in result.stderr
    assert not (tmp_path / "w").exists()  # nothing was created


def test_invalid_task_name_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        """
        import asyncflow

        pipeline = asyncflow.Pipeline("r")


        async def fetch() -> int:
            return 1


        pipeline.task(fetch, name="fetch-prices")
        """,
    )
    result = cli(path, "--workdir", tmp_path / "w")
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert "InvalidTaskNameError: task name 'fetch-prices' is not a Python identifier" in first
    assert 'pipeline.task(fetch, name="fetch-prices")' in result.stderr  # the user's own line
    assert "_task.py" not in result.stderr and "_pipeline.py" not in result.stderr


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        ("import asyncflow\n", (), "defines no asyncflow.Pipeline at module level"),
        (
            "import asyncflow\nfirst = asyncflow.Pipeline('one')\nsecond = asyncflow.Pipeline('two')\n",
            (),
            "defines 2 pipelines (one, two); choose one with --pipeline NAME",
        ),
        (
            "import asyncflow\nfirst = asyncflow.Pipeline('one')\n",
            ("--pipeline", "three"),
            "has no pipeline named 'three' (found: one)",
        ),
    ],
    ids=["none", "several", "unknown-name"],
)
def test_no_or_several_pipelines_is_a_usage_error(
    tmp_path: Path, source: str, args: tuple[str, ...], message: str
) -> None:
    path = write_pipeline(tmp_path, source)
    result = cli(path, "--workdir", tmp_path / "w", *args)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("asyncflow: error: module 'flow' ") and message in line


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--param", "n"), "--param expects KEY=VALUE, got 'n'"),
        (("--param", "=3"), "--param expects KEY=VALUE, got '=3'"),
        (("--param", "n=three"), "--param n=three: expected an integer"),
        (("--param", "nn=3"), "has no parameter 'nn'; did you mean 'n'?"),
        (("--backend", "curio"), "argument --backend: invalid choice: 'curio'"),
        (("--lock", "maybe"), "argument --lock: invalid choice: 'maybe'"),
        (("--grace", "-1"), "argument --grace: expected a finite number of seconds >= 0, got '-1'"),
        (("--grace", "nan"), "argument --grace: expected a finite number of seconds >= 0, got 'nan'"),
        (("--max-concurrency", "0"), "argument --max-concurrency: expected a positive integer, got 0"),
        (("--pool", "fast_io"), "--pool expects TAG=N, got 'fast_io'"),
        (("--pool", "fast_io=0"), "--pool fast_io=0: expected a positive integer, got 0"),
        (("--pool", "fast_io=many"), "--pool fast_io=many: expected a positive integer, got 'many'"),
        (("--pool", "fast_i0=2"), "no task has tag 'fast_i0'; did you mean 'fast_io'? (tags: fast_io)"),
        (("--pool", "fast_io=1", "--pool", "fast_io=2"), "--pool fast_io is given twice"),
        (("--frobnicate",), "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_option_is_one_line_exit_2_and_leaves_checkpoints_intact(
    shared_good: tuple[Path, Path], args: tuple[str, ...], message: str
) -> None:
    path, workdir = shared_good
    before = snapshot(workdir)
    result = cli(path, "--workdir", workdir, *args)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("asyncflow: error: ") and message in line
    assert result.stdout == ""
    assert snapshot(workdir) == before


def test_pool_option_limits_the_tagged_tasks(tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        """
        import functools

        import anyio

        import asyncflow

        pipeline = asyncflow.Pipeline("pools")
        running = peak = 0


        async def work(i: int) -> int:
            global running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.02)
            running -= 1
            return peak


        for i in range(8):
            pipeline.task(functools.partial(work, i=i), name=f"w{i}", tags=["db"])


        @pipeline.task(after=[f"w{i}" for i in range(8)], checkpoint=False)
        async def report() -> int:
            return peak
        """,
    )
    result = cli(path, "--workdir", tmp_path / "w", "--pool", "db=2")
    assert result.returncode == 0, result.stderr
    assert states(result.stdout)["report"] == "succeeded"
    row = next(line for line in result.stdout.splitlines() if line.startswith("report"))
    assert row.split()[-1] == "2"  # at most 2 tasks tagged db ran at once


# -- the working directory ------------------------------------------------------------------------


def test_workdir_under_a_regular_file_is_a_usage_error(
    shared_good: tuple[Path, Path], tmp_path: Path
) -> None:
    path, _ = shared_good
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    result = cli(path, "--workdir", blocker / "sub")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"asyncflow: error: cannot use working directory {str(blocker / 'sub')!r}: ")
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores chmod")
def test_read_only_workdir_is_a_usage_error(shared_good: tuple[Path, Path], tmp_path: Path) -> None:
    path, _ = shared_good
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = cli(path, "--workdir", locked)
    finally:
        locked.chmod(0o700)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"cannot use working directory {str(locked)!r}" in line


def test_missing_workdir_is_created(shared_good: tuple[Path, Path], tmp_path: Path) -> None:
    path, _ = shared_good
    result = cli(path, "--workdir", tmp_path / "new" / "nested" / "work")
    assert result.returncode == 0, result.stderr
    assert set(checkpoints(tmp_path / "new" / "nested" / "work")) == {"a", "b", "c", "d"}


# -- checkpoints ---------------------------------------------------------------------------------


def test_truncated_or_garbage_checkpoints_are_rerun_with_a_warning(good: tuple[Path, Path]) -> None:
    path, workdir = good
    journal = pipeline_folder(workdir, "good") / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")[:-1]
    assert [json.loads(line)["task"] for line in lines] == ["a", "b", "c", "d"]
    lines[1] = lines[1][: len(lines[1]) // 2]  # b's line, torn in the middle of the journal
    lines[3] = b"\x00\xff garbage \xfe"  # d's line: not even UTF-8
    journal.write_bytes(b"\n".join(lines) + b'\n{"task": "a", "key": "')  # and a torn last line

    result = cli(path, "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    # b's result is unchanged, so c, below it, stays cached (its key holds b's result digest).
    assert states(result.stdout) == {"a": "cached", "b": "succeeded", "c": "cached", "d": "succeeded"}
    assert f"line 2 of checkpoint journal {journal} is corrupted; ignoring it" in result.stderr
    assert f"line 4 of checkpoint journal {journal} is corrupted; ignoring it" in result.stderr
    assert f"checkpoint journal {journal} ends in a torn line" in result.stderr
    assert checkpoints(workdir) == {"a": 3, "b": 4, "c": 8, "d": [8]}  # the journal is whole again
    assert len(journal_lines(workdir)) == 4  # rewritten without the corrupted lines

    again = cli(path, "--workdir", workdir)
    assert set(states(again.stdout).values()) == {"cached"}
    assert "corrupted" not in again.stderr and "torn" not in again.stderr


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(10_000, id="inline"),
        pytest.param(40_000, id="own-file"),
    ],
)
async def test_disk_full_during_checkpoint_write_fails_the_task_and_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blob: int
) -> None:
    # b's result is stored inside the journal line (inline) or, over 16 KiB, in a file of its own.
    p = Pipeline("p", params={"v": 1})

    @p.task
    async def a() -> int:
        return 1

    @p.task
    async def b(a: int, params: dict[str, Any]) -> dict[str, Any]:
        return {"v": params["v"], "blob": "x" * blob}

    @p.task
    async def c(b: dict[str, Any]) -> int:
        return int(b["v"])

    assert (await p.run(workdir=tmp_path, log=False)).ok
    before = checkpoints(tmp_path)
    files = {f.name: f.read_bytes() for f in pipeline_folder(tmp_path).iterdir()}

    def disk_full(fd: int) -> None:  # the writer's fsync: where delayed ENOSPC surfaces
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    result = await p.run(workdir=tmp_path, log=False, params={"v": 2})
    monkeypatch.undo()

    error = result.tasks["b"].error
    assert isinstance(error, CheckpointError) and error.task == "b"
    assert str(error).startswith("the checkpoint of task 'b' could not be written: ")
    assert "No space left on device" in str(error)
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
    assert result.tasks["a"].state is TaskState.CACHED
    assert result.tasks["c"].state is TaskState.SKIPPED
    assert leftovers(tmp_path) == []  # the temporary file was removed
    # The old checkpoint, intact: on disk, and as the next run's store loads it.
    assert checkpoints(tmp_path) == before
    old_b = await FileStore(pipeline_folder(tmp_path)).load("b")
    assert old_b is not None and old_b.result == before["b"] and old_b.result["v"] == 1
    assert {n: d for n, d in files.items() if n != "journal.jsonl"}.items() <= {
        f.name: f.read_bytes() for f in pipeline_folder(tmp_path).iterdir()
    }.items()
    rerun = await p.run(workdir=tmp_path, log=False, params={"v": 2})
    assert (rerun.tasks["b"].state, rerun.tasks["c"].result) == (TaskState.SUCCEEDED, 2)


def test_non_json_and_nan_results_fail_their_tasks_naming_task_and_type(tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        """
        import math

        import asyncflow

        pipeline = asyncflow.Pipeline("nj")


        @pipeline.task
        async def ok() -> int:
            return 1


        @pipeline.task
        async def tags(ok: int) -> set:
            return {"a", "b"}


        @pipeline.task
        async def ratio(ok: int) -> dict:
            return {"mean": math.nan}


        @pipeline.task
        async def peak(ok: int) -> list:
            return [1.0, math.inf]


        @pipeline.task
        async def lookup(ok: int) -> int:
            return {}["missing"]
        """,
    )
    workdir = tmp_path / "w"
    result = cli(path, "--workdir", workdir, "--log-level", "CRITICAL")
    assert result.returncode == 1
    assert states(result.stdout) == {
        "ok": "succeeded",
        "tags": "failed",
        "ratio": "failed",
        "peak": "failed",
        "lookup": "failed",
    }
    failures = [line for line in result.stderr.splitlines() if line.startswith("asyncflow: task ")]
    assert len(failures) == 4
    assert failures[0].startswith(
        "asyncflow: task 'tags' failed: CheckpointError: task 'tags' returned a result that is not "
        "strict JSON (set): Object of type set is not JSON serializable"
    )
    for task, kind in (("ratio", "dict"), ("peak", "list")):
        assert any(
            f"task '{task}' returned a result that is not strict JSON ({kind}): it holds NaN or infinity"
            in line
            for line in failures
        )
    assert "asyncflow: task 'lookup' failed: KeyError: 'missing'" in failures
    for raw in ("Traceback", "ExceptionGroup"):
        assert raw not in result.stdout + result.stderr
    assert set(checkpoints(workdir)) == {"ok"}


@pytest.mark.parametrize("value", [math.nan, -math.inf, {"deep": [1, {"x": math.inf}]}])
async def test_nan_and_infinity_are_rejected_as_not_strict_json(tmp_path: Path, value: Any) -> None:
    p = Pipeline("p")

    @p.task
    async def produce() -> Any:
        return value

    @p.task(checkpoint=False)
    async def unchecked() -> Any:
        return value

    result = await p.run(workdir=tmp_path, log=False)
    error = result.tasks["produce"].error
    assert isinstance(error, CheckpointError)
    assert "NaN or infinity, which strict JSON does not allow" in str(error)
    assert result.tasks["unchecked"].state is TaskState.SUCCEEDED  # the rule is for checkpoints


# -- errors from the run -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_task_raising_system_exit_is_reported_in_one_line_not_a_raw_group(
    tmp_path: Path, backend: str
) -> None:
    path = write_pipeline(
        tmp_path,
        """
        import sys

        import anyio

        import asyncflow

        pipeline = asyncflow.Pipeline("ex")


        @pipeline.task
        async def ok() -> int:
            return 1


        @pipeline.task
        async def other(ok: int) -> int:
            await anyio.sleep(5)
            return ok


        @pipeline.task
        async def quits(ok: int) -> int:
            sys.exit(3)
        """,
    )
    workdir = tmp_path / "w"
    result = cli(path, "--workdir", workdir, "--backend", backend)
    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert line.startswith("asyncflow: error: the run stopped: SystemExit: 3 (traceback in ")
    for raw in ("Traceback", "ExceptionGroup", "  File "):
        assert raw not in result.stdout + result.stderr
    assert states(result.stdout) == {"ok": "succeeded", "other": "cancelled", "quits": "cancelled"}
    assert set(checkpoints(workdir)) == {"ok"}


async def test_embedding_code_reads_every_failed_tasks_exception_and_traceback(tmp_path: Path) -> None:
    p = Pipeline("p")

    @p.task
    async def parse() -> int:
        raise ValueError("bad row 7")

    @p.task
    def lookup() -> int:  # runs in a worker thread
        empty: dict[str, int] = {}
        return empty["missing"]

    @p.task
    async def fine() -> int:
        return 1

    result = await p.run(workdir=tmp_path, log=False, checkpoints=False)
    assert set(result.errors) == {"parse", "lookup"}
    with pytest.raises(RunFailedError) as caught:
        result.raise_for_failures()
    errors = caught.value.errors
    assert isinstance(errors["parse"], ValueError) and isinstance(errors["lookup"], KeyError)
    for name, error in errors.items():
        frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
        assert name in frames  # the task's own frame is in its traceback
    assert "parse: ValueError: bad row 7" in str(caught.value)
    assert "lookup: KeyError: 'missing'" in str(caught.value)
    assert result.tasks["fine"].state is TaskState.SUCCEEDED


def test_error_descriptions_flatten_exception_groups() -> None:
    group = BaseExceptionGroup("outer", [ValueError("a"), ExceptionGroup("inner", [KeyError("b")])])
    assert describe_error(group) == "2 errors: ValueError: a; KeyError: 'b'"
    assert describe_error(SystemExit(3)) == "SystemExit: 3"
    assert describe_error(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_nfc_and_nfd_spellings_of_a_task_name_are_one_name() -> None:
    import unicodedata

    from asyncflow import DuplicateTaskError

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    p = Pipeline("p")
    p.task(name=nfd)(lambda: 1)
    assert [t.name for t in p.validate().nodes] == [nfc]
    with pytest.raises(DuplicateTaskError, match="café"):
        p.task(name=nfc)(lambda: 2)
        p.validate()


def test_a_keyboard_interrupt_while_importing_the_module_is_one_line_and_exit_130(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "raise KeyboardInterrupt\n", name="interrupted.py")
    out = cli(path, "--workdir", tmp_path / "w")
    assert out.returncode == 130
    assert out.stderr.strip() == f"asyncflow: error: interrupted while importing {str(path)!r}; nothing ran"
    assert "Traceback" not in out.stderr


def test_a_pipeline_file_elsewhere_runs_on_worker_processes(tmp_path: Path) -> None:
    """Worker processes find a .py path's functions: its folder is on their import path."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = write_pipeline(
        folder,
        """
        import asyncflow

        pipeline = asyncflow.Pipeline("sq")


        @pipeline.task
        async def items() -> list[int]:
            return [1, 2, 3]


        def square(n: int) -> int:
            return n * n


        pipeline.task(square, inputs={"n": asyncflow.each("items")})
        """,
        name="squares_elsewhere.py",
    )
    out = cli(path, "--workdir", tmp_path / "w", "--executor", "processes", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"]["square"]["result"] == [1, 4, 9]


def test_an_unprintable_error_is_reported_not_a_crash(tmp_path: Path) -> None:
    module = write_pipeline(
        tmp_path,
        """
        import asyncflow

        p = asyncflow.Pipeline("unprintable")

        class Weird(Exception):
            def __str__(self):
                raise RuntimeError("str broke")

        @p.task()
        async def fine() -> int:
            return 2

        @p.task(retries=1, retry_delay=0.01, retry_on=(Weird,))
        async def weird(fine: int) -> int:
            raise Weird()
        """,
    )
    workdir = tmp_path / "w"
    result = cli(module, "--workdir", workdir, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "sink raised" not in result.stderr
    assert states(result.stdout) == {"fine": "succeeded", "weird": "failed"}
    why = "Weird (its message could not be made: str() raised RuntimeError)"
    assert f"task 'weird' failed: RuntimeError: {why}" in result.stderr.splitlines()[-1]
    log = next(workdir.glob("runs/*/run.log")).read_text(encoding="utf-8")
    assert "attempt 1 failed" in log and "failed after 2 attempts" in log  # retried on the original type
    record = json.loads(next(workdir.glob("runs/*/record.json")).read_text(encoding="utf-8"))
    assert record["status"] == "failed", record["status"]

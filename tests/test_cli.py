"""The command line end to end: ``python -m asyncflow`` in a subprocess, on the prices pipeline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from journal import saved

ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT / "pipelines" / "data" / "stocks.csv"
TICKERS = ("AAPL", "AMZN", "GOOG", "IBM", "MSFT")
TASKS = 1 + 2 * len(TICKERS) + 1  # ingest, a clean and a fit instance per ticker, report


def asyncflow(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asyncflow ARGS`` and capture its output (60 s limit)."""
    return subprocess.run(
        [sys.executable, "-m", "asyncflow", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def footer(stdout: str) -> str:
    """The summary's last line: ``run <id> ok: 12 cached in 0.25 s``."""
    return next(line for line in reversed(stdout.splitlines()) if line.startswith("run "))


def states(stdout: str) -> dict[str, str]:
    """``{task: state}`` read from the summary table."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if len(cells) >= 2 and cells[1] in {"succeeded", "failed", "skipped", "cached", "cancelled"}:
            rows[cells[0]] = cells[1]
    return rows


@pytest.fixture
def csv_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped CSV that a test may edit."""
    copy = tmp_path / "stocks.csv"
    shutil.copyfile(CSV, copy)
    return copy


def test_first_run_computes_second_run_is_all_cached(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    first = asyncflow("pipelines.prices", "--workdir", workdir)
    assert first.returncode == 0, first.stderr
    assert f"ok: {TASKS} succeeded in" in footer(first.stdout)
    report = (workdir / "prices_report.md").read_text()
    for ticker in TICKERS:
        assert f"| {ticker} |" in report
    # One checkpoint per task and per instance, an instance's named by its item's digest.
    names = sorted(saved(workdir, "prices"))
    assert [n for n in names if "[" not in n] == ["ingest", "report"]
    assert [n.split("[")[0] for n in names if "[" in n] == ["clean"] * 5 + ["fit"] * 5

    second = asyncflow("pipelines.prices", "--workdir", workdir)
    assert second.returncode == 0, second.stderr
    assert f"ok: {TASKS} cached in" in footer(second.stdout)
    assert (workdir / "prices_report.md").read_text() == report


def test_changing_one_ticker_in_the_csv_reruns_only_that_tickers_branch(
    tmp_path: Path, csv_copy: Path
) -> None:
    """Issue #9's flagship criterion: ingest, MSFT's clean and fit, and the report run; the
    other four tickers' items are unchanged, so their instances stay cached (which ones:
    tests/test_prices.py)."""
    workdir = tmp_path / "work"
    args = ("pipelines.prices", "--workdir", workdir, "--param", f"csv={csv_copy}")
    assert asyncflow(*args).returncode == 0
    lines = csv_copy.read_text().splitlines()
    lines[1] = lines[1].replace("39.81", "40.81")  # MSFT, Jan 2000
    csv_copy.write_text("\n".join(lines) + "\n")

    rerun = asyncflow(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "ok: 4 succeeded, 8 cached in" in footer(rerun.stdout)
    assert "| MSFT | 123 | 2000-01-01 | 2010-03-01 | 40.81 |" in (workdir / "prices_report.md").read_text()


def test_no_skip_reruns_every_task(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    assert asyncflow("pipelines.prices", "--workdir", workdir).returncode == 0
    forced = asyncflow("pipelines.prices", "--workdir", workdir, "--no-skip")
    assert forced.returncode == 0
    assert set(states(forced.stdout).values()) == {"succeeded"}


def test_a_failed_branch_exits_1_and_skips_only_its_downstream(tmp_path: Path, csv_copy: Path) -> None:
    lines = csv_copy.read_text().splitlines()
    spoiled = [line.rsplit(",", 1)[0] + ",n/a" if line.startswith("IBM,") else line for line in lines]
    csv_copy.write_text("\n".join(spoiled) + "\n")
    result = asyncflow("pipelines.prices", "--workdir", tmp_path / "w", "--param", f"csv={csv_copy}")
    assert result.returncode == 1
    last = footer(result.stdout)
    # clean[3] (IBM) fails; fit[3] and the report are skipped; the other branches finish.
    assert "9 succeeded" in last and "1 failed" in last and "2 skipped" in last
    assert "ticker 'IBM' has no usable price" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no_such_module",), "no module named 'no_such_module'"),
        (("pipelines.prices", "--param", "holdout"), "--param expects KEY=VALUE, got 'holdout'"),
        (("pipelines.prices", "--param", "holdout=twelve"), "--param holdout=twelve: expected an integer"),
        (("pipelines.prices", "--param", "hold=3"), "has no parameter 'hold'; did you mean 'holdout'?"),
        (("pipelines.prices", "--max-concurrency", "0"), "expected a positive integer, got 0"),
        (("pipelines.prices", "--log-level", "LOUD"), "--log-level"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = asyncflow(*args, "--workdir", tmp_path / "w")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_module_that_raises_on_import_shows_its_own_traceback(tmp_path: Path) -> None:
    module = tmp_path / "broken.py"
    module.write_text("import asyncflow\n\nvalue = 1 / 0\n")
    result = asyncflow(module, "--workdir", tmp_path / "w")
    assert result.returncode == 2
    assert "importing" in result.stderr and "broken.py" in result.stderr
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert "importlib" not in result.stderr


def test_module_without_pipeline_is_a_usage_error(tmp_path: Path) -> None:
    module = tmp_path / "empty.py"
    module.write_text("x = 1\n")
    result = asyncflow(module, "--workdir", tmp_path / "w")
    assert result.returncode == 2
    assert "defines no asyncflow.Pipeline" in result.stderr


def test_runs_on_the_trio_backend(tmp_path: Path) -> None:
    result = asyncflow("pipelines.prices", "--workdir", tmp_path / "w", "--backend", "trio")
    assert result.returncode == 0, result.stderr
    assert set(states(result.stdout).values()) == {"succeeded"}


def test_log_lines_carry_task_names_and_the_log_file_the_run_id(tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    result = asyncflow("pipelines.prices", "--workdir", workdir)
    assert "clean[0]" in result.stderr and "succeeded on attempt 1" in result.stderr
    (log_file,) = (workdir / "runs").glob("*/run.log")
    run_id = log_file.parent.name
    task_lines = [line for line in log_file.read_text().splitlines() if "task=fit[4]" in line]
    assert task_lines and all(f"run={run_id}" in line for line in task_lines)


def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    module = tmp_path / "fanout.py"
    module.write_text(
        "import asyncflow\n"
        "pipeline = asyncflow.Pipeline('fanout')\n"
        "async def leaf():\n    return 1\n"
        "for k in range(2000):\n    pipeline.task(leaf, name=f'leaf_{k}')\n"
    )
    # The reader goes away after one line; the writer has far more than a pipe buffer left.
    with subprocess.Popen(
        [sys.executable, "-m", "asyncflow", str(module), "--list", "--workdir", str(tmp_path / "w")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("task")
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) != 0
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_list_keeps_rows_short_for_a_large_fan_in(tmp_path: Path) -> None:
    module = tmp_path / "fanin.py"
    module.write_text(
        "import asyncflow\n"
        "pipeline = asyncflow.Pipeline('fanin')\n"
        "async def leaf():\n    return 1\n"
        "for k in range(500):\n    pipeline.task(leaf, name=f'leaf_{k}')\n"
        "@pipeline.task(inputs={'xs': [f'leaf_{k}' for k in range(500)]})\n"
        "async def collect(xs):\n    return sum(xs)\n"
    )
    result = asyncflow(module, "--list", "--workdir", tmp_path / "w")
    assert result.returncode == 0, result.stderr
    assert "leaf_0, leaf_1, leaf_2, leaf_3, leaf_4 … (+495 more)" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) < 200


def test_syntax_error_in_a_pipeline_file_is_one_clear_error(tmp_path: Path) -> None:
    module = tmp_path / "typo.py"
    module.write_text("import asyncflow\n\nasync def a(:\n    return 1\n")
    result = asyncflow(module, "--workdir", tmp_path / "w")
    assert result.returncode == 2
    assert "SyntaxError: invalid syntax" in result.stderr
    assert "typo.py" in result.stderr and "line 3" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--param", "holdout=1.5"), "--param holdout=1.5: expected an integer"),
        (("--dask-address", "notaurl"), "--dask-address 'notaurl' is not a scheduler address"),
    ],
)
def test_more_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = asyncflow("pipelines.prices", *args, "--workdir", tmp_path / "w")
    assert (result.returncode, result.stdout) == (2, "")
    assert message in result.stderr


def test_a_workdir_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    result = asyncflow("pipelines.prices", "--workdir", afile)
    assert result.returncode == 2
    assert "cannot use working directory" in result.stderr
    assert "it is a file, not a directory" in result.stderr
    assert afile.read_text() == "not a directory\n"


@pytest.mark.parametrize("part", ["checkpoints", "runs"])
def test_a_file_where_the_run_s_folders_go_is_one_usage_error(tmp_path: Path, part: str) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / part).write_text("kept\n")
    result = asyncflow("pipelines.prices", "--workdir", workdir)
    assert (result.returncode, result.stdout) == (2, "")
    assert f"cannot use working directory {str(workdir)!r}: {part!r} in it is a file" in result.stderr
    assert "Traceback" not in result.stderr
    assert (workdir / part).read_text() == "kept\n"
    assert sorted(p.name for p in workdir.iterdir()) == [part]  # nothing started: no run folder


def test_a_deleted_report_is_written_again_by_the_next_run(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    assert asyncflow("pipelines.prices", "--workdir", workdir).returncode == 0
    report = workdir / "prices_report.md"
    text = report.read_text()
    report.unlink()
    plan = asyncflow("pipelines.prices", "--workdir", workdir, "--dry-run")
    assert f"output missing: {report}" in plan.stdout
    rerun = asyncflow("pipelines.prices", "--workdir", workdir)
    assert rerun.returncode == 0, rerun.stderr
    rows = states(rerun.stdout)
    assert rows.pop("report") == "succeeded"
    assert set(rows.values()) == {"cached"}
    assert report.read_text() == text


def test_a_console_that_cannot_show_a_task_name_never_breaks_the_output(tmp_path: Path) -> None:
    from faults import cli, env, write_pipeline

    path = write_pipeline(
        tmp_path,
        """
        import asyncflow

        pipeline = asyncflow.Pipeline("cjk")


        @pipeline.task
        def 数据() -> int:
            return 1


        @pipeline.task
        async def report(数据: int) -> int:
            return 数据 + 1
        """,
    )
    result = cli(path, "--workdir", tmp_path / "w", environ=env(PYTHONIOENCODING="cp1252"))
    assert result.returncode == 0, result.stderr
    assert "\\u6570\\u636e" in result.stdout  # the name, escaped, in the summary
    assert "Traceback" not in result.stderr and "UnicodeEncodeError" not in result.stderr


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_non_daemon_thread_started_by_the_module_does_not_keep_the_cli_alive(
    tmp_path: Path, backend: str
) -> None:
    import time

    from faults import cli, states, write_pipeline

    path = write_pipeline(
        tmp_path,
        """
        import threading
        import time

        import asyncflow

        threading.Thread(target=time.sleep, args=(60,), name="poller").start()

        pipeline = asyncflow.Pipeline("threads")


        @pipeline.task
        def work() -> int:
            return 1
        """,
    )
    began = time.monotonic()
    result = cli(path, "--workdir", tmp_path / "w", "--backend", backend, timeout=40)
    assert time.monotonic() - began < 30  # far from the thread's 60 s
    assert result.returncode == 0, result.stderr
    assert states(result.stdout) == {"work": "succeeded"}
    assert "exiting without waiting for 1 non-daemon thread still running: 'poller'" in result.stderr

"""The command line's views of past runs: --runs, --show-run, --timeline (and run records)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MIXED = Path(__file__).with_name("mixed_pipeline.py")
MAPPED = Path(__file__).with_name("mapped_pipeline.py")


def cli(*args: str | Path, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncflow", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with two recorded runs of the mixed pipeline."""
    wd = tmp_path_factory.mktemp("history")
    for _ in range(2):
        assert cli(MIXED, "--workdir", wd).returncode == 1  # a task fails on purpose
    return wd


def _run_ids(workdir: Path) -> list[str]:
    """The run ids in the order the runs started."""
    started = {
        p.name: json.loads((p / "record.json").read_text())["started_at_s"]
        for p in (workdir / "runs").iterdir()
    }
    return sorted(started, key=started.__getitem__)


def test_every_cli_run_writes_a_record_next_to_its_log(workdir: Path) -> None:
    for run_id in _run_ids(workdir):
        folder = workdir / "runs" / run_id
        assert (folder / "run.log").is_file()
        doc = json.loads((folder / "record.json").read_text())
        assert (doc["run_id"], doc["pipeline"], doc["status"]) == (run_id, "mixed", "failed")
        assert doc["versions"]["backend"] == "asyncio"


def test_runs_lists_recorded_runs_newest_first(workdir: Path) -> None:
    proc = cli("--runs", "--workdir", workdir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["run", "id", "pipeline", "status", "started", "duration", "tasks"]
    first, second = _run_ids(workdir)
    assert lines[2].startswith(second) and lines[3].startswith(first)
    assert "mixed" in lines[2] and "failed" in lines[2]
    assert "1 cached, 2 succeeded, 1 failed, 1 skipped" in lines[2]
    assert "3 succeeded, 1 failed, 1 skipped" in lines[3]
    assert proc.stderr == ""


def test_show_run_prints_tasks_and_every_attempt(workdir: Path) -> None:
    proc = cli("--show-run", "latest", "--workdir", workdir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"run {_run_ids(workdir)[-1]}: pipeline 'mixed', failed")
    assert "versions: asyncflow" in out and "backend asyncio" in out
    rows = {
        line.split()[0] + " " + line.split()[1]: line for line in out.splitlines() if line.startswith("  #")
    }
    assert len(rows) == 5  # flaky 3, broken 1, total 1 (no duplicates: keyed by number and state)
    assert "ValueError: flaky on attempt 1; backoff 0.050 s" in out
    assert "ValueError: flaky on attempt 2; backoff 0.100 s" in out
    assert "upstream task 'broken' failed" in out
    source = next(line for line in out.splitlines() if line.startswith("source "))
    assert source.split()[1:3] == ["cached", "hit"]


def test_show_run_takes_a_unique_prefix_and_names_an_ambiguous_one(workdir: Path) -> None:
    first, second = _run_ids(workdir)
    proc = cli("--show-run", first[:-2], "--workdir", workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"run {first}:")
    common = first[: next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)]
    proc = cli("--show-run", common, "--workdir", workdir)
    assert proc.returncode == 2
    both = ", ".join(sorted((first, second)))
    assert proc.stderr == f"asyncflow: error: run id prefix {common!r} is ambiguous: {both}\n"


def test_timeline_writes_html_beside_the_record_and_prints_its_path(workdir: Path, tmp_path: Path) -> None:
    proc = cli("--timeline", "latest", "--workdir", workdir)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path == workdir / "runs" / _run_ids(workdir)[-1] / "timeline.html"
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('class="attempt ') == 5
    out = tmp_path / "sub" / "t.html"
    proc = cli("--timeline", _run_ids(workdir)[0], "--output", out, "--workdir", workdir)
    assert (proc.returncode, proc.stdout.strip()) == (0, str(out))
    assert out.read_text().count('class="attempt ') == 6  # first run: source ran too


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the MODULE argument is required to run a pipeline"),
        (
            ("--runs", "pipelines.prices"),
            "--runs reads recorded runs and takes no MODULE (got 'pipelines.prices')",
        ),
        (("--show-run", "nope"), "no recorded run 'nope' in"),
        (("--output", "x.html"), "--output goes with --timeline RUN_ID"),
        (("--runs", "--show-run", "latest"), "not allowed with argument"),
        (("--task", "flaky"), "--task goes with --show-run RUN_ID"),
        (("--show-run", "latest", "--task", "nope"), "has no task 'nope' (its tasks: source, flaky, broken"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(
    workdir: Path, args: tuple[str, ...], message: str
) -> None:
    proc = cli(*args, "--workdir", workdir)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("asyncflow: error: ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_an_empty_workdir_has_no_runs(tmp_path: Path) -> None:
    proc = cli("--runs", "--workdir", tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"no recorded runs in {str(tmp_path / 'runs')!r}")
    proc = cli("--timeline", "latest", "--workdir", tmp_path)
    assert proc.returncode == 2
    assert "no recorded runs in" in proc.stderr


def test_a_corrupt_record_is_an_error_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "20240101T000000-abcdef"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text('{"record_version": 1}')
    proc = cli("--show-run", "20240101", "--workdir", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("asyncflow: error: cannot read the run record")
    assert "record.json" in proc.stderr and "has no" in proc.stderr


def test_an_interrupted_cli_run_still_writes_its_record(tmp_path: Path) -> None:
    module = tmp_path / "slow.py"
    module.write_text(
        "import anyio, asyncflow\n"
        "pipeline = asyncflow.Pipeline('slow')\n"
        "@pipeline.task\n"
        "async def quick() -> int:\n"
        "    return 1\n"
        "@pipeline.task\n"
        "async def sleepy(quick: int) -> int:\n"
        "    await anyio.sleep(60)\n"
        "    return quick\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncflow", str(module), "--workdir", str(tmp_path / "wd")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    logs = list((tmp_path / "wd" / "runs").glob("*/run.log"))
    while time.monotonic() < deadline and not (logs and "sleepy" in logs[0].read_text()):
        time.sleep(0.05)
        logs = list((tmp_path / "wd" / "runs").glob("*/run.log"))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    (record_file,) = (tmp_path / "wd" / "runs").glob("*/record.json")
    doc = json.loads(record_file.read_text())
    assert doc["status"] == "cancelled"
    assert doc["tasks"]["quick"]["state"] == "succeeded"
    assert doc["tasks"]["sleepy"]["state"] == "cancelled"
    assert doc["tasks"]["sleepy"]["attempts"][0]["state"] == "cancelled"


# -- mapped tasks --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mapped_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A working directory with a run of 30 instances (fetch[7] fails, fetch[3] retries,
    fetch[12] and fetch[20] are slow), then one of 4 with --no-skip, so that its instances run
    (they would be cached by value): (workdir, big run id, small run id)."""
    wd = tmp_path_factory.mktemp("mapped")
    big = cli(MAPPED, "--workdir", wd, "-p", "n=30", "-p", "bad=7", "-p", "flaky=3", "-p", "slow=12,20")
    assert big.returncode == 1, big.stderr
    small = cli(MAPPED, "--workdir", wd, "-p", "n=4", "-p", "bad=", "--no-skip")
    assert small.returncode == 0, small.stderr
    first, second = _run_ids(wd)
    return wd, first, second


def _instance_rows(out: str, group: str) -> list[str]:
    """The rows indented under ``group[*]`` (instances, their attempts, the "more" row)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{group}[*] "))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        rows.append(line)
    return rows


def test_show_run_shows_a_large_mapped_task_as_a_group_with_its_failed_and_slowest(
    mapped_runs: tuple[Path, str, str],
) -> None:
    wd, big, _ = mapped_runs
    proc = cli("--show-run", big, "--workdir", wd)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "took " in out and ": 59 succeeded, 2 skipped, 1 failed" in out  # instances, not mapped tasks
    group = next(line for line in out.splitlines() if line.startswith("fetch[*] "))
    assert group.split()[1] == "failed"
    assert "mapped over urls: 30 instances: 29 succeeded, 1 failed; slowest fetch[" in group
    rows = _instance_rows(out, "fetch")
    instances = [r.split()[0] for r in rows if r.startswith("  fetch[")]
    assert {"fetch[7]", "fetch[12]", "fetch[20]"} <= set(instances)  # the failed one, the slow ones
    assert len(instances) <= 1 + 5  # the failed one and at most five slowest
    assert instances == sorted(instances, key=lambda n: int(n[6:-1]))  # in item order
    failed = rows.index(next(r for r in rows if r.startswith("  fetch[7] ")))
    assert rows[failed].split()[1] == "failed"
    assert rows[failed + 1].split()[:2] == ["#1", "retrying"] and rows[failed + 1].startswith("    #1")
    assert "ConnectionError: cannot fetch bad7; backoff 0.010 s" in rows[failed + 1]
    assert rows[failed + 2].split()[:2] == ["#2", "failed"]
    more = rows[-1]
    assert more.startswith(f"  ... {30 - len(instances)} more")
    assert f"{30 - len(instances)} succeeded (--task fetch lists them all)" in more
    assert "fetch[0] " not in out or "fetch[0]" in instances  # the others are only counted
    assert next(line for line in out.splitlines() if line.startswith("parse[*] ")).split()[1] == "skipped"


def test_show_run_task_shows_one_instance_or_a_whole_mapped_task(mapped_runs: tuple[Path, str, str]) -> None:
    wd, big, _ = mapped_runs
    proc = cli("--show-run", big, "--workdir", wd, "--task", "fetch[3]")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("\n\n", 1)[1].splitlines()[2:]  # below the header and the rule
    assert [row.split()[:2] for row in table] == [
        ["fetch[3]", "succeeded"],
        ["#1", "retrying"],
        ["#2", "succeeded"],
    ]
    assert "ConnectionError: cannot fetch flaky3; backoff 0.010 s" in table[1]
    for name in ("fetch", "fetch[*]"):
        proc = cli("--show-run", big, "--workdir", wd, "--task", name)
        assert proc.returncode == 0, proc.stderr
        rows = _instance_rows(proc.stdout, "fetch")
        assert [r.split()[0] for r in rows if r.startswith("  fetch[")] == [f"fetch[{k}]" for k in range(30)]
        assert not any("more" in r for r in rows)
        assert "urls " not in proc.stdout and "parse" not in proc.stdout
    proc = cli("--show-run", big, "--workdir", wd, "--task", "fetch[30]")
    assert proc.returncode == 2
    assert "has no task 'fetch[30]' (its tasks: urls, fetch, parse, summary)" in proc.stderr


def test_show_run_lists_every_instance_of_a_small_mapped_task(mapped_runs: tuple[Path, str, str]) -> None:
    wd, _, small = mapped_runs
    proc = cli("--show-run", small, "--workdir", wd)
    assert proc.returncode == 0, proc.stderr
    for group in ("fetch", "parse"):
        rows = _instance_rows(proc.stdout, group)
        assert [r.split()[:2] for r in rows if not r.startswith("    #")] == [
            [f"{group}[{k}]", "succeeded"] for k in range(4)
        ]
        assert sum(1 for r in rows if r.startswith("    #1 ")) == 4  # each instance's attempt
    parse = next(line for line in proc.stdout.splitlines() if line.startswith("parse[*] "))
    assert "mapped over fetch: 4 instances: 4 succeeded" in parse and "slowest" not in parse
    proc = cli("--runs", "--workdir", wd)
    assert "10 succeeded" in proc.stdout and "59 succeeded, 2 skipped, 1 failed" in proc.stdout

"""Live progress: a rich display on a terminal, plain log lines everywhere else."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

import asyncflow
from asyncflow._progress import ProgressDisplay

MIXED = Path(__file__).with_name("mixed_pipeline.py")
E: dict[str, Any] = {"run_id": "r", "time": 0.0}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _text(display: ProgressDisplay) -> str:
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    console.print(display.render())
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_frame_shows_counts_running_tasks_retries_and_failures() -> None:
    display = ProgressDisplay(Console(file=io.StringIO(), force_terminal=True, width=120))
    display(asyncflow.RunStarted(**E, pipeline="prices", tasks=5))
    try:
        display(asyncflow.TaskStarted(**E, task="ingest", attempt=1))
        display(asyncflow.TaskSucceeded(**E, task="ingest", attempt=1, duration=0.1))
        display(asyncflow.TaskCached(**E, task="clean", cache_key="k"))
        for name in ("fit_AAPL", "fit_MSFT"):
            display(asyncflow.TaskStarted(**E, task=name, attempt=1))
        error = ValueError("no data")
        display(asyncflow.AttemptFailed(**E, task="fit_MSFT", attempt=1, error=error, retry_in=0.25))
        display(asyncflow.TaskStarted(**E, task="fit_MSFT", attempt=2))
        display(asyncflow.TaskStarted(**E, task="fit_IBM", attempt=1))
        display(asyncflow.AttemptFailed(**E, task="fit_IBM", attempt=1, error=KeyError("IBM"), retry_in=None))
        display(asyncflow.TaskFailed(**E, task="fit_IBM", attempts=1, error=KeyError("IBM"), duration=0.2))
        text = _text(display)
    finally:
        display.close()
    assert "prices  3/5 tasks done" in text
    assert "1 succeeded · 1 cached · 1 failed · 0 skipped · 1 retry" in text
    assert "running (2): fit_AAPL 0.0 s · fit_MSFT (attempt 2) 0.0 s" in text
    assert "! fit_MSFT attempt 1 failed (ValueError: no data); retrying in 0.25 s" in text
    assert "✗ fit_IBM failed after 1 attempt (KeyError: 'IBM')" in text
    assert "ingest" not in text.split("running")[1]  # finished tasks leave the running list


async def test_live_display_draws_the_run_on_a_terminal_console() -> None:
    out = io.StringIO()
    display = ProgressDisplay(Console(file=out, force_terminal=True, width=100), refresh_per_second=20)
    p = asyncflow.Pipeline("live")

    @p.task
    async def first() -> int:
        await anyio.sleep(0.3)
        return 1

    @p.task
    async def second(first: int) -> int:
        return first + 1

    with display:
        result = await p.run(listeners=[display], log=False, checkpoints=False)
    assert result.ok
    raw = out.getvalue()
    assert "\x1b[" in raw  # drawn with terminal control sequences
    screen = ANSI.sub("", raw)
    assert "running (1): " in screen and "first" in screen  # a frame while `first` ran
    assert "live  2/2 tasks done" in screen  # the last frame stays
    assert "2 succeeded · 0 cached · 0 failed · 0 skipped · 0 retries" in screen


def test_pipes_get_plain_log_lines_without_control_characters(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    for _ in range(2):  # the second run has a cache hit, a retried, a failed and a skipped task
        proc = subprocess.run(
            [sys.executable, "-m", "asyncflow", str(MIXED), "--workdir", str(tmp_path)],
            capture_output=True,
            timeout=60,
            check=False,
            env=env,
        )
    assert proc.returncode == 1
    assert b"\x1b" not in proc.stdout and b"\x1b" not in proc.stderr
    assert b"\r" not in proc.stderr
    err = proc.stderr.decode()
    assert "attempt 1 failed (ValueError: flaky on attempt 1); retrying in 0.050 s" in err
    assert "tasks done" not in err  # no progress display off a terminal


SLOWISH = (
    "import anyio, asyncflow\n"
    "pipeline = asyncflow.Pipeline('slowish')\n"
    "@pipeline.task\n"
    "async def warmup() -> int:\n"
    "    return 1\n"
    "@pipeline.task(checkpoint=False)\n"
    "async def long_task(warmup: int) -> int:\n"
    "    await anyio.sleep(1.0)\n"
    "    return warmup\n"
)


def _on_a_terminal(tmp_path: Path, **env: str) -> tuple[int, str]:
    """Run the CLI on SLOWISH with a pseudo-terminal as its stdin, stdout and stderr, with
    ``env`` over a 120x40 xterm's; return its exit code and everything it wrote."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    module = tmp_path / "slowish.py"
    module.write_text(SLOWISH)
    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncflow", str(module), "--workdir", str(tmp_path / "wd")],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    return proc.wait(timeout=30), screen.decode(errors="replace")


def test_a_terminal_gets_the_live_display(tmp_path: Path) -> None:
    code, raw = _on_a_terminal(tmp_path)
    assert code == 0
    assert "\x1b[" in raw
    assert "\x1b[32m" in raw and "\x1b[36m" in raw  # the log lines' green time and cyan task
    text = ANSI.sub("", raw)
    assert "running (1): " in text and "long_task" in text
    assert "slowish  2/2 tasks done" in text
    assert "run " in text and "ok: 2 succeeded" in text  # the summary follows the display


def test_importing_asyncflow_and_its_cli_does_not_import_rich() -> None:
    code = "import sys, asyncflow, asyncflow._cli; assert 'rich' not in sys.modules, 'rich imported'"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_a_dumb_terminal_gets_plain_lines_and_no_color_drops_the_colors(tmp_path: Path) -> None:
    code, raw = _on_a_terminal(tmp_path / "dumb", TERM="dumb")
    assert code == 0 and "long_task succeeded on attempt 1" in raw
    assert "\x1b" not in raw  # no display, no colored log line
    code, raw = _on_a_terminal(tmp_path / "no_color", NO_COLOR="1")
    assert code == 0 and "slowish  2/2 tasks done" in ANSI.sub("", raw)  # the display, in no color
    assert "\x1b[32m" not in raw and "\x1b[36m" not in raw


def test_abandoning_the_display_shows_the_cursor_it_hid(tmp_path: Path) -> None:
    # A second Ctrl-C ends the process from a signal handler, with no time for rich to stop.
    screen = tmp_path / "screen"
    with open(screen, "w", encoding="utf-8") as file:
        console = Console(file=file, force_terminal=True, width=80)
        display = ProgressDisplay(console, refresh_per_second=20)
        display.abandon()  # not running yet: nothing to give back
        assert screen.read_bytes() == b""
        display(asyncflow.RunStarted(run_id="r", time=0.0, pipeline="p", tasks=1))
        file.flush()
        drawn = screen.read_bytes()
        assert b"\x1b[?25l" in drawn and b"\x1b[?25h" not in drawn  # the cursor is hidden
        display.abandon()
        assert screen.read_bytes()[len(drawn) :].startswith(b"\x1b[?25h")
        display.close()

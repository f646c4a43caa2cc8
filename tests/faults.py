"""Helpers for the fault tests (signals, crashes, locks, bad input): CLI subprocesses.

Each test writes a small pipeline file into its tmp_path and runs ``python -m asyncflow`` on
it with ``sys.executable``. Tasks signal progress by creating marker files; the tests poll
for those markers (with a deadline) instead of sleeping blindly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATES = {"succeeded", "failed", "skipped", "cached", "cancelled"}


def write_pipeline(directory: Path, source: str, name: str = "flow.py") -> Path:
    """Write a pipeline module (dedented) into ``directory`` and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this one, unbuffered, plus ``extra``."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def cli(
    *args: str | Path, cwd: Path = ROOT, environ: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asyncflow ARGS`` to its end and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "asyncflow", *map(str, args)],
        cwd=cwd,
        env=dict(environ) if environ is not None else env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(
    *args: str | Path, cwd: Path = ROOT, environ: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -m asyncflow ARGS`` in the background with piped output."""
    return subprocess.Popen(
        [sys.executable, "-m", "asyncflow", *map(str, args)],
        cwd=cwd,
        env=dict(environ) if environ is not None else env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def wait_for_file(path: Path, proc: subprocess.Popen[str] | None = None, timeout: float = 30.0) -> None:
    """Wait until ``path`` exists; fail early (with its output) if ``proc`` exits first."""

    def ready() -> bool:
        if path.exists():
            return True
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited with {proc.returncode} before {path.name}:\n{out}\n{err}")
        return False

    wait_until(ready, str(path), timeout)


def read_stderr_until(proc: subprocess.Popen[str], needle: str, timeout: float = 30.0) -> list[str]:
    """Read ``proc``'s stderr line by line until a line contains ``needle``; return the lines."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not found on stderr:\n{''.join(lines)}")


def states(stdout: str) -> dict[str, str]:
    """``{task: state}`` read from the summary table."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if len(cells) >= 2 and cells[1] in STATES:
            rows[cells[0]] = cells[1]
    return rows


def checkpoints(workdir: Path) -> dict[str, Any]:
    """``{task: result}`` of every checkpoint file in ``<workdir>/checkpoints``.

    Fails the test if any ``*.json`` there is not a complete checkpoint.
    """
    found = {}
    for path in sorted((workdir / "checkpoints").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert doc["task"] == path.stem and isinstance(doc["cache_key"], str), path
        found[path.stem] = doc["result"]
    return found


def leftovers(workdir: Path) -> list[str]:
    """Names in ``<workdir>/checkpoints`` that are not ``<task>.json`` checkpoints."""
    directory = workdir / "checkpoints"
    if not directory.exists():
        return []
    return sorted(
        p.name for p in directory.iterdir() if not (p.suffix == ".json" and not p.name.startswith("."))
    )

"""Helpers for the fault tests (signals, crashes, locks, bad input): CLI subprocesses.

Each test writes a small pipeline file into its tmp_path and runs ``python -m asyncflow`` on
it with ``sys.executable``. Tasks signal progress by creating marker files; the tests poll
for those markers (with a deadline) instead of sleeping blindly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from asyncflow._store import file_stem

ROOT = Path(__file__).resolve().parent.parent
STATES = {"succeeded", "failed", "skipped", "cached", "cancelled"}
_RESULT_FILE = re.compile(r"[^.][^/]*\.[0-9a-f]{16}\.[A-Za-z0-9]+")
_LEGACY = re.compile(r"[^.][^/]*\.json")


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


def pipeline_folder(workdir: Path, pipeline: str | None = None) -> Path:
    """The checkpoint folder of ``pipeline`` in ``<workdir>/checkpoints``.

    With ``pipeline=None``: the one pipeline folder there (fails the test if there are
    several); ``<workdir>/checkpoints/?`` (which does not exist) if there is none yet.
    """
    root = workdir / "checkpoints"
    if pipeline is not None:
        return root / file_stem(pipeline)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    assert len(folders) <= 1, f"several pipelines in {root}: {[f.name for f in folders]}"
    return folders[0] if folders else root / "?"


def journal_lines(workdir: Path, pipeline: str | None = None) -> list[dict[str, Any]]:
    """Every line of the pipeline's checkpoint journal, decoded, in order.

    Fails the test unless the journal is whole: every line complete JSON (the last one
    ending in a newline too), so a torn or half-written line fails it. ``[]`` when there
    is no journal.
    """
    journal = pipeline_folder(workdir, pipeline) / "journal.jsonl"
    if not journal.exists():
        return []
    data = journal.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{journal} ends in a torn line: {data[-80:]!r}"
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def checkpoints(workdir: Path, pipeline: str | None = None) -> dict[str, Any]:
    """``{task: result}`` of every live checkpoint of ``pipeline`` (see :func:`pipeline_folder`).

    Fails the test if any checkpoint is not complete: a journal line that is not whole
    JSON with its fields, or a result (inline or in its own file) whose bytes do not have
    the digest and size the line records.
    """
    folder = pipeline_folder(workdir, pipeline)
    live: dict[str, dict[str, Any]] = {}
    for doc in journal_lines(workdir, pipeline):
        if doc.get("deleted") is True:
            live.pop(doc["task"], None)
        else:
            assert isinstance(doc["key"], str) and len(doc["key"]) == 64, doc
            assert isinstance(doc["at"], float) and doc["ser"] == "json", doc
            live[doc["task"]] = doc
    found = {}
    for task, doc in live.items():
        if "file" in doc:
            data = (folder / doc["file"]).read_bytes()
            assert doc["file"] == f"{file_stem(task)}.{doc['digest'][:16]}.json", doc["file"]
        else:
            data = json.dumps(doc["result"], allow_nan=False, ensure_ascii=False).encode()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (doc["digest"], doc["size"]), task
        found[task] = json.loads(data)
    return found


def leftovers(workdir: Path) -> list[str]:
    """Names in ``<workdir>/checkpoints`` and its pipeline folders that hold no checkpoint data.

    Checkpoint data is a pipeline folder, its ``journal.jsonl``, its result files
    (``<task>.<16 hex digits>.<suffix>``) and, directly in ``checkpoints``, asyncflow
    0.1's ``<task>.json``: anything else (the temporary files of interrupted writes) is a
    leftover.
    """
    root = workdir / "checkpoints"
    if not root.exists():
        return []
    names = [p.name for p in root.iterdir() if not (p.is_dir() or _LEGACY.fullmatch(p.name))]
    for folder in (p for p in root.iterdir() if p.is_dir()):
        names += [
            f"{folder.name}/{p.name}"
            for p in folder.iterdir()
            if p.name != "journal.jsonl" and not _RESULT_FILE.fullmatch(p.name)
        ]
    return sorted(names)

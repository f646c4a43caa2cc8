"""Reading a pipeline's checkpoint journal in tests, without going through the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asyncflow._store import file_stem


def journal_of(workdir: Path, pipeline: str) -> Path:
    """The journal file of ``pipeline`` under ``workdir``."""
    return workdir / "checkpoints" / file_stem(pipeline) / "journal.jsonl"


def saved(workdir: Path, pipeline: str) -> dict[str, dict[str, Any]]:
    """``{task: its last journal line}`` for every task with a live checkpoint."""
    path = journal_of(workdir, pipeline)
    docs: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return docs
    for line in path.read_bytes().split(b"\n"):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("deleted"):
            docs.pop(doc["task"], None)
        else:
            docs[doc["task"]] = doc
    return docs


def append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (a test planting a line in a journal)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)

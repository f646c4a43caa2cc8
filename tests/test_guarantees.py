"""docs/guarantees.md names the tests that prove each promise: they must all exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_named_in_the_guarantees_exists() -> None:
    doc = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    defined: dict[str, set[str]] = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        source = path.read_text(encoding="utf-8")
        defined[path.stem] = set(re.findall(r"^\s*(?:async )?def (test_\w+)", source, re.MULTILINE))
    tests = set().union(*defined.values())
    named = set(re.findall(r"`(test_\w+)`", doc))
    missing = sorted(n for n in named if n not in tests and n not in defined)
    assert not missing, f"docs/guarantees.md names tests that do not exist: {missing}"
    assert len(named - set(defined)) >= 40


def test_the_readme_links_the_guarantees() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "[Guarantees](docs/guarantees.md)" in readme

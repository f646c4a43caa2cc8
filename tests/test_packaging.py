"""Packaging: the distribution's metadata, and messages that fit an installed package.

Optional dependencies are made absent in a subprocess whose ``sys.meta_path`` refuses to
import them, so these tests run the same whether trio and dask are installed or not.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from asyncflow._dist import DISTRIBUTION, install_hint

ROOT = Path(__file__).resolve().parent.parent

BLOCKED_RUN = textwrap.dedent(
    """
    import sys

    BLOCKED = set(sys.argv[1].split(","))

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    from asyncflow._cli import main

    sys.exit(main(sys.argv[2:]))
    """
)

PIPELINE = textwrap.dedent(
    """
    import asyncflow

    pipeline = asyncflow.Pipeline("tiny")

    @pipeline.task
    def numbers() -> list[int]:
        return [1, 2, 3]

    @pipeline.task
    async def total(numbers: list[int]) -> int:
        return sum(numbers)
    """
)


def run_without(blocked: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the command line with the top-level packages ``blocked`` (comma-separated) absent."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, blocked, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A two-task pipeline module in a fresh directory."""
    path = tmp_path / "tiny.py"
    path.write_text(PIPELINE)
    return path


def test_distribution_name_is_not_the_import_name() -> None:
    assert DISTRIBUTION == "asyncflow-dag"
    assert install_hint("trio") == "pip install 'asyncflow-dag[trio]'"
    meta = importlib.metadata.metadata(DISTRIBUTION)
    assert meta["Name"] == DISTRIBUTION
    assert meta["License-Expression"] == "MIT"
    classifiers = meta.get_all("Classifier") or []
    for wanted in ("Framework :: AnyIO", "Framework :: Trio", "Typing :: Typed"):
        assert wanted in classifiers
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"trio", "dask", "otel", "test"} <= extras


def test_entry_points_give_the_command_and_the_pytest_plugin() -> None:
    eps = importlib.metadata.distribution(DISTRIBUTION).entry_points
    assert {(ep.group, ep.name, ep.value) for ep in eps} >= {
        ("console_scripts", "asyncflow", "asyncflow._cli:main"),
        ("pytest11", "asyncflow", "asyncflow.testing"),
    }


def test_license_file_is_mit() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")


@pytest.mark.parametrize("extra", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_backend_trio_without_trio_is_a_one_line_usage_error(
    tiny: Path, tmp_path: Path, extra: list[str]
) -> None:
    done = run_without("trio", tiny, "--backend", "trio", "--workdir", tmp_path / "w", *extra, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "asyncflow: error: --backend trio needs trio, which is not installed: "
        "pip install 'asyncflow-dag[trio]'"
    ]
    assert done.stdout == ""
    assert not (tmp_path / "w").exists()


def test_backend_asyncio_does_not_need_trio(tiny: Path, tmp_path: Path) -> None:
    done = run_without("trio", tiny, "--workdir", tmp_path / "w", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout


def test_dask_not_installed_names_the_extra_of_the_installed_package(tiny: Path, tmp_path: Path) -> None:
    done = run_without(
        "dask,distributed", tiny, "--executor", "dask", "--workdir", tmp_path / "w", cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("asyncflow: error:")]
    assert len(errors) == 1, done.stderr
    assert "install them with: pip install 'asyncflow-dag[dask]'" in errors[0]
    assert "checkout" not in errors[0]

"""The command line's options (asyncflow._cli_args) as a user meets them: repeated
selection options, task names typed in another Unicode spelling, --threads."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from faults import cli, states, write_pipeline

FAN = """
    import asyncflow

    pipeline = asyncflow.Pipeline("fan")


    @pipeline.task
    def a() -> int:
        return 1


    @pipeline.task
    def b(a: int) -> int:
        return a + 1


    @pipeline.task
    def c(a: int) -> int:
        return a + 2


    @pipeline.task
    def d(a: int) -> int:
        return a + 3


    @pipeline.task
    def café(a: int) -> int:
        return a + 4
    """


def test_repeated_until_selects_the_tasks_upstream_of_every_target(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, FAN)
    result = cli(path, "--workdir", tmp_path / "w", "--until", "b", "--until", "c")
    assert result.returncode == 0, result.stderr
    assert states(result.stdout) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}


def test_repeated_from_and_until_narrow_each_other(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, FAN)
    listing = cli(path, "--list", "--json", "--from", "b", "--from", "d", "--until", "b", "--until", "c")
    assert listing.returncode == 0, listing.stderr
    assert [t["task"] for t in json.loads(listing.stdout)["tasks"]] == ["b"]  # the selection only


def test_a_repeated_unknown_target_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, FAN)
    result = cli(path, "--workdir", tmp_path / "w", "--until", "b", "--until", "cc")
    assert result.returncode == 2
    assert result.stderr.startswith("asyncflow: error: --until: ")
    assert "'cc'" in result.stderr


def test_a_task_name_typed_in_nfd_selects_the_nfc_task(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, FAN)
    typed = unicodedata.normalize("NFD", "café")
    assert typed != "café"
    result = cli(path, "--workdir", tmp_path / "w", "--until", typed)
    assert result.returncode == 0, result.stderr
    assert states(result.stdout) == {"a": "succeeded", "café": "succeeded"}


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_threads_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    path = write_pipeline(tmp_path, FAN)
    result = cli(path, "--workdir", tmp_path / "w", "--threads", value)
    assert result.returncode == 2
    assert result.stderr.startswith("asyncflow: error: argument --threads: expected a positive integer")

"""The live progress display of a run with mapped tasks (asyncflow.each).

The display counts instances: a mapped task counts as one task until it is expanded, then
gives way to its instances, so ``done`` reaches ``total`` at the end of every run and the
counts per state are those of ``RunResult.counts``.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from mapped_pipeline import make
from rich.console import Console

import asyncflow
from asyncflow import Event, TaskState
from asyncflow._events import instance_of
from asyncflow._progress import ProgressDisplay

E: dict[str, Any] = {"run_id": "r", "time": 0.0}


def _text(display: ProgressDisplay) -> str:
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    console.print(display.render())
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def _display() -> ProgressDisplay:
    return ProgressDisplay(Console(file=io.StringIO(), force_terminal=True, width=160), refresh_per_second=4)


def test_instance_of_splits_only_instance_names() -> None:
    assert instance_of("fetch[3]") == ("fetch", 3)
    assert instance_of("fetch[120]") == ("fetch", 120)
    for name in ("fetch", "fetch[]", "fetch[x]", "fetch[-1]", "fetch[²]", "fetch3]"):
        assert instance_of(name) is None, name


def test_total_grows_by_the_instances_and_the_mapped_task_gives_way() -> None:
    display = _display()
    display(asyncflow.RunStarted(**E, pipeline="p", tasks=3))  # urls, fetch (mapped), summary
    try:
        display(asyncflow.TaskSucceeded(**E, task="urls", attempt=1, duration=0.1))
        assert "1/3 tasks done" in _text(display)
        instances = tuple(f"fetch[{k}]" for k in range(5))
        display(asyncflow.TaskMapped(**E, task="fetch", instances=instances, over=("urls",)))
        text = _text(display)
        assert "1/7 tasks done" in text  # 3 - 1 + 5
        assert "mapped: fetch 0/5" in text
        display(asyncflow.TaskStarted(**E, task="fetch[0]", attempt=1))
        display(asyncflow.TaskSucceeded(**E, task="fetch[0]", attempt=1, duration=0.1))
        display(asyncflow.TaskCached(**E, task="fetch[1]", cache_key="k"))
        display(asyncflow.TaskStarted(**E, task="fetch[2]", attempt=1))
        text = _text(display)
        assert "3/7 tasks done" in text
        assert "mapped: fetch 2/5" in text
        assert "running (1): fetch[2] 0.0 s" in text
        error = ConnectionError("down")
        display(asyncflow.TaskFailed(**E, task="fetch[2]", attempts=1, error=error, duration=0.1))
        for k in (3, 4):
            display(asyncflow.TaskSucceeded(**E, task=f"fetch[{k}]", attempt=1, duration=0.1))
        mapping_error = asyncflow.MappingError("fetch", "1 of 5 instances of task 'fetch' did not succeed")
        display(asyncflow.TaskFailed(**E, task="fetch", attempts=0, error=mapping_error, duration=0.3))
        display(asyncflow.TaskSkipped(**E, task="summary", upstream="fetch", reason="upstream failed"))
        text = _text(display)
    finally:
        display.close()
    assert "7/7 tasks done" in text
    assert "4 succeeded · 1 cached · 1 failed · 1 skipped · 0 retries" in text
    assert "mapped:" not in text  # no mapped task is open any more
    assert "✗ fetch[2] failed after 1 attempt (ConnectionError: down)" in text
    assert "✗ fetch failed" not in text  # its failed instance was noted, not again as its summary


def test_only_the_first_open_mapped_tasks_are_named() -> None:
    display = _display()
    display(asyncflow.RunStarted(**E, pipeline="p", tasks=6))
    try:
        for g in "abcdef":
            display(asyncflow.TaskMapped(**E, task=g, instances=(f"{g}[0]", f"{g}[1]"), over=("x",)))
        display(asyncflow.TaskSucceeded(**E, task="a[0]", attempt=1, duration=0.1))
        text = _text(display)
    finally:
        display.close()
    assert "1/12 tasks done" in text
    assert "mapped: a 1/2 · b 0/2 · c 0/2 · d 0/2 · +2 more" in text


@pytest.mark.parametrize(
    ("items", "total"),
    [
        (["a", "bad", "c", "d"], 2 + 4 + 4),  # urls and summary, then 4 fetch and 4 parse
        ([], 2),  # no instances: fetch and parse give way to nothing
        ("not a list", 4),  # fetch fails before it expands: every task counts as itself
    ],
)
async def test_a_real_run_ends_with_every_task_done(items: Any, total: int, anyio_backend: str) -> None:
    display = _display()
    frames: dict[str, str] = {}
    grown = [4]  # the graph's tasks, then + count - 1 per expansion seen so far

    def snapshot(event: Event) -> None:  # called after the display took in the same event
        if isinstance(event, asyncflow.TaskMapped):
            grown[0] += event.count - 1
        if isinstance(event, asyncflow.TaskSucceeded) and event.task == "fetch[0]":
            frames["fetch[0] done"] = _text(display)
            frames["total then"] = str(grown[0])

    with display:
        result = await make(items).run(listeners=[display, snapshot], log=False, checkpoints=False)
    text = _text(display)
    assert f"mapped  {total}/{total} tasks done" in text
    assert sum(result.counts.values()) == total
    counts = " · ".join(
        f"{result.counts.get(s, 0)} {s.value}"
        for s in (TaskState.SUCCEEDED, TaskState.CACHED, TaskState.FAILED, TaskState.SKIPPED)
    )
    assert counts in text
    if items and isinstance(items, list):
        assert "mapped: fetch 1/4" in frames["fetch[0] done"]
        assert f"/{frames['total then']} tasks done" in frames["fetch[0] done"]
        assert result.tasks["fetch[1]"].state is TaskState.FAILED
        assert "✗ fetch[1] failed after 2 attempts (ConnectionError: cannot fetch bad)" in text
    if not isinstance(items, list):
        assert "✗ fetch failed (MappingError: task 'fetch' is mapped over the result of 'urls'" in text

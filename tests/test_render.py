"""Renderings for the command line (asyncflow._render): tables, Mermaid, DOT and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from asyncflow import Pipeline, RunResult, TaskRun, TaskState
from asyncflow._render import render_dot, render_mermaid, render_table, render_tasks, run_json


def small() -> Pipeline:
    """``a`` and ``b`` fan in to ``end`` (a name Mermaid reserves); ``c`` runs after ``a``."""
    p = Pipeline('with "quotes"')

    @p.task(retries=3, timeout=2.5, tags=("io", "net"))
    async def a() -> int:
        """Fetch a number."""
        return 1

    @p.task(checkpoint=False)
    async def b() -> int:
        return 2

    @p.task(name="end", inputs={"values": ["a", "b"]})
    async def total(values: list[int]) -> int:
        return sum(values)

    @p.task(after=["a"])
    async def c() -> None:
        return None

    return p


def test_mermaid_uses_safe_ids_and_dashes_ordering_only_edges() -> None:
    assert render_mermaid(small().validate()) == "\n".join(
        [
            "flowchart LR",
            '    t0["a"]',
            '    t1["b"]',
            '    t2["end"]',
            '    t3["c"]',
            "    t0 --> t2",
            "    t1 --> t2",
            "    t0 -.-> t3",
        ]
    )


def test_dot_quotes_names_and_dashes_ordering_only_edges() -> None:
    p = small()
    dot = render_dot(p.validate(), p.name)
    assert dot.splitlines()[0] == 'digraph "with \\"quotes\\"" {'
    assert '    "a" -> "end";' in dot.splitlines()
    assert '    "a" -> "c" [style=dashed];' in dot.splitlines()
    assert dot.endswith("}")


def test_renderings_keep_only_the_selected_tasks() -> None:
    graph = small().validate()
    assert render_mermaid(graph, {"a", "c"}).splitlines()[1:] == [
        '    t0["a"]',
        '    t3["c"]',
        "    t0 -.-> t3",
    ]
    assert [line.split()[0] for line in render_tasks(graph, {"end"}).splitlines()[2:]] == ["end"]


def test_task_list_shows_options_and_marks_after_dependencies() -> None:
    lines = render_tasks(small().validate()).splitlines()
    assert lines[0].split() == ["task", "upstream", "retries", "timeout", "checkpoint", "tags", "description"]
    assert lines[2].split() == ["a", "-", "3", "2.5", "s", "yes", "io,", "net", "Fetch", "a", "number."]
    assert lines[3].split()[:5] == ["b", "-", "0", "-", "no"]
    assert lines[4].split()[:3] == ["end", "a,", "b"]
    assert lines[5].split()[:3] == ["c", "a", "(after)"]


def test_table_aligns_columns_and_right_aligns_on_request() -> None:
    assert render_table([("x", "n", "note"), ("long", "10", "")], right={1}) == "\n".join(
        ["x      n  note", "----  --  ----", "long  10"]
    )


def test_run_json_is_strict_json_and_leaves_out_results_that_are_not() -> None:
    tasks = {
        "plain": TaskRun(name="plain", state=TaskState.SUCCEEDED, attempts=1, result={"n": 1}),
        "nan": TaskRun(name="nan", state=TaskState.CACHED, result=math.nan),
        "obj": TaskRun(name="obj", state=TaskState.SUCCEEDED, attempts=1, result=object()),
        "bad": TaskRun(name="bad", state=TaskState.FAILED, attempts=2, error=KeyError("x")),
    }
    result = RunResult(
        run_id="r",
        pipeline="p",
        params={"when": object()},
        started_at=100.0,
        finished_at=101.5,
        duration=1.5,
        tasks=tasks,
    )
    doc = json.loads(json.dumps(run_json(result, Path("log")), allow_nan=False))
    assert doc["duration_s"] == 1.5 and doc["ok"] is False and doc["log"] == "log"
    assert doc["params"]["when"].startswith("<object object")
    assert doc["tasks"]["plain"]["result"] == {"n": 1}
    assert "result" not in doc["tasks"]["nan"] and "result" not in doc["tasks"]["obj"]
    assert doc["tasks"]["bad"]["error"] == {"type": "KeyError", "message": "'x'"}
    assert doc["counts"] == {"succeeded": 2, "cached": 1, "failed": 1}

"""Plans (asyncflow._plan): what a run would do and why, checked against what runs do."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from asyncflow import MemoryStore, Pipeline, RunResult, TaskState, UnknownDependencyError
from asyncflow._plan import Action, Plan, make_plan, select

ACTION_OF_STATE = {
    TaskState.SUCCEEDED: Action.RUN,
    TaskState.CACHED: Action.CACHED,
    TaskState.FAILED: Action.FAIL,
    TaskState.SKIPPED: Action.SKIP,
}


def chain(*, version: int = 1, checkpoint_b: bool = True) -> Pipeline:
    """``source -> middle -> sink`` plus ``side`` after ``source``.

    ``source`` reads ``params["data"]`` through its ``cache_key_fn``; ``sink`` declares
    ``params``; ``version`` changes the code of ``middle``.
    """
    p = Pipeline("chain", params={"data": "one", "label": "x"})

    @p.task(cache_key_fn=lambda params: params["data"])
    async def source() -> str:
        return "source"

    @p.task(name="middle", checkpoint=checkpoint_b)
    async def middle(source: str, v: int = version) -> str:
        return f"{source}-{v}"

    @p.task
    async def sink(middle: str, params: Mapping[str, Any]) -> str:
        return f"{middle}-{params['label']}"

    @p.task(after=["source"])
    async def side() -> int:
        return 0

    return p


async def plan_of(p: Pipeline, store: MemoryStore, **kwargs: Any) -> Plan:
    params = p.resolve_params(kwargs.pop("params", None))
    return await make_plan(p.validate(), pipeline=p.name, params=params, store=store, **kwargs)


def reasons(plan: Plan) -> dict[str, tuple[str, str]]:
    return {t.name: (t.action.value, t.reason) for t in plan.tasks}


async def run(p: Pipeline, store: MemoryStore, tmp_path: Path, **kwargs: Any) -> RunResult:
    return await p.run(workdir=tmp_path, store=store, log=False, **kwargs)


def assert_plan_matches_run(plan: Plan, result: RunResult) -> None:
    """The plan predicted the run: same tasks, same outcome, same cache keys (where the plan
    knows one: not below a task without checkpoint, whose key is made new by each run)."""
    assert [t.name for t in plan.tasks] == list(result.tasks)
    for planned in plan.tasks:
        ran = result.tasks[planned.name]
        assert planned.action is ACTION_OF_STATE[ran.state], planned
        if planned.cache_key is not None:
            assert planned.cache_key == ran.cache_key, planned


async def test_fresh_store_plans_every_task_to_run_for_lack_of_a_checkpoint(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    plan = await plan_of(p, store)
    assert reasons(plan) == dict.fromkeys(["source", "middle", "sink", "side"], ("run", "no checkpoint"))
    assert store.texts == {}  # planning writes nothing
    assert_plan_matches_run(plan, await run(p, store, tmp_path))


async def test_after_a_run_everything_is_cached_with_the_runs_own_keys(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    first = await run(p, store, tmp_path)
    plan = await plan_of(p, store)
    assert {t.action for t in plan.tasks} == {Action.CACHED}
    assert {t.reason for t in plan.tasks} == {"checkpoint matches"}
    assert [t.cache_key for t in plan.tasks] == [first.tasks[n].cache_key for n in first.tasks]
    assert_plan_matches_run(plan, await run(p, store, tmp_path))


async def test_changed_code_reruns_the_task_and_everything_downstream(tmp_path: Path) -> None:
    store = MemoryStore()
    await run(chain(version=1), store, tmp_path)
    p = chain(version=2)
    plan = await plan_of(p, store)
    assert reasons(plan) == {
        "source": ("cached", "checkpoint matches"),
        "middle": ("run", "its code changed"),
        "sink": ("run", "an upstream task will run (middle)"),
        "side": ("cached", "checkpoint matches"),
    }
    assert_plan_matches_run(plan, await run(p, store, tmp_path))


async def test_changed_parameters_rerun_the_tasks_that_declare_params(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    await run(p, store, tmp_path)
    plan = await plan_of(p, store, params={"label": "y"})
    assert reasons(plan)["sink"] == ("run", "parameters changed")
    assert plan.by_action(Action.RUN) == ["sink"]
    assert_plan_matches_run(plan, await run(p, store, tmp_path, params={"label": "y"}))


async def test_changed_input_reruns_the_task_and_its_downstream(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    await run(p, store, tmp_path)
    plan = await plan_of(p, store, params={"data": "two"})
    assert reasons(plan) == {
        "source": ("run", "input changed"),
        "middle": ("run", "an upstream task will run (source)"),
        "sink": ("run", "parameters changed"),  # it sees every parameter, "data" too
        "side": ("run", "an upstream task will run (source)"),
    }
    assert_plan_matches_run(plan, await run(p, store, tmp_path, params={"data": "two"}))


async def test_an_upstream_rerun_in_a_partial_run_shows_as_upstream_changed(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    await run(p, store, tmp_path)
    await run(p, store, tmp_path, params={"data": "two"}, only=["source"])
    plan = await plan_of(p, store, params={"data": "two"})
    assert reasons(plan)["source"] == ("cached", "checkpoint matches")
    assert reasons(plan)["middle"] == ("run", "upstream changed (source)")
    assert_plan_matches_run(plan, await run(p, store, tmp_path, params={"data": "two"}))


async def test_force_plans_every_checkpointed_task_as_forced(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    await run(p, store, tmp_path)
    plan = await plan_of(p, store, force=True)
    assert {t.reason for t in plan.tasks} == {"forced (--no-skip)"}
    assert_plan_matches_run(plan, await run(p, store, tmp_path, force=True))


async def test_a_task_without_checkpoint_always_runs_and_so_does_its_downstream(tmp_path: Path) -> None:
    p, store = chain(checkpoint_b=False), MemoryStore()
    await run(p, store, tmp_path)
    plan = await plan_of(p, store)
    assert reasons(plan)["middle"] == ("run", "checkpoint disabled")
    assert reasons(plan)["sink"] == ("run", "an upstream task will run (middle)")
    assert_plan_matches_run(plan, await run(p, store, tmp_path))


async def test_checkpoints_without_key_parts_still_load_and_say_cache_key_changed(tmp_path: Path) -> None:
    store = MemoryStore()
    await run(chain(version=1), store, tmp_path)
    old = json.loads(store.texts["middle"])
    del old["key_parts"]  # as written by asyncflow before key parts were stored
    store.texts["middle"] = json.dumps(old)
    checkpoint = await store.load("middle")
    assert checkpoint is not None and checkpoint.key_parts is None
    assert reasons(await plan_of(chain(version=1), store))["middle"] == ("cached", "checkpoint matches")
    assert reasons(await plan_of(chain(version=2), store))["middle"] == ("run", "cache key changed")


async def test_checkpoints_store_the_parts_of_their_key(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    result = await run(p, store, tmp_path)
    checkpoint = await store.load("middle")
    assert checkpoint is not None and checkpoint.key_parts is not None
    assert set(checkpoint.key_parts) == {"code", "params", "extra", "upstream"}
    assert checkpoint.key_parts["upstream"] == [
        ["source", result.tasks["source"].cache_key],
        ["source", "source"],
    ]
    saved = await store.save("t", "k", [1], key_parts={"code": "c"})
    assert saved.key_parts == {"code": "c"} == (await store.load("t")).key_parts  # type: ignore[union-attr]


async def test_a_failing_cache_key_fn_plans_a_failure_and_skips_downstream(tmp_path: Path) -> None:
    p = Pipeline("broken_key")

    def unreadable(params: Mapping[str, Any]) -> str:
        raise FileNotFoundError("no such file: data.csv")

    @p.task(cache_key_fn=unreadable)
    async def load() -> int:
        return 1

    @p.task
    async def use(load: int) -> int:
        return load

    @p.task
    async def report(use: int) -> int:
        return use

    store = MemoryStore()
    plan = await plan_of(p, store)
    assert reasons(plan) == {
        "load": ("fail", "its cache_key_fn raises FileNotFoundError: no such file: data.csv"),
        "use": ("skip", "upstream task 'load' would fail"),
        "report": ("skip", "upstream task 'use' would be skipped"),
    }
    assert_plan_matches_run(plan, await run(p, store, tmp_path))


async def test_a_partial_plan_loads_unselected_upstream_and_names_missing_checkpoints(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    plan = await plan_of(p, store, selected=["middle"])
    assert reasons(plan) == {
        "source": ("missing", "no checkpoint, and a selected task needs its result"),
        "middle": ("run", "no checkpoint"),
    }
    assert plan.missing == ["source"]

    await run(p, store, tmp_path)
    plan = await plan_of(p, store, params={"data": "two"}, selected=["middle"])
    assert reasons(plan) == {
        "source": ("cached", "not selected: loaded from its checkpoint (stale: input changed)"),
        "middle": ("cached", "checkpoint matches"),
    }
    assert [t.selected for t in plan.tasks] == [False, True]
    assert_plan_matches_run(plan, await run(p, store, tmp_path, params={"data": "two"}, only=["middle"]))


# -- selections --------------------------------------------------------------------------------


def test_select_only_from_until_and_their_intersection() -> None:
    graph = chain().validate()
    assert select(graph) is None
    assert select(graph, only=["sink", "source"]) == ["source", "sink"]  # definition order
    assert select(graph, start="middle") == ["middle", "sink"]
    assert select(graph, end="middle") == ["source", "middle"]
    assert select(graph, start="source", end="middle") == ["source", "middle"]
    assert select(graph, only=["side", "sink"], start="middle") == ["sink"]


def test_select_rejects_unknown_names_and_empty_selections() -> None:
    graph = chain().validate()
    with pytest.raises(UnknownDependencyError, match="there is no task named 'midle'; did you mean 'middle'"):
        select(graph, only=["midle"])
    with pytest.raises(ValueError, match="the selection is empty"):
        select(graph, start="sink", end="source")

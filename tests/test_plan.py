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
        if planned.reason.endswith("cached if its result is unchanged"):  # known only in the run
            assert ran.state in (TaskState.SUCCEEDED, TaskState.CACHED), planned
            continue
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
        "middle": ("run", reasons(plan)["middle"][1]),
        "sink": ("run", "upstream middle will run; cached if its result is unchanged"),
        "side": ("cached", "checkpoint matches"),
    }
    # middle's code is the same; the value bound to its default changed.
    assert reasons(plan)["middle"][1] in ("default v changed", "its code changed")
    result = await run(p, store, tmp_path)
    assert_plan_matches_run(plan, result)
    assert result.tasks["sink"].state is TaskState.SUCCEEDED  # its input changed


async def test_changed_parameters_rerun_only_the_tasks_that_read_them(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    await run(p, store, tmp_path)
    plan = await plan_of(p, store, params={"label": "y"})
    assert reasons(plan)["sink"] == ("run", "parameter label changed")
    assert plan.by_action(Action.RUN) == ["sink"]
    assert_plan_matches_run(plan, await run(p, store, tmp_path, params={"label": "y"}))


async def test_changed_input_reruns_the_task_and_its_downstream(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    await run(p, store, tmp_path)
    plan = await plan_of(p, store, params={"data": "two"})
    assert reasons(plan) == {
        "source": ("run", "input changed (its cache_key_fn value)"),
        "middle": ("run", "upstream source will run; cached if its result is unchanged"),
        "sink": ("run", "upstream middle will run; cached if its result is unchanged"),
        "side": ("run", "upstream source will run (this task depends on what it does)"),  # after=
    }
    result = await run(p, store, tmp_path, params={"data": "two"})
    assert_plan_matches_run(plan, result)
    # source ran again and returned what it returned before: no task fed its result runs
    # (early cutoff), and sink, which reads "label" only, does not care that "data" changed;
    # side, ordered after it with no data (after=), may depend on what it did: it runs.
    assert {n for n, t in result.tasks.items() if t.state is TaskState.SUCCEEDED} == {"source", "side"}


async def test_an_upstream_rerun_with_another_result_shows_as_upstream_result_changed(tmp_path: Path) -> None:
    store = MemoryStore()
    await run(chain(version=1), store, tmp_path)
    await run(chain(version=2), store, tmp_path, only=["middle"])
    p = chain(version=2)
    plan = await plan_of(p, store)
    assert reasons(plan)["middle"] == ("cached", "checkpoint matches")
    assert reasons(plan)["sink"] == ("run", "upstream result changed (middle)")
    assert_plan_matches_run(plan, await run(p, store, tmp_path))


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
    assert reasons(plan)["sink"] == ("run", "upstream middle will run; cached if its result is unchanged")
    result = await run(p, store, tmp_path)
    assert_plan_matches_run(plan, result)
    # middle always runs, but returns the same JSON value: sink stays cached.
    assert result.tasks["middle"].state is TaskState.SUCCEEDED
    assert result.tasks["sink"].state is TaskState.CACHED


async def test_checkpoints_without_key_parts_still_load_and_say_cache_key_changed(tmp_path: Path) -> None:
    store = MemoryStore()
    await run(chain(version=1), store, tmp_path)
    old = json.loads(store.texts["middle"])
    del old["parts"]  # as written by asyncflow before key parts were stored
    store.texts["middle"] = json.dumps(old)
    checkpoint = await store.load("middle")
    assert checkpoint is not None and checkpoint.key_parts is None
    assert reasons(await plan_of(chain(version=1), store))["middle"] == ("cached", "checkpoint matches")
    assert reasons(await plan_of(chain(version=2), store))["middle"] == (
        "run",
        "cache key changed (checkpoint of an older asyncflow)",
    )


async def test_checkpoints_store_the_parts_of_their_key(tmp_path: Path) -> None:
    p, store = chain(), MemoryStore()
    result = await run(p, store, tmp_path)
    checkpoint = await store.load("middle")
    assert checkpoint is not None and checkpoint.key_parts is not None
    assert set(checkpoint.key_parts) == {"code", "code_parts", "params", "extra", "upstream", "serializer"}
    source = await store.load("source")
    assert source is not None and source.cache_key == result.tasks["source"].cache_key
    assert checkpoint.key_parts["upstream"] == [["source", source.digest], ["source", "source"]]
    assert checkpoint.key_parts["params"] == {}  # middle reads no parameter
    sink = await store.load("sink")
    assert sink is not None and sink.key_parts is not None and list(sink.key_parts["params"]) == ["label"]
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
        "source": (
            "cached",
            "not selected: loaded from its checkpoint (stale: input changed (its cache_key_fn value))",
        ),
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

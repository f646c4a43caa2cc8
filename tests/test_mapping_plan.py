"""Dry-run plans of mapped tasks (asyncflow._plan with asyncflow.each), on asyncio and trio.

A mapped task's instances are planned when the items are known without running (every
task it is mapped over would be cached); each prediction is then checked against a real
run: the instances the plan calls cached are exactly those the run loads, with the same
cache keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncflow
from asyncflow import MemoryStore, Pipeline, RunResult, TaskState
from asyncflow._plan import Action, Plan, PlannedTask, make_plan


def pages(*, version: int = 1) -> Pipeline:
    """``urls`` (from params) -> ``fetch`` (mapped, also takes ``factor``) -> ``parse``
    (mapped over fetch) -> ``summary`` (the list). ``version`` changes parse's code;
    ``factor`` is ``params["factor"] // 10``, so 20 and 25 give the same result."""
    p = Pipeline("pages", params={"items": "a,b,c", "factor": 20})

    @p.task
    async def urls(params: Any) -> Any:
        text = params["items"]
        return {"not": "a list"} if text == "dict" else text.split(",") if text else []

    @p.task
    async def factor(params: Any) -> int:
        return int(params["factor"]) // 10

    @p.task(inputs={"url": asyncflow.each("urls")})
    async def fetch(url: str, factor: int) -> dict[str, Any]:
        if url.startswith("bad"):
            raise ConnectionError(f"cannot fetch {url}")
        return {"url": url, "n": factor}

    @p.task(inputs={"page": asyncflow.each("fetch")})
    async def parse(page: dict[str, Any], v: int = version) -> str:
        return f"{page['url'].upper()}{v}"

    @p.task
    async def summary(parse: list[str]) -> str:
        return "+".join(parse)

    return p


async def plan_of(p: Pipeline, store: MemoryStore, **kwargs: Any) -> Plan:
    params = p.resolve_params(kwargs.pop("params", None))
    return await make_plan(p.validate(), pipeline=p.name, params=params, store=store, **kwargs)


async def run(p: Pipeline, store: MemoryStore, tmp_path: Path, **kwargs: Any) -> RunResult:
    return await p.run(workdir=tmp_path, store=store, log=False, **kwargs)


def planned(plan: Plan) -> dict[str, tuple[str, str]]:
    return {t.name: (t.action.value, t.reason) for t in plan.tasks}


def task(plan: Plan, name: str) -> PlannedTask:
    return next(t for t in plan.tasks if t.name == name)


def assert_instances_match_run(plan: Plan, result: RunResult) -> None:
    """Every instance the plan knows: cached in the plan exactly when cached in the run,
    with the same key; planned to run exactly when it ran (or failed)."""
    checked = 0
    for t in plan.tasks:
        for i in t.instances or ():
            ran = result.tasks[i.name]
            assert ran.parent == t.name
            if i.action is Action.CACHED:
                assert ran.state is TaskState.CACHED, i
                assert ran.cache_key == i.cache_key
            elif i.reason.endswith("cached if its result is unchanged"):
                assert ran.state in (TaskState.SUCCEEDED, TaskState.CACHED), i
            else:
                assert i.action is Action.RUN
                assert ran.state in (TaskState.SUCCEEDED, TaskState.FAILED), i
            checked += 1
    assert checked > 0


async def test_unknown_before_the_first_run_then_every_instance_counted(tmp_path: Path) -> None:
    p, store = pages(), MemoryStore()
    fresh = await plan_of(p, store)
    assert planned(fresh) == {
        "urls": ("run", "no checkpoint"),
        "factor": ("run", "no checkpoint"),
        "fetch": ("run", "mapped over urls (known when it runs)"),
        "parse": ("run", "mapped over fetch (known when it runs)"),
        "summary": ("run", "no checkpoint"),
    }
    assert task(fresh, "fetch").over == ("urls",) and task(fresh, "fetch").instances is None
    first = await run(p, store, tmp_path)
    assert first.ok

    again = await plan_of(p, store)
    assert planned(again) == {
        "urls": ("cached", "checkpoint matches"),
        "factor": ("cached", "checkpoint matches"),
        "fetch": ("cached", "mapped over urls: 3 instances: 3 cached"),
        "parse": ("cached", "mapped over fetch: 3 instances: 3 cached"),
        "summary": ("cached", "checkpoint matches"),  # the list's digest is known
    }
    fetch = task(again, "fetch").instances
    assert fetch is not None
    assert [i.name for i in fetch] == ["fetch[0]", "fetch[1]", "fetch[2]"]
    assert [i.cache_key for i in fetch] == [t.cache_key for t in first.instances("fetch")]
    parse = task(again, "parse").instances
    assert parse is not None
    assert [i.cache_key for i in parse] == [t.cache_key for t in first.instances("parse")]
    second = await run(p, store, tmp_path)
    assert_instances_match_run(again, second)
    assert second.tasks["summary"].state is TaskState.CACHED


async def test_a_failed_instance_is_the_one_that_would_run(tmp_path: Path) -> None:
    p, store = pages(), MemoryStore()
    params = {"items": "a,bad,c"}
    first = await run(p, store, tmp_path, params=params)
    assert first.tasks["fetch[1]"].state is TaskState.FAILED
    plan = await plan_of(p, store, params=params)
    assert planned(plan) == {
        "urls": ("cached", "checkpoint matches"),
        "factor": ("cached", "checkpoint matches"),
        "fetch": ("run", "mapped over urls: 3 instances: 1 would run (no checkpoint), 2 cached"),
        # One fetch instance would run: parse's items are known only in the run.
        "parse": ("run", "mapped over fetch (known when it runs)"),
        "summary": ("run", "no checkpoint"),
    }
    fetch = task(plan, "fetch").instances
    assert fetch is not None
    assert [(i.name, i.action, i.reason) for i in fetch] == [
        ("fetch[0]", Action.CACHED, "checkpoint matches"),
        ("fetch[1]", Action.RUN, "no checkpoint"),
        ("fetch[2]", Action.CACHED, "checkpoint matches"),
    ]
    assert_instances_match_run(plan, await run(p, store, tmp_path, params=params))


async def test_a_new_item_runs_one_instance_and_a_reordered_list_none(tmp_path: Path) -> None:
    """The planner finds instance checkpoints by item value, as the runner does."""
    p, store = pages(), MemoryStore()
    await run(p, store, tmp_path, params={"items": "a,b,c"})
    grown = {"items": "c,a,b,d"}
    await run(p, store, tmp_path, params=grown, only=["urls"])  # urls' checkpoint: the new list
    plan = await plan_of(p, store, params=grown)
    assert planned(plan)["fetch"] == (
        "run",
        "mapped over urls: 4 instances: 1 would run (no checkpoint), 3 cached",
    )
    fetch = task(plan, "fetch").instances
    assert fetch is not None
    assert [i.action for i in fetch] == [Action.CACHED] * 3 + [Action.RUN]  # d, at the end
    assert_instances_match_run(plan, await run(p, store, tmp_path, params=grown))

    reordered = {"items": "b,d,a,c"}
    await run(p, store, tmp_path, params=reordered, only=["urls"])
    plan = await plan_of(p, store, params=reordered)
    assert planned(plan)["fetch"] == ("cached", "mapped over urls: 4 instances: 4 cached")
    assert planned(plan)["parse"] == ("cached", "mapped over fetch: 4 instances: 4 cached")
    assert planned(plan)["summary"] == ("run", "upstream result changed (parse)")  # the list's order
    result = await run(p, store, tmp_path, params=reordered)
    assert_instances_match_run(plan, result)
    assert result.tasks["summary"].state is TaskState.SUCCEEDED
    assert result.tasks["summary"].result == "B1+D1+A1+C1"


async def test_below_a_shared_input_that_would_run_instances_run_only_if_it_changes(
    tmp_path: Path,
) -> None:
    p, store = pages(), MemoryStore()
    await run(p, store, tmp_path)
    plan = await plan_of(p, store, params={"factor": 25})
    maybe = "upstream factor will run; cached if its result is unchanged"
    assert planned(plan)["factor"] == ("run", "parameter factor changed")
    assert planned(plan)["fetch"] == ("run", f"mapped over urls: 3 instances; {maybe}")
    fetch = task(plan, "fetch").instances
    assert fetch is not None and {i.reason for i in fetch} == {maybe}
    assert planned(plan)["parse"] == ("run", "mapped over fetch (known when it runs)")
    result = await run(p, store, tmp_path, params={"factor": 25})
    assert_instances_match_run(plan, result)
    # 25 // 10 == 20 // 10: the run's early cutoff keeps every instance cached.
    assert {t.state for t in result.instances("fetch")} == {TaskState.CACHED}


async def test_a_chained_map_is_planned_when_every_upstream_instance_is_cached(tmp_path: Path) -> None:
    store = MemoryStore()
    await run(pages(version=1), store, tmp_path)
    changed = pages(version=2)  # parse's code changed
    plan = await plan_of(changed, store)
    assert planned(plan)["fetch"] == ("cached", "mapped over urls: 3 instances: 3 cached")
    assert planned(plan)["parse"] == (
        "run",
        "mapped over fetch: 3 instances: 3 would run (default v changed)",
    )
    assert planned(plan)["summary"] == (
        "run",
        "upstream parse will run; cached if its result is unchanged",
    )
    parse = task(plan, "parse").instances
    assert parse is not None
    assert [i.action for i in parse] == [Action.RUN] * 3
    assert all(i.reason != "no checkpoint" for i in parse)  # found, and told why it differs
    result = await run(changed, store, tmp_path)
    assert_instances_match_run(plan, result)
    assert result.tasks["summary"].result == "A2+B2+C2"


async def test_a_result_that_is_not_a_list_would_fail_the_mapped_task(tmp_path: Path) -> None:
    p, store = pages(), MemoryStore()
    params = {"items": "dict"}
    first = await run(p, store, tmp_path, params=params)
    assert first.tasks["fetch"].state is TaskState.FAILED
    plan = await plan_of(p, store, params=params)
    action, reason = planned(plan)["fetch"]
    assert action == "fail" and reason == str(first.tasks["fetch"].error)
    assert "'urls'" in reason and "dict" in reason
    assert planned(plan)["parse"] == ("skip", "upstream task 'fetch' would fail")
    assert planned(plan)["summary"] == ("skip", "upstream task 'parse' would be skipped")


async def test_zipped_inputs_of_unequal_lengths_would_fail(tmp_path: Path) -> None:
    p = Pipeline("zip")

    @p.task
    async def names() -> list[str]:
        return ["x", "y", "z"]

    @p.task
    async def sizes() -> list[int]:
        return [1]

    @p.task(inputs={"name": asyncflow.each("names"), "size": asyncflow.each("sizes")})
    async def label(name: str, size: int) -> str:
        return name

    store = MemoryStore()
    await run(p, store, tmp_path)
    plan = await plan_of(p, store)
    action, reason = planned(plan)["label"]
    assert action == "fail"
    assert "'names' has 3 items" in reason and "'sizes' has 1 items" in reason


async def test_zipped_items_are_planned_as_they_are_keyed(tmp_path: Path) -> None:
    p = Pipeline("zipped", params={"prefix": ">"})

    @p.task
    async def names() -> list[str]:
        return ["x", "y"]

    @p.task
    async def sizes() -> list[int]:
        return [1, 2]

    @p.task(inputs={"name": asyncflow.each("names"), "size": asyncflow.each("sizes")})
    async def label(name: str, size: int, params: Any) -> str:
        return f"{params['prefix']}{name}{size}"

    store = MemoryStore()
    first = await run(p, store, tmp_path)
    plan = await plan_of(p, store)
    assert planned(plan)["label"] == ("cached", "mapped over names, sizes: 2 instances: 2 cached")
    assert_instances_match_run(plan, await run(p, store, tmp_path))
    changed = await plan_of(p, store, params={"prefix": "<"})  # a parameter the instances read
    assert planned(changed)["label"] == (
        "run",
        "mapped over names, sizes: 2 instances: 2 would run (parameter prefix changed)",
    )
    instances = task(changed, "label").instances
    assert instances is not None and {i.reason for i in instances} == {"parameter prefix changed"}
    assert [i.stored_key for i in instances] == [t.cache_key for t in first.instances("label")]


async def test_an_empty_list_plans_no_instance(tmp_path: Path) -> None:
    p, store = pages(), MemoryStore()
    await run(p, store, tmp_path, params={"items": ""})
    plan = await plan_of(p, store, params={"items": ""})
    assert planned(plan)["fetch"] == ("cached", "mapped over urls: 0 instances")
    assert planned(plan)["parse"] == ("cached", "mapped over fetch: 0 instances")
    assert planned(plan)["summary"] == ("cached", "checkpoint matches")
    assert task(plan, "fetch").instances == ()


async def test_forced_instances_and_unknown_items(tmp_path: Path) -> None:
    p, store = pages(), MemoryStore()
    await run(p, store, tmp_path)
    forced = await plan_of(p, store, force=True)
    assert planned(forced)["fetch"] == ("run", "mapped over urls (known when it runs)")
    # In a partial run the unselected urls is loaded, so its items are known.
    only = await plan_of(p, store, force=True, selected=["fetch"])
    assert planned(only)["urls"] == ("cached", "not selected: loaded from its checkpoint")
    assert planned(only)["fetch"] == (
        "run",
        "mapped over urls: 3 instances: 3 would run (forced (--no-skip))",
    )
    instances = task(only, "fetch").instances
    assert instances is not None and {i.reason for i in instances} == {"forced (--no-skip)"}


async def test_a_partial_run_plans_an_unselected_mapped_task_like_a_full_run(tmp_path: Path) -> None:
    p, store = pages(), MemoryStore()
    nothing = await plan_of(p, store, selected=["summary"])
    assert nothing.missing == ["urls", "factor"]  # never fetch or parse: they have no checkpoint
    assert planned(nothing)["fetch"] == ("run", "mapped over urls (known when it runs)")
    assert task(nothing, "fetch").selected is False

    await run(p, store, tmp_path)
    plan = await plan_of(p, store, selected=["summary"])
    assert plan.missing == []
    assert planned(plan) == {
        "urls": ("cached", "not selected: loaded from its checkpoint"),
        "factor": ("cached", "not selected: loaded from its checkpoint"),
        "fetch": ("cached", "mapped over urls: 3 instances: 3 cached"),
        "parse": ("cached", "mapped over fetch: 3 instances: 3 cached"),
        "summary": ("cached", "checkpoint matches"),
    }
    result = await run(p, store, tmp_path, only=["summary"])
    assert result.ok and list(result.tasks)[:5] == ["urls", "factor", "fetch", "parse", "summary"]
    assert_instances_match_run(plan, result)

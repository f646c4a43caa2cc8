"""Run-time fan-out (asyncflow.each, asyncflow._mapping), on asyncio and on trio.

Each test states one rule of the issue: instances are tasks (own attempts, retries, pool
slots, events, checkpoints), results come back in item order, chained maps have no
barrier, instances are cached by their item's value, and a failed instance costs only
itself and what depends on it. Timing is asserted through the order of events, with
margins a loaded 2-core machine keeps.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import asyncflow
from asyncflow import (
    Event,
    MappingError,
    MemoryStore,
    Pipeline,
    PipelineDefinitionError,
    RunResult,
    TaskFailed,
    TaskMapped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
    UnknownDependencyError,
)

OK = (TaskState.SUCCEEDED, TaskState.CACHED)


async def run(p: Pipeline, **kwargs: Any) -> RunResult:
    kwargs.setdefault("log", False)
    kwargs.setdefault("checkpoints", "store" in kwargs)
    return await p.run(**kwargs)


def index_of(events: list[Event], kind: type[Event], task: str) -> int:
    for i, e in enumerate(events):
        if isinstance(e, kind) and getattr(e, "task", None) == task:
            return i
    raise AssertionError(f"no {kind.__name__} for {task!r}")


def urls_pipeline(items: list[Any], calls: list[str] | None = None) -> Pipeline:
    """urls -> fetch (mapped) -> parse (mapped over fetch) -> summary (takes the list)."""
    p = Pipeline("mapped")
    seen = calls if calls is not None else []

    @p.task(checkpoint=False)
    async def urls() -> list[Any]:
        return list(items)

    @p.task(inputs={"url": asyncflow.each("urls")})
    async def fetch(url: str) -> dict[str, str]:
        seen.append(f"fetch {url}")
        await anyio.lowlevel.checkpoint()
        if url == "bad":
            raise ConnectionError(f"cannot fetch {url}")
        return {"url": url}

    @p.task(inputs={"page": asyncflow.each("fetch")})
    def parse(page: dict[str, str]) -> str:
        seen.append(f"parse {page['url']}")
        return page["url"].upper()

    @p.task
    async def summary(parse: list[str]) -> str:
        seen.append("summary")
        return "+".join(parse)

    return p


# -- shape ------------------------------------------------------------------------------------


async def test_each_item_runs_one_instance_and_the_list_comes_back_in_item_order() -> None:
    events: list[Event] = []
    result = await run(urls_pipeline(["a", "b", "c"]), listeners=[events.append])
    assert result.ok
    assert result.tasks["summary"].result == "A+B+C"
    assert result.tasks["fetch"].result == [{"url": "a"}, {"url": "b"}, {"url": "c"}]
    assert result.tasks["fetch"].instances == ("fetch[0]", "fetch[1]", "fetch[2]")
    assert [t.item for t in result.instances("fetch")] == ["a", "b", "c"]
    assert [t.parent for t in result.instances("parse")] == ["parse"] * 3
    assert result.tasks["parse[1]"].item == {"url": "b"}
    assert result.tasks["parse[1]"].result == "B"
    # Every instance counts as a task; the mapped tasks that summarize them do not.
    assert result.counts == {TaskState.SUCCEEDED: 3 + 3 + 2}
    mapped = [e for e in events if isinstance(e, TaskMapped)]
    assert [(e.task, e.count, e.over) for e in mapped] == [("fetch", 3, ("urls",)), ("parse", 3, ("fetch",))]
    started = Counter(e.task for e in events if isinstance(e, TaskStarted))
    assert "fetch" not in started and "parse" not in started
    assert started == Counter(
        {"urls": 1, "summary": 1, **{f"{t}[{k}]": 1 for t in ("fetch", "parse") for k in range(3)}}
    )
    # The mapped task ends after its last instance, before the task that takes its list starts.
    last = max(index_of(events, TaskSucceeded, f"fetch[{k}]") for k in range(3))
    assert last < index_of(events, TaskSucceeded, "fetch") < index_of(events, TaskStarted, "summary")


async def test_an_empty_list_gives_no_instances_and_an_empty_list_downstream() -> None:
    events: list[Event] = []
    result = await run(urls_pipeline([]), listeners=[events.append])
    assert result.ok
    assert result.tasks["fetch"].result == [] and result.tasks["parse"].result == []
    assert result.tasks["fetch"].instances == ()
    assert result.tasks["summary"].result == ""
    assert result.instances("fetch") == []
    assert [e.count for e in events if isinstance(e, TaskMapped)] == [0, 0]


async def test_a_result_that_is_not_a_list_fails_the_mapped_task_and_nothing_else() -> None:
    p = Pipeline("notalist")

    @p.task
    async def urls() -> dict[str, int]:
        return {"a": 1}

    @p.task(inputs={"url": asyncflow.each("urls")})
    async def fetch(url: str) -> str:
        return url

    @p.task
    async def other() -> int:
        return 7

    result = await run(p)
    error = result.tasks["fetch"].error
    assert isinstance(error, MappingError) and error.task == "fetch"
    assert "'fetch'" in str(error) and "'urls'" in str(error) and "dict" in str(error)
    assert result.tasks["other"].result == 7
    assert result.tasks["urls"].state is TaskState.SUCCEEDED


async def test_several_each_inputs_are_zipped_and_other_parameters_passed_whole() -> None:
    p = Pipeline("zip")

    @p.task
    async def names() -> list[str]:
        return ["x", "y"]

    @p.task
    async def sizes() -> list[int]:
        return [1, 2]

    @p.task
    async def prefix() -> str:
        return ">"

    @p.task(inputs={"name": asyncflow.each("names"), "size": asyncflow.each("sizes")})
    async def label(name: str, size: int, prefix: str) -> str:
        return f"{prefix}{name}{size}"

    result = await run(p)
    assert result.tasks["label"].result == [">x1", ">y2"]
    assert result.tasks["label[1]"].item == {"name": "y", "size": 2}


async def test_zipped_inputs_of_unequal_lengths_fail_naming_both() -> None:
    p = Pipeline("zipbad")

    @p.task
    async def names() -> list[str]:
        return ["x", "y", "z"]

    @p.task
    async def sizes() -> list[int]:
        return [1]

    @p.task(inputs={"name": asyncflow.each("names"), "size": asyncflow.each("sizes")})
    async def label(name: str, size: int) -> str:
        return name

    @p.task
    async def report(label: list[str]) -> int:
        return len(label)

    result = await run(p)
    error = result.tasks["label"].error
    assert isinstance(error, MappingError)
    text = str(error)
    assert "'names'" in text and "3 items" in text and "'sizes'" in text and "1 items" in text
    assert result.tasks["report"].state is TaskState.SKIPPED


def test_definition_errors_name_the_task() -> None:
    p = Pipeline("bad")
    with pytest.raises(PipelineDefinitionError, match="name of a task"):

        @p.task(inputs={"x": asyncflow.each(len)})  # type: ignore[arg-type]
        async def wrong(x: int) -> int:
            return x

    @p.task(inputs={"x": asyncflow.each("nosuch")})
    async def unknown(x: int) -> int:
        return x

    with pytest.raises(UnknownDependencyError, match="'unknown' maps parameter 'x' over 'nosuch'"):
        p.validate()


def test_mapping_over_a_mapped_task_and_taking_it_whole_is_refused() -> None:
    p = Pipeline("both")

    @p.task
    async def items() -> list[int]:
        return [1]

    @p.task(inputs={"i": asyncflow.each("items")})
    async def first(i: int) -> int:
        return i

    @p.task(inputs={"f": asyncflow.each("first")})
    async def second(f: int, first: list[int]) -> int:
        return f

    with pytest.raises(PipelineDefinitionError, match="'second' is mapped over mapped task 'first'"):
        p.validate()


# -- scheduling -------------------------------------------------------------------------------


async def test_no_barrier_an_instance_follows_its_own_upstream_instance() -> None:
    """parse[0] finishes while fetch[1] still runs: only the whole-list task waits."""
    p = Pipeline("nobarrier")
    release = anyio.Event()

    @p.task
    async def urls() -> list[int]:
        return [0, 1]

    @p.task(inputs={"n": asyncflow.each("urls")})
    async def fetch(n: int) -> int:
        if n == 1:
            await release.wait()  # held until parse[0] is done
        return n

    @p.task(inputs={"n": asyncflow.each("fetch")})
    async def parse(n: int) -> int:
        if n == 0:
            release.set()
        return n * 10

    @p.task
    async def total(parse: list[int]) -> int:
        return sum(parse)

    events: list[Event] = []
    with anyio.fail_after(20):
        result = await run(p, listeners=[events.append])
    assert result.tasks["total"].result == 10
    assert index_of(events, TaskSucceeded, "parse[0]") < index_of(events, TaskSucceeded, "fetch[1]")
    assert index_of(events, TaskStarted, "total") > index_of(events, TaskSucceeded, "parse[1]")


async def test_no_barrier_while_an_instance_retries() -> None:
    """parse[0] runs while fetch[1] waits out its backoff (0.5 s, a generous margin)."""
    p = Pipeline("retrying")

    @p.task
    async def urls() -> list[int]:
        return [0, 1]

    @p.task(inputs={"n": asyncflow.each("urls")}, retries=2, retry_delay=0.5)
    async def fetch(n: int, context: asyncflow.RunContext) -> int:
        if n == 1 and context.attempt == 1:
            raise ConnectionError("flaky")
        return n

    @p.task(inputs={"n": asyncflow.each("fetch")})
    async def parse(n: int) -> int:
        return n

    events: list[Event] = []
    result = await run(p, listeners=[events.append])
    assert result.ok
    assert [t.attempts for t in result.instances("fetch")] == [1, 2]
    assert [t.attempts for t in result.instances("parse")] == [1, 1]
    assert index_of(events, TaskSucceeded, "parse[0]") < index_of(events, TaskSucceeded, "fetch[1]")


async def test_instances_share_the_pools_and_max_concurrency() -> None:
    p = Pipeline("pooled")
    running = peak = 0

    @p.task
    async def items() -> list[int]:
        return list(range(8))

    @p.task(inputs={"n": asyncflow.each("items")}, tags=["api"])
    async def call(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1
        return n

    result = await run(p, pools={"api": 2})
    assert result.ok and peak == 2
    running = peak = 0
    result = await run(p, max_concurrency=3)
    assert result.ok and peak == 3


async def test_a_timeout_fails_only_that_instance_naming_it() -> None:
    p = Pipeline("slow")

    @p.task
    async def items() -> list[float]:
        return [0, 5]

    @p.task(inputs={"seconds": asyncflow.each("items")}, timeout=0.2)
    async def wait(seconds: float) -> float:
        await anyio.sleep(seconds)
        return seconds

    result = await run(p)
    assert result.tasks["wait[0]"].state is TaskState.SUCCEEDED
    error = result.tasks["wait[1]"].error
    assert isinstance(error, asyncflow.TaskTimeoutError) and error.task == "wait[1]"
    assert isinstance(result.tasks["wait"].error, MappingError)


# -- failures ---------------------------------------------------------------------------------


async def test_a_failed_instance_skips_its_chain_and_the_list_and_nothing_else() -> None:
    calls: list[str] = []
    events: list[Event] = []
    result = await run(urls_pipeline(["a", "bad", "c"], calls), listeners=[events.append])
    states = {name: result.tasks[name].state for name in result.tasks}
    assert states["fetch[1]"] is TaskState.FAILED
    assert states["parse[1]"] is TaskState.SKIPPED
    assert result.tasks["parse[1]"].reason == "upstream task 'fetch[1]' failed"
    assert all(states[n] is TaskState.SUCCEEDED for n in ("fetch[0]", "fetch[2]", "parse[0]", "parse[2]"))
    assert states["summary"] is TaskState.SKIPPED
    error = result.tasks["fetch"].error
    assert isinstance(error, MappingError) and error.failed == ("fetch[1]",)
    assert "1 of 3 instances" in str(error)
    assert states["parse"] is TaskState.SKIPPED
    assert "summary" not in calls
    assert result.counts == {TaskState.SUCCEEDED: 5, TaskState.FAILED: 1, TaskState.SKIPPED: 2}
    failed = [e.task for e in events if isinstance(e, TaskFailed)]
    assert failed == ["fetch[1]", "fetch"]


async def test_fail_fast_cancels_the_other_instances() -> None:
    p = Pipeline("fast")

    @p.task
    async def items() -> list[int]:
        return [0, 1, 2]

    @p.task(inputs={"n": asyncflow.each("items")})
    async def work(n: int) -> int:
        if n == 0:
            raise ValueError("first")
        await anyio.sleep(10)
        return n

    with anyio.fail_after(5):
        result = await run(p, fail_fast=True)
    assert result.tasks["work[0]"].state is TaskState.FAILED
    assert {result.tasks[f"work[{k}]"].state for k in (1, 2)} == {TaskState.CANCELLED}
    assert result.tasks["work"].state is TaskState.CANCELLED


# -- checkpoints ------------------------------------------------------------------------------


async def test_instances_are_cached_by_item_value_not_position(tmp_path: Path) -> None:
    items = ["a", "b", "c"]
    calls: list[str] = []
    p = urls_pipeline(items, calls)
    store = MemoryStore()

    first = await run(p, store=store)
    assert first.ok and len(calls) == 7

    calls.clear()
    again = await run(p, store=store)
    assert calls == []
    assert again.tasks["summary"].state is TaskState.CACHED
    assert again.tasks["fetch"].state is TaskState.CACHED

    items.reverse()  # reordering runs no instance; the task taking the list runs again
    calls.clear()
    reordered = await run(p, store=store)
    assert calls == ["summary"]
    assert reordered.tasks["summary"].result == "C+B+A"
    assert {t.state for t in reordered.instances("fetch")} == {TaskState.CACHED}

    items.append("d")  # one more item runs one fetch and one parse
    calls.clear()
    grown = await run(p, store=store)
    assert sorted(calls) == ["fetch d", "parse d", "summary"]
    assert grown.tasks["summary"].result == "C+B+A+D"


async def test_after_a_fix_only_the_failed_instance_runs_again(tmp_path: Path) -> None:
    items = ["a", "bad", "c"]
    calls: list[str] = []
    p = urls_pipeline(items, calls)
    first = await p.run(workdir=tmp_path, log=False)
    assert first.tasks["fetch[1]"].state is TaskState.FAILED
    assert sorted(calls) == ["fetch a", "fetch bad", "fetch c", "parse a", "parse c"]

    items[1] = "b"  # the fix
    calls.clear()
    second = await p.run(workdir=tmp_path, log=False)
    assert second.ok
    assert sorted(calls) == ["fetch b", "parse b", "summary"]
    assert [t.state for t in second.instances("fetch")] == [
        TaskState.CACHED,
        TaskState.SUCCEEDED,
        TaskState.CACHED,
    ]
    assert second.tasks["summary"].result == "A+B+C"


async def test_a_changed_shared_input_reruns_every_instance(tmp_path: Path) -> None:
    p = Pipeline("shared", params={"factor": 2})
    calls: list[int] = []

    @p.task
    async def items() -> list[int]:
        return [1, 2, 3]

    @p.task
    async def factor(params: Any) -> int:
        return int(params["factor"])

    @p.task(inputs={"n": asyncflow.each("items")})
    async def scale(n: int, factor: int) -> int:
        calls.append(n)
        return n * factor

    store = MemoryStore()
    assert (await run(p, store=store)).tasks["scale"].result == [2, 4, 6]
    calls.clear()
    result = await run(p, store=store, params={"factor": 3})
    assert result.tasks["scale"].result == [3, 6, 9]
    assert sorted(calls) == [1, 2, 3]


async def test_an_instance_checkpoint_is_stored_under_its_items_digest(tmp_path: Path) -> None:
    store = MemoryStore()
    await run(urls_pipeline(["a", "b"]), store=store)
    names = sorted(store.texts)
    fetches = [n for n in names if n.startswith("fetch[")]
    assert len(fetches) == 2 and all(len(n) == len("fetch[]") + 16 for n in fetches)
    assert "fetch[0]" not in names and "fetch" not in names


async def test_cancelling_the_run_cancels_the_instances_and_the_mapped_task() -> None:
    p = Pipeline("cancelled")
    started = anyio.Event()

    @p.task
    async def items() -> list[int]:
        return [0, 1]

    @p.task(inputs={"n": asyncflow.each("items")})
    async def work(n: int) -> int:
        started.set()
        await anyio.sleep(30)
        return n

    events: list[Event] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run(p, listeners=[events.append]))
            await started.wait()
            tg.cancel_scope.cancel()
    cancelled = {e.task for e in events if isinstance(e, asyncflow.TaskCancelled)}
    assert cancelled == {"work", "work[0]", "work[1]"}
    assert isinstance(events[-1], asyncflow.RunFinished) and not events[-1].ok


async def test_items_that_are_not_json_are_keyed_by_their_pickle() -> None:
    p = Pipeline("objects", serializer="pickle")
    calls: list[complex] = []
    values = [1 + 2j, 3j]

    @p.task(checkpoint=False)
    async def items() -> list[complex]:
        return list(values)

    @p.task(inputs={"z": asyncflow.each("items")})
    async def conj(z: complex) -> complex:
        calls.append(z)
        return z.conjugate()

    store = MemoryStore()
    assert (await run(p, store=store)).tasks["conj"].result == [1 - 2j, -3j]
    calls.clear()
    values.append(5 + 0j)
    result = await run(p, store=store)
    assert calls == [5 + 0j]
    assert result.tasks["conj"].result == [1 - 2j, -3j, 5 - 0j]


async def test_instances_without_checkpoints_always_run_and_keep_their_downstream_cached() -> None:
    p = Pipeline("volatile")
    calls: list[str] = []

    @p.task
    async def items() -> list[int]:
        return [1, 2]

    @p.task(inputs={"n": asyncflow.each("items")}, checkpoint=False)
    async def double(n: int) -> int:
        calls.append(f"double {n}")
        return 2 * n

    @p.task
    async def total(double: list[int]) -> int:
        calls.append("total")
        return sum(double)

    store = MemoryStore()
    assert (await run(p, store=store)).tasks["total"].result == 6
    calls.clear()
    again = await run(p, store=store)
    assert sorted(calls) == ["double 1", "double 2"]  # same results: total stays cached (early cutoff)
    assert again.tasks["total"].state is TaskState.CACHED


async def test_a_task_after_a_mapped_task_waits_for_every_instance() -> None:
    p = Pipeline("after")
    order: list[str] = []

    @p.task
    async def items() -> list[float]:
        return [0.2, 0.0]

    @p.task(inputs={"s": asyncflow.each("items")})
    async def slow(s: float) -> float:
        await anyio.sleep(s)
        order.append(f"slow {s}")
        return s

    @p.task(after=["slow"])
    async def last() -> None:
        order.append("last")

    result = await run(p)
    assert result.ok
    assert order == ["slow 0.0", "slow 0.2", "last"]


async def test_a_forced_partial_run_keeps_the_instances_above_its_selection_cached() -> None:
    calls: list[str] = []
    p = urls_pipeline(["a", "b"], calls)
    store = MemoryStore()
    assert (await run(p, store=store)).ok
    calls.clear()
    result = await run(p, store=store, only=["summary"], force=True)
    assert calls == ["summary"]
    assert {t.state for t in result.instances("fetch") + result.instances("parse")} == {TaskState.CACHED}

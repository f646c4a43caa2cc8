"""Exact cache keys, as a property: after any edit, a rerun runs exactly what changed.

Hypothesis draws a random DAG of tasks written into a real module file (helpers, module
constants, ``functools.partial``-bound dicts, run parameters read through ``params``),
then a random sequence of edits: a task's body, a helper, a constant, a bound argument,
a parameter some task reads, a parameter no task reads, and a body edit that keeps the
task's result (``abs(...)`` around a non-negative constant). After each edit the module is
re-imported and run against the same working directory. Checked after every rerun:

(a) every result equals a from-scratch run's (in memory, nothing cached);
(b) the tasks that ran are exactly those whose own definition or read parameters changed,
    plus those an upstream *result* change reached (early cutoff: a rerun that returns the
    same value stops there).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncflow import MemoryStore, Pipeline, TaskState

HELPERS, CONSTS, PARAMS = 3, 3, 2  # params p0, p1; "unused" is declared and never read


@dataclasses.dataclass
class Shape:
    """What never changes: the DAG, and what each task uses."""

    upstream: list[list[int]]
    helper: list[int]
    const: list[int]
    param: list[int | None]  # the parameter a task reads, if any


@dataclasses.dataclass
class State:
    """What edits change."""

    body: list[int]
    wraps: list[int]  # abs() around the body constant: same value, other bytecode
    bound: list[int]
    helpers: list[int]
    consts: list[int]
    params: dict[str, int]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Shape, State, list[tuple[str, int, int]]]:
    n = draw(st.integers(2, 7))
    upstream = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=2))) if i else [] for i in range(n)]
    shape = Shape(
        upstream=upstream,
        helper=[draw(st.integers(0, HELPERS - 1)) for _ in range(n)],
        const=[draw(st.integers(0, CONSTS - 1)) for _ in range(n)],
        param=[draw(st.one_of(st.none(), st.integers(0, PARAMS - 1))) for _ in range(n)],
    )
    state = State(
        body=[draw(st.integers(0, 9)) for _ in range(n)],
        wraps=[0] * n,
        bound=[draw(st.integers(0, 9)) for _ in range(n)],
        helpers=[draw(st.integers(0, 9)) for _ in range(HELPERS)],
        consts=[draw(st.integers(0, 9)) for _ in range(CONSTS)],
        params={**{f"p{m}": draw(st.integers(0, 9)) for m in range(PARAMS)}, "unused": 0},
    )
    kinds = ["body", "keep", "helper", "const", "bound", "param", "unused"]
    edits = draw(
        st.lists(
            st.tuples(st.sampled_from(kinds), st.integers(0, 6), st.integers(1, 5)), min_size=1, max_size=5
        )
    )
    return shape, state, edits


def source(shape: Shape, state: State) -> str:
    """The module: constants, helpers, and one task per node registered through partial."""
    lines = ["import functools", "", "import asyncflow", ""]
    lines += [f"C{j} = {v}" for j, v in enumerate(state.consts)]
    for k, v in enumerate(state.helpers):
        lines += ["", "", f"def helper{k}():", f"    return {v}"]
    declared = {f"p{m}": 0 for m in range(PARAMS)} | {"unused": 0}
    lines += ["", "", f"pipeline = asyncflow.Pipeline('exact', params={declared!r})"]
    for i, ups in enumerate(shape.upstream):
        args = [f"t{u}" for u in ups]
        signature = ", ".join([*args, *(["params"] if shape.param[i] is not None else []), "cfg=None"])
        body = "abs(" * state.wraps[i] + str(state.body[i]) + ")" * state.wraps[i]
        terms = [*args, f"helper{shape.helper[i]}()", f"C{shape.const[i]}", "cfg['w']", body]
        if shape.param[i] is not None:
            terms.append(f"params['p{shape.param[i]}']")
        lines += ["", "", f"def t{i}({signature}):", f"    return {' + '.join(terms)}"]
        lines.append(f"pipeline.task(functools.partial(t{i}, cfg={{'w': {state.bound[i]}}}), name='t{i}')")
    return "\n".join(lines) + "\n"


def load(folder: Path, shape: Shape, state: State) -> Pipeline:
    """Write the module and import it afresh under its one name (so paths in keys stay put)."""
    (folder / "exact_module.py").write_text(source(shape, state), encoding="utf-8")
    sys.modules.pop("exact_module", None)
    importlib.invalidate_caches()
    module = importlib.import_module("exact_module")
    pipeline: Pipeline = module.pipeline
    return pipeline


def touched(shape: Shape, kind: str, index: int) -> tuple[set[int], bool]:
    """The tasks whose own definition (or read parameter) an edit changes; and whether it
    is a parameter edit (which changes the run's parameters instead of the module)."""
    n = len(shape.upstream)
    i = index % n
    if kind in ("body", "keep", "bound"):
        return {i}, False
    if kind == "helper":
        return {t for t in range(n) if shape.helper[t] == index % HELPERS}, False
    if kind == "const":
        return {t for t in range(n) if shape.const[t] == index % CONSTS}, False
    if kind == "param":
        return {t for t in range(n) if shape.param[t] == index % PARAMS}, True
    return set(), True  # "unused": declared, never read


def apply(shape: Shape, state: State, kind: str, index: int, by: int) -> None:
    n = len(shape.upstream)
    if kind == "body":
        state.body[index % n] += by
    elif kind == "keep":
        state.wraps[index % n] += 1
    elif kind == "bound":
        state.bound[index % n] += by
    elif kind == "helper":
        state.helpers[index % HELPERS] += by
    elif kind == "const":
        state.consts[index % CONSTS] += by
    elif kind == "param":
        state.params[f"p{index % PARAMS}"] += by
    else:
        state.params["unused"] += by


def below(shape: Shape, changed: set[int]) -> Iterator[int]:
    """Tasks in topological (index) order with an upstream in ``changed``."""
    for i, ups in enumerate(shape.upstream):
        if any(u in changed for u in ups):
            yield i


async def check(folder: Path, shape: Shape, state: State, edits: list[tuple[str, int, int]]) -> None:
    workdir = folder / "work"
    pipeline = load(folder, shape, state)
    first = await pipeline.run(workdir=workdir, params=state.params, log=False)
    assert first.counts == {TaskState.SUCCEEDED: len(shape.upstream)}
    previous = {name: run.result for name, run in first.tasks.items()}
    for kind, index, by in edits:
        apply(shape, state, kind, index, by)
        own, _ = touched(shape, kind, index)
        pipeline = load(folder, shape, state)
        rerun = await pipeline.run(workdir=workdir, params=state.params, log=False)
        fresh = await pipeline.run(store=MemoryStore(), params=state.params, log=False)
        results = {name: run.result for name, run in rerun.tasks.items()}
        assert results == {name: run.result for name, run in fresh.tasks.items()}, (
            kind,
            source(shape, state),
        )
        changed = {i for i in range(len(shape.upstream)) if results[f"t{i}"] != previous[f"t{i}"]}
        expected = own | set(below(shape, changed))
        ran = {int(name[1:]) for name, run in rerun.tasks.items() if run.state is TaskState.SUCCEEDED}
        assert ran == expected, (kind, index, by, sorted(ran), sorted(expected), source(shape, state))
        assert {run.state for run in rerun.tasks.values()} <= {TaskState.SUCCEEDED, TaskState.CACHED}
        previous = results


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios())
def test_a_rerun_runs_exactly_what_an_edit_changed_and_matches_a_fresh_run(
    backend: str, scenario: tuple[Shape, State, list[tuple[str, int, int]]], tmp_path_factory: Any
) -> None:
    shape, state, edits = scenario
    folder = tmp_path_factory.mktemp("exact")
    sys.path.insert(0, str(folder))
    writes = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # a rewrite within one second must not load a stale .pyc
    try:
        anyio.run(check, folder, shape, state, edits, backend=backend)
    finally:
        sys.dont_write_bytecode = writes
        sys.path.remove(str(folder))
        sys.modules.pop("exact_module", None)


async def test_a_bound_value_that_cannot_be_hashed_is_named_in_one_warning(tmp_path: Path) -> None:
    import functools
    import threading

    from loguru import logger

    class Client:  # holds a lock: no stable value to hash
        def __init__(self) -> None:
            self.lock = threading.Lock()

    def fetch(client: Any = None) -> int:
        return 1

    p = Pipeline("unhashable")
    name = f"fetch_with_client_{abs(hash(tmp_path)) % 10**6}"  # warned once per process: a new name per test
    p.task(functools.partial(fetch, client=Client()), name=name)
    lines: list[str] = []
    logger.enable("asyncflow")
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        await p.run(workdir=tmp_path, log=False)
        await p.run(workdir=tmp_path, log=False)
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")
    warnings = [line for line in lines if name in line]
    assert len(warnings) == 1, lines  # once per task, not once per run
    assert "left out of the cache key" in warnings[0] and "cache_key_fn" in warnings[0]


async def test_no_early_cutoff_across_an_after_edge_or_below_a_task_that_writes_files(tmp_path: Path) -> None:
    """A task that runs again and returns the same value still re-runs the tasks that
    depend on what it did: those ordered after it (``after=``) and those below a task that
    declares ``outputs``."""
    version = {"v": "1"}

    def pipeline() -> Pipeline:
        p = Pipeline("effects")
        content = version["v"]  # closure value: part of write's key

        @p.task(outputs=["{workdir}/data.txt"])
        def write(context: Any) -> None:
            (context.workdir / "data.txt").write_text("content v" + content)

        @p.task(after=["write"])
        def read(context: Any) -> str:
            return str((context.workdir / "data.txt").read_text())

        @p.task
        def length(write: None, context: Any) -> int:  # data edge, but write has outputs
            return len((context.workdir / "data.txt").read_text())

        return p

    first = await pipeline().run(workdir=tmp_path, log=False)
    assert first.tasks["read"].result == "content v1"
    version["v"] = "22"
    plan = await make_plan_of(pipeline(), tmp_path)
    assert plan["read"] == ("run", "upstream write will run (this task depends on what it does)")
    second = await pipeline().run(workdir=tmp_path, log=False)
    assert second.tasks["write"].state is TaskState.SUCCEEDED  # returned None again
    assert second.tasks["read"].state is TaskState.SUCCEEDED and second.tasks["read"].result == "content v22"
    assert second.tasks["length"].state is TaskState.SUCCEEDED and second.tasks["length"].result == 11
    third = await pipeline().run(workdir=tmp_path, log=False)
    assert set(third.by_state(TaskState.CACHED)) == {"write", "read", "length"}


async def make_plan_of(p: Pipeline, workdir: Path) -> dict[str, tuple[str, str]]:
    from asyncflow._pipeline import default_file_store
    from asyncflow._plan import make_plan

    plan = await make_plan(
        p.validate(), pipeline=p.name, params={}, store=default_file_store(workdir, p.name), workdir=workdir
    )
    return {t.name: (t.action.value, t.reason) for t in plan.tasks}


class Endpoint:
    """A plain object of the user's own code, bound to a task: hashed by its attributes."""

    def __init__(self, url: str) -> None:
        self.url = url


async def test_a_bound_plain_object_and_a_printed_params_are_part_of_the_key(tmp_path: Path) -> None:
    import functools

    def fetch(client: Any = None) -> str:
        return str(client.url)

    def describe(params: Any) -> str:
        return f"{params}"  # reads every parameter, through repr

    def pipeline(url: str) -> Pipeline:
        p = Pipeline("plain", params={"a": 1, "b": 2})
        p.task(functools.partial(fetch, client=Endpoint(url)), name="fetch")
        p.task(describe)
        return p

    await pipeline("http://a").run(workdir=tmp_path, log=False)
    changed = await pipeline("http://b").run(workdir=tmp_path, log=False)
    assert changed.tasks["fetch"].state is TaskState.SUCCEEDED and changed.tasks["fetch"].result == "http://b"
    assert changed.tasks["describe"].state is TaskState.CACHED
    other = await pipeline("http://b").run(workdir=tmp_path, params={"b": 3}, log=False)
    assert other.tasks["describe"].state is TaskState.SUCCEEDED
    assert other.tasks["describe"].result == "{'a': 1, 'b': 3}"
    assert other.tasks["fetch"].state is TaskState.CACHED  # reads no parameter


CONSTANTS = """
import dataclasses
import re

import asyncflow

pipeline = asyncflow.Pipeline("consts")


class Plain:
    def __init__(self, r):
        self.r = r


@dataclasses.dataclass(frozen=True)
class Config:
    rate: int


OBJ = Plain({obj})
CFG = Config(rate={cfg})
PAT = re.compile("{pat}")


@pipeline.task
def t_obj():
    return OBJ.r


@pipeline.task
def t_cfg():
    return CFG.rate


@pipeline.task
def t_pat():
    return PAT.pattern
"""


def test_module_constants_that_are_objects_are_hashed_by_value(tmp_path: Path) -> None:
    sys.path.insert(0, str(tmp_path))
    writes = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:

        def run(obj: int, cfg: int, pat: str) -> dict[str, tuple[str, Any]]:
            (tmp_path / "consts_module.py").write_text(CONSTANTS.format(obj=obj, cfg=cfg, pat=pat))
            sys.modules.pop("consts_module", None)
            importlib.invalidate_caches()
            pipeline: Pipeline = importlib.import_module("consts_module").pipeline
            result = pipeline.run_sync(workdir=tmp_path / "work", log=False)
            return {n: (t.state.value, t.result) for n, t in result.tasks.items()}

        run(1, 1, "a+")
        assert run(2, 1, "a+") == {
            "t_obj": ("succeeded", 2),
            "t_cfg": ("cached", 1),
            "t_pat": ("cached", "a+"),
        }
        assert run(2, 3, "b+") == {
            "t_obj": ("cached", 2),
            "t_cfg": ("succeeded", 3),
            "t_pat": ("succeeded", "b+"),
        }
    finally:
        sys.dont_write_bytecode = writes
        sys.path.remove(str(tmp_path))
        sys.modules.pop("consts_module", None)


async def test_a_task_mutating_its_params_changes_nothing_outside_it(tmp_path: Path) -> None:
    p = Pipeline("mutates", params={"cfg": {"a": 1}})

    @p.task
    async def m(params: Any) -> int:
        params["cfg"]["a"] += 100  # its own copy
        return int(params["cfg"]["a"])

    @p.task
    async def r(m: int, params: Any) -> int:
        return int(params["cfg"]["a"])

    first = await p.run(workdir=tmp_path, log=False)
    assert (first.tasks["m"].result, first.tasks["r"].result) == (101, 1)
    second = await p.run(workdir=tmp_path, log=False)
    assert {n: t.state for n, t in second.tasks.items()} == {"m": TaskState.CACHED, "r": TaskState.CACHED}
    assert p.params == {"cfg": {"a": 1}}


async def test_a_partial_run_below_a_task_without_checkpoint_runs_that_task_again(tmp_path: Path) -> None:
    calls: list[str] = []
    p = Pipeline("volatile_upstream")

    @p.task(checkpoint=False)
    async def env() -> str:
        calls.append("env")
        return "prod"

    @p.task
    async def use_env(env: str) -> str:
        calls.append("use_env")
        return env.upper()

    await p.run(workdir=tmp_path, log=False)
    partial = await p.run(workdir=tmp_path, log=False, only=["use_env"], force=True)
    assert partial.tasks["use_env"].result == "PROD"
    assert calls == ["env", "use_env", "env", "use_env"]
    plan = await make_plan_of(p, tmp_path)
    assert plan["env"] == ("run", "checkpoint disabled")

"""Pipeline validation (asyncflow._graph and the checks of @pipeline.task).

Every definition error is a ValueError subclass, names the culprit, and is raised before a
single task body runs.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import asyncflow
from asyncflow import (
    CycleError,
    DuplicateTaskError,
    InvalidTaskNameError,
    Pipeline,
    PipelineDefinitionError,
    UnboundParameterError,
    UnknownDependencyError,
)

# -- unknown dependencies ----------------------------------------------------------------


def test_unknown_dependency_in_inputs_suggests_closest_name() -> None:
    p = Pipeline("p")

    @p.task
    def prices() -> int:
        return 1

    @p.task(inputs={"data": "prics"})
    def report(data: int) -> int:
        return data

    with pytest.raises(UnknownDependencyError) as info:
        p.validate()
    message = str(info.value)
    assert "'report'" in message
    assert "'prics'" in message
    assert "did you mean 'prices'?" in message


def test_unknown_dependency_in_after_suggests_closest_name() -> None:
    p = Pipeline("p")

    @p.task
    def download() -> None:
        return None

    @p.task(after=["downlaod"])
    def parse() -> None:
        return None

    with pytest.raises(UnknownDependencyError) as info:
        p.validate()
    message = str(info.value)
    assert "'parse' runs after 'downlaod'" in message
    assert "did you mean 'download'?" in message


def test_unknown_dependency_without_close_match_has_no_suggestion() -> None:
    p = Pipeline("p")

    @p.task
    def alpha() -> None:
        return None

    @p.task(after=["zzzzzz"])
    def beta() -> None:
        return None

    with pytest.raises(UnknownDependencyError) as info:
        p.validate()
    assert "zzzzzz" in str(info.value)
    assert "did you mean" not in str(info.value)


def test_after_with_unregistered_function_is_rejected_at_definition() -> None:
    p = Pipeline("p")

    def helper() -> None:
        return None

    with pytest.raises(PipelineDefinitionError, match="helper"):

        @p.task(after=[helper])
        def task() -> None:
            return None


def test_after_accepts_a_registered_function() -> None:
    p = Pipeline("p")

    @p.task
    def first() -> None:
        return None

    @p.task(after=[first])
    def second() -> None:
        return None

    graph = p.validate()
    assert graph.node("second").upstream == (graph.index["first"],)
    assert graph.node("second").inputs == ()


def test_inputs_naming_a_parameter_the_function_lacks_is_rejected() -> None:
    p = Pipeline("p")

    @p.task
    def source() -> int:
        return 1

    with pytest.raises(PipelineDefinitionError, match="'nope'"):

        @p.task(inputs={"nope": "source"})
        def sink(value: int) -> int:
            return value


# -- names ------------------------------------------------------------------------------


def test_duplicate_task_name_is_rejected() -> None:
    p = Pipeline("p")

    @p.task
    def load() -> int:
        return 1

    with pytest.raises(DuplicateTaskError, match="'load'"):

        @p.task(name="load")
        def other() -> int:
            return 2

    assert list(p.tasks) == ["load"]


def test_same_function_twice_without_name_is_a_duplicate() -> None:
    p = Pipeline("p")

    def load() -> int:
        return 1

    p.task(load)
    with pytest.raises(DuplicateTaskError):
        p.task(load)
    p.task(name="load_again")(load)
    assert list(p.tasks) == ["load", "load_again"]


@pytest.mark.parametrize("bad", ["has space", "1starts_with_digit", "dash-ed", "", "dot.ted"])
def test_invalid_task_name_is_rejected(bad: str) -> None:
    p = Pipeline("p")
    with pytest.raises(InvalidTaskNameError) as info:
        p.task(name=bad)(lambda: None)
    assert repr(bad) in str(info.value)
    assert p.tasks == {}


def test_lambda_without_name_is_an_invalid_name() -> None:
    p = Pipeline("p")
    with pytest.raises(InvalidTaskNameError, match="<lambda>"):
        p.task(lambda: None)


# -- parameters ---------------------------------------------------------------------------


def test_unbound_parameter_is_rejected_with_suggestion() -> None:
    p = Pipeline("p")

    @p.task
    def numbers() -> list[int]:
        return [1]

    @p.task
    def total(numbrs: list[int]) -> int:
        return sum(numbrs)

    with pytest.raises(UnboundParameterError) as info:
        p.validate()
    message = str(info.value)
    assert "'total'" in message
    assert "'numbrs'" in message
    assert "did you mean 'numbers'?" in message


def test_parameter_with_default_that_matches_nothing_is_allowed() -> None:
    p = Pipeline("p")

    @p.task
    def numbers() -> list[int]:
        return [1, 2]

    @p.task
    def total(numbers: list[int], scale: int = 10) -> int:
        return sum(numbers) * scale

    graph = p.validate()
    node = graph.node("total")
    assert node.inputs == (("numbers", graph.index["numbers"]),)
    result = p.run_sync(checkpoints=False, log=False)
    assert result.tasks["total"].result == 30


def test_parameter_with_default_named_after_a_task_is_fed_by_it() -> None:
    p = Pipeline("p")

    @p.task
    def scale() -> int:
        return 3

    @p.task
    def total(scale: int = 10) -> int:
        return scale * 2

    assert p.validate().node("total").upstream == (0,)
    assert p.run_sync(checkpoints=False, log=False).tasks["total"].result == 6


def test_reserved_parameters_are_not_dependencies() -> None:
    p = Pipeline("p")

    @p.task
    def uses(params: dict[str, Any], context: asyncflow.RunContext) -> None:
        return None

    node = p.validate().node("uses")
    assert node.inputs == ()
    assert node.upstream == ()
    assert p.tasks["uses"].wants_params
    assert p.tasks["uses"].wants_context


@pytest.mark.parametrize(
    "source",
    [
        "def bad(*args): pass",
        "def bad(**kwargs): pass",
        "def bad(a, /): pass",
        "async def bad(*items): pass",
    ],
)
def test_star_args_kwargs_and_positional_only_are_rejected(source: str) -> None:
    namespace: dict[str, object] = {}
    exec(source, namespace)
    p = Pipeline("p")
    with pytest.raises(PipelineDefinitionError, match="no \\*args, \\*\\*kwargs or positional-only"):
        p.task(namespace["bad"])  # type: ignore[call-overload]
    assert p.tasks == {}


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_non_positive_timeout_is_rejected(timeout: float) -> None:
    p = Pipeline("p")
    with pytest.raises(PipelineDefinitionError, match="timeout"):
        p.task(name="t", timeout=timeout)(lambda: None)


def test_out_of_range_retry_option_is_a_value_error() -> None:
    p = Pipeline("p")
    with pytest.raises(ValueError, match="retries"):
        p.task(retries=-1)


# -- cycles -------------------------------------------------------------------------------


def test_cycle_error_names_cycle_in_data_flow_order() -> None:
    p = Pipeline("p")

    @p.task
    def a(c: int) -> int:
        return c

    @p.task
    def b(a: int) -> int:
        return a

    @p.task
    def c(b: int) -> int:
        return b

    with pytest.raises(CycleError) as info:
        p.validate()
    assert str(info.value) == "tasks form a cycle: a -> b -> c -> a"
    assert info.value.cycle == ("a", "b", "c", "a")


def test_cycle_through_after_and_inputs_lists_only_the_cycle() -> None:
    p = Pipeline("p")

    @p.task
    def root() -> int:
        return 1

    @p.task(after=["last"])
    def first(root: int) -> int:
        return root

    @p.task(inputs={"x": "first"})
    def middle(x: int) -> int:
        return x

    @p.task
    def last(middle: int) -> int:
        return middle

    with pytest.raises(CycleError) as info:
        p.validate()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"first", "middle", "last"}
    assert len(cycle) == 4
    assert "root" not in str(info.value)
    # Consecutive names are real edges, upstream -> downstream.
    edges = {("first", "middle"), ("middle", "last"), ("last", "first")}
    assert set(itertools.pairwise(cycle)) == edges


def test_self_dependency_by_parameter_is_a_cycle() -> None:
    p = Pipeline("p")

    @p.task
    def a(a: int) -> int:
        return a

    with pytest.raises(CycleError) as info:
        p.validate()
    assert info.value.cycle == ("a", "a")
    assert str(info.value) == "tasks form a cycle: a -> a"


def test_self_dependency_by_after_is_a_cycle() -> None:
    p = Pipeline("p")

    @p.task(after=["a"])
    def a() -> None:
        return None

    with pytest.raises(CycleError) as info:
        p.validate()
    assert info.value.cycle == ("a", "a")


# -- the error tree and when errors are raised --------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        PipelineDefinitionError,
        DuplicateTaskError,
        InvalidTaskNameError,
        UnknownDependencyError,
        UnboundParameterError,
        CycleError,
        asyncflow.ParamError,
    ],
)
def test_definition_errors_are_value_errors(error: type[Exception]) -> None:
    assert issubclass(error, ValueError)
    assert issubclass(error, PipelineDefinitionError)
    assert issubclass(error, asyncflow.AsyncflowError)


def test_validation_error_is_raised_before_any_task_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calls: dict[str, int] = {}
    p = Pipeline("p")

    @p.task
    def fine() -> int:
        calls["fine"] = calls.get("fine", 0) + 1
        return 1

    @p.task
    def broken(missing: int) -> int:
        calls["broken"] = calls.get("broken", 0) + 1
        return missing

    workdir = tmp_path / "work"
    with pytest.raises(UnboundParameterError):
        p.run_sync(workdir=workdir, log=False)
    assert calls == {}
    assert not workdir.exists()


def test_cycle_is_raised_by_run_before_any_task_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calls: dict[str, int] = {}
    p = Pipeline("p")

    @p.task
    def free() -> int:
        calls["free"] = 1
        return 1

    @p.task
    def x(y: int) -> int:
        return y

    @p.task
    def y(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="tasks form a cycle"):
        p.run_sync(workdir=tmp_path / "w", log=False, checkpoints=False)
    assert calls == {}


def test_undeclared_run_parameter_is_rejected_with_suggestion(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = Pipeline("p", params={"window": 5})

    @p.task
    def t(params: dict[str, Any]) -> int:
        return int(params["window"])

    with pytest.raises(asyncflow.ParamError, match="did you mean 'window'"):
        p.run_sync(params={"windw": 3}, workdir=tmp_path, log=False)


# -- the graph ----------------------------------------------------------------------------


def test_graph_resolves_inputs_order_and_downstream() -> None:
    p = Pipeline("p")

    @p.task
    def c(b: int) -> int:  # defined before its upstream: order still upstream-first
        return b

    @p.task
    def a() -> int:
        return 1

    @p.task(inputs={"value": "a"}, after=["a"])
    def b(value: int) -> int:
        return value

    graph = p.validate()
    assert isinstance(graph, asyncflow.Graph)
    assert [n.name for n in graph.nodes] == ["c", "a", "b"]
    assert all(isinstance(n, asyncflow.Node) for n in graph.nodes)
    ia, ib, ic = graph.index["a"], graph.index["b"], graph.index["c"]
    assert graph.node("b").inputs == (("value", ia),)
    assert graph.node("b").upstream == (ia,)  # "after" the same task adds no repeat
    assert graph.node("a").downstream == (ib,)
    assert graph.node("b").downstream == (ic,)
    assert [graph.nodes[i].name for i in graph.order] == ["a", "b", "c"]
    with pytest.raises(KeyError):
        graph.node("missing")


def test_validate_is_recomputed_after_adding_a_task() -> None:
    p = Pipeline("p")

    @p.task
    def a() -> int:
        return 1

    first = p.validate()
    assert p.validate() is first

    @p.task
    def b(a: int) -> int:
        return a

    assert len(p.validate().nodes) == 2


@pytest.mark.parametrize("name", ["params", "context"])
def test_reserved_parameter_names_cannot_name_a_task(name: str) -> None:
    p = Pipeline("p")

    async def body() -> int:
        return 1

    with pytest.raises(InvalidTaskNameError, match=f"task name '{name}' is reserved"):
        p.task(body, name=name)


def test_a_lone_string_is_one_tag_one_output_and_one_upstream_task() -> None:
    p = Pipeline("p")

    @p.task
    async def source() -> int:
        return 1

    @p.task(tags="db", outputs="{workdir}/x.txt", after="source")
    async def sink() -> int:
        return 2

    task = p.tasks["sink"]
    assert (task.tags, task.outputs, task.after) == (("db",), ("{workdir}/x.txt",), ("source",))


# -- building cost: what is per function is computed once ---------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_topological_order_is_graphlibs_node_for_node(seed: int) -> None:
    """The list-based order equals graphlib's static_order, forward references included."""
    import graphlib
    import random

    from asyncflow._graph import _static_order

    rng = random.Random(seed)
    n = rng.randint(1, 60)
    rank = list(range(n))
    rng.shuffle(rank)  # a hidden topological rank: upstream nodes have smaller ranks
    upstream = [
        tuple(dict.fromkeys(u for u in rng.sample(range(n), rng.randint(0, min(4, n))) if rank[u] < rank[i]))
        for i in range(n)
    ]
    downstream: list[list[int]] = [[] for _ in range(n)]
    for i, ups in enumerate(upstream):
        for u in ups:
            downstream[u].append(i)
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for i, ups in enumerate(upstream):
        sorter.add(i, *ups)
    assert _static_order(upstream, downstream) == tuple(sorter.static_order())


def test_a_partial_fan_out_reads_the_signature_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import functools
    import inspect

    calls: list[object] = []
    real = inspect.signature

    def counting(fn: object, *args: object, **kwargs: object) -> inspect.Signature:
        calls.append(fn)
        return real(fn, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inspect, "signature", counting)

    def fit(ticker: str, window: int, params: dict[str, object]) -> str:
        """Fit one ticker."""
        return ticker

    p = Pipeline("p")
    for t in ("A", "B", "C"):
        p.task(functools.partial(fit, ticker=t, window=3), name=f"fit_{t}")
    p.task(functools.partial(fit, window=5), name="fit_all", inputs={"ticker": "fit_A"})
    tasks = p.tasks
    assert len(calls) == 2  # once for the three that bind ticker and window, once for fit_all
    assert tasks["fit_all"].parameters == (("ticker", False), ("window", True))
    assert tasks["fit_A"].parameters == (("ticker", True), ("window", True))
    assert tasks["fit_A"].parameters is tasks["fit_C"].parameters
    assert tasks["fit_A"].wants_params and tasks["fit_A"].description == "Fit one ticker."
    p.task(functools.partial(fit, "X"), name="fit_X")  # bound positionally: read again
    assert len(calls) == 3
    assert p.tasks["fit_X"].parameters == (("window", False),)

"""The fast constructors behind building a pipeline (asyncflow._frozen) make the same objects.

``make_task`` and ``build_graph`` fill ``Task`` and ``Node`` through a mutable twin class
and then assign ``__class__``; what comes out must be indistinguishable from what the
dataclasses' own ``__init__`` builds: type, fields, repr, equality, hashing, pickling,
``dataclasses.replace`` and immutability.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
from collections.abc import Mapping
from typing import Any

import pytest

import asyncflow
from asyncflow import JSON, Node, Pipeline, Task
from asyncflow._events import build_cached, build_started, build_succeeded
from asyncflow._frozen import become, layout_twin, positional_builder


def _fit(ticker: str, window: int = 3, context: Any = None, params: Any = None) -> str:
    """Fit one ticker."""
    return ticker


async def _load(region: str = "eu") -> str:
    return region


def _key(params: Mapping[str, Any]) -> str:
    return "k"


def _rebuilt(obj: Any) -> Any:
    """The same object, built by its class's own ``__init__``."""
    return type(obj)(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})


def _pickled(obj: Any) -> Any:
    """``obj``'s pickle, or the type of the error pickling it raises."""
    try:
        return pickle.dumps(obj)
    except Exception as exc:
        return type(exc)


def _tasks() -> list[Task]:
    p = Pipeline("p")
    p.task(_load, name="load")
    p.task(functools.partial(_fit, ticker="A"), name="fit_a")
    p.task(
        _fit,
        name="fit_all",
        inputs={"ticker": "load", "window": asyncflow.each("load")},
        after=["load"],
        retries=2,
        retry_delay=0.5,
        timeout=3.0,
        checkpoint=False,
        cache_key_fn=_key,
        tags=["cpu", "db"],
        executor="local",
        outputs=["{workdir}/x.txt"],
        serializer="json",
    )
    return list(p.tasks.values())


def test_a_registered_task_equals_one_built_by_the_dataclass() -> None:
    for task in _tasks():
        ordinary = _rebuilt(task)  # raises AttributeError if the fast path left a field unset
        assert type(task) is Task
        assert task == ordinary and repr(task) == repr(ordinary)
        assert _pickled(task) == _pickled(ordinary)
        with pytest.raises(TypeError, match="unhashable"):
            hash(task)  # like the dataclass's: its inputs are a mapping
        with pytest.raises(dataclasses.FrozenInstanceError):
            task.name = "other"  # type: ignore[misc]
        renamed = dataclasses.replace(task, name="other")
        assert type(renamed) is Task and renamed.name == "other" and renamed.fn is task.fn


def test_every_option_reaches_its_field() -> None:
    load, fit_a, fit_all = _tasks()
    assert load.is_async and not fit_a.is_async
    assert fit_a.parameters == (("ticker", True), ("window", True))
    assert fit_a.wants_params and fit_a.wants_context and fit_a.description == "Fit one ticker."
    assert fit_all.inputs == {"ticker": "load", "window": asyncflow.each("load")}
    assert fit_all.after == ("load",)
    assert fit_all.retry == asyncflow.RetryPolicy(retries=2, delay=0.5)
    assert (fit_all.timeout, fit_all.checkpoint, fit_all.cache_key_fn) == (3.0, False, _key)
    assert (fit_all.tags, fit_all.executor, fit_all.outputs) == (("cpu", "db"), "local", ("{workdir}/x.txt",))
    assert fit_all.serializer is JSON and fit_a.serializer is None


def test_validated_nodes_equal_ones_built_by_the_dataclass() -> None:
    p = Pipeline("p")
    for task in _tasks():
        p.task(task.fn, name=task.name, inputs=task.inputs or None, after=task.after)
    p.task(lambda fit_a, fit_all: None, name="both", inputs={"fit_a": ["fit_a", "load"]})
    graph = p.validate()
    assert [n.name for n in graph.nodes] == ["load", "fit_a", "fit_all", "both"]
    for node in [*graph.nodes, *graph.subgraph({0, 2}).nodes]:
        ordinary = _rebuilt(node)
        assert type(node) is Node
        assert node == ordinary and repr(node) == repr(ordinary)
        with pytest.raises(dataclasses.FrozenInstanceError):
            node.index = 5  # type: ignore[misc]
    assert graph.node("both").gathers == (("fit_a", (1, 0)),)
    assert graph.node("both").inputs == (("fit_all", 2),)
    assert graph.node("fit_all").maps == (("window", 0),)
    assert graph.node("load").downstream == (2, 3)


def test_layout_twin_refuses_classes_it_cannot_mirror() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True, weakref_slot=True)
    class WithWeakref:
        x: int

    for cls in (NoSlots, WithWeakref):
        with pytest.raises(TypeError):
            layout_twin(cls)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Point:
        x: int
        y: int

    twin = layout_twin(Point)
    blank = twin()
    blank.x, blank.y = 1, 2
    point = become(blank, Point)
    assert type(point) is Point and point == Point(1, 2) and hash(point) == hash(Point(1, 2))
    with pytest.raises(TypeError):
        become(object(), Point)


def test_a_fan_out_resolved_once_reports_errors_as_before() -> None:
    """Tasks of one function share their resolution, not their errors or their after=."""

    def fit(ticker: str, data: list[int]) -> str:
        return ticker

    def make(extra: dict[str, Any]) -> Pipeline:
        p = Pipeline("p")
        for t in "ABC":
            p.task(functools.partial(fit, ticker=t), name=f"fit_{t}", **extra.get(t, {}))
        return p

    with pytest.raises(asyncflow.UnboundParameterError, match="task 'fit_A' has parameter 'data'"):
        make({}).validate()
    p = make({"C": {"after": ["nope"]}})
    p.task(lambda: [1], name="data")
    with pytest.raises(asyncflow.UnknownDependencyError, match="task 'fit_C' runs after 'nope'"):
        p.validate()
    p = make({"B": {"after": ["fit_A"]}, "C": {"inputs": {"data": "fit_A"}}})
    p.task(lambda: [1], name="data")
    graph = p.validate()
    assert [graph.node(f"fit_{t}").inputs for t in "ABC"] == [(("data", 3),), (("data", 3),), (("data", 0),)]
    assert [graph.node(f"fit_{t}").upstream for t in "ABC"] == [(3,), (3, 0), (0,)]
    assert graph.node("fit_A").downstream == (1, 2) and graph.node("data").downstream == (0, 1)


def test_after_finds_a_partial_by_identity_though_it_is_not_indexed() -> None:
    """Partials are not indexed by id (a fan-out has thousands): after= finds them by a scan."""
    p = Pipeline("p")
    first = functools.partial(_fit, ticker="A")
    p.task(first, name="fit_a")
    p.task(first, name="fit_a_again")
    p.task(_load, name="load")
    p.task(lambda: None, name="last", after=[first, _load, "fit_a_again"])
    assert p.tasks["last"].after == ("fit_a", "load", "fit_a_again")
    stranger = functools.partial(_fit, ticker="A")
    with pytest.raises(asyncflow.PipelineDefinitionError, match=r"after=\[functools.partial\(<function _fit"):
        p.task(lambda: None, name="other", after=[stranger])
    assert "other" not in p.tasks


def test_the_decorator_form_registers_what_the_call_form_does() -> None:
    p, q = Pipeline("p"), Pipeline("q")
    p.task(_fit, name="t", retries=2, tags="db", outputs=["{workdir}/a"], timeout=1.0, after=[])
    decorate = q.task(name="t", retries=2, tags="db", outputs=["{workdir}/a"], timeout=1.0, after=[])
    assert decorate(_fit) is _fit
    assert p.tasks["t"] == q.tasks["t"] and p.tasks["t"].tags == ("db",)
    again = q.task(retries=1)
    again(_load)
    again(_key)
    assert q.tasks["_load"].retry is q.tasks["_key"].retry  # one shared policy
    with pytest.raises(asyncflow.DuplicateTaskError):
        again(_load)


@pytest.mark.parametrize(
    ("build", "values"),
    [
        (build_started, ("r1", 2.5, "fit", 3, "ab" * 32)),
        (build_started, ("r1", 0.0, "fit[2]", 1, None)),
        (build_succeeded, ("r1", 7.25, "fit", 2, 0.125)),
        (build_cached, ("r1", 1.0, "load", "cd" * 32)),
    ],
)
def test_an_event_built_positionally_equals_one_by_keywords(build: Any, values: tuple[Any, ...]) -> None:
    event = build(*values)
    cls = type(event)
    names = [f.name for f in dataclasses.fields(cls)]
    by_keywords = cls(**dict(zip(names, values, strict=True)))
    assert event == by_keywords and hash(event) == hash(by_keywords)
    assert repr(event) == repr(by_keywords)
    assert [getattr(event, n) for n in names] == list(values)  # each value in its own field
    assert pickle.loads(pickle.dumps(event)) == event
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.task = "other"


def test_positional_builder_refuses_what_it_would_build_wrong() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            raise AssertionError("skipped by a builder")

    class Plain:
        pass

    for cls in (Checked, Plain):
        with pytest.raises(TypeError, match=cls.__qualname__):
            positional_builder(cls)

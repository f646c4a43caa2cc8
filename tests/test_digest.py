"""Code and value digests (asyncflow._digest): what a task computes, hashed exactly.

Modules are written to a temporary directory, imported, rewritten and reloaded, the way a
user edits a pipeline between two runs.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from loguru import logger

from asyncflow._digest import CodeDigest, code_digest, describe_change, value_digest, warn_left_out
from asyncflow._values import is_user_file

_names = itertools.count()


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """``write(name, source)``: (re)write module ``name`` in a directory on ``sys.path``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    written: list[str] = []

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        written.append(name)
        importlib.invalidate_caches()

    yield write
    for name in written:
        sys.modules.pop(name, None)


def fresh(stem: str) -> str:
    return f"{stem}_{next(_names)}_{id(_names)}"


def load(name: str) -> types.ModuleType:
    """Import ``name``, or re-execute it from its (rewritten) file if already imported."""
    if name in sys.modules:
        return importlib.reload(sys.modules[name])
    return importlib.import_module(name)


HELPERS = """
RATE = {rate}

def scale(x):
    return x * {factor} * RATE

def unused(x):
    return x + {unused}
"""

TASKS = """
import {helpers}
from {helpers} import scale

def taxed(x):
    return scale(x) + 1

def via_module(x):
    return {helpers}.scale(x)
"""


def test_editing_a_helper_changes_the_digest_and_says_which(modules: Callable[[str, str], None]) -> None:
    helpers, tasks = fresh("helpers"), fresh("tasks")
    modules(helpers, HELPERS.format(rate=0.1, factor=2, unused=1))
    modules(tasks, TASKS.format(helpers=helpers))
    before = code_digest(load(tasks).taxed)
    assert f"helper {helpers}.py:scale" in before.parts

    modules(helpers, HELPERS.format(rate=0.1, factor=3, unused=1))
    load(helpers)
    after = code_digest(load(tasks).taxed)
    assert after.digest != before.digest
    assert after.parts["body"] == before.parts["body"]
    assert describe_change(before.parts, after) == f"helper scale() changed ({helpers}.py)"


def test_a_helper_reached_through_its_module_is_seen_after_a_reload(
    modules: Callable[[str, str], None],
) -> None:
    """The cached walk is checked against the bindings it looked up: reloading only the
    helper module (the task function object stays the same) still changes the digest."""
    helpers, tasks = fresh("helpers"), fresh("tasks")
    modules(helpers, HELPERS.format(rate=0.1, factor=2, unused=1))
    modules(tasks, TASKS.format(helpers=helpers))
    task = load(tasks).via_module
    before = code_digest(task)
    modules(helpers, HELPERS.format(rate=0.1, factor=5, unused=1))
    load(helpers)
    assert code_digest(task).digest != before.digest


def test_editing_an_unreached_function_keeps_the_digest(modules: Callable[[str, str], None]) -> None:
    helpers, tasks = fresh("helpers"), fresh("tasks")
    modules(helpers, HELPERS.format(rate=0.1, factor=2, unused=1))
    modules(tasks, TASKS.format(helpers=helpers))
    before = code_digest(load(tasks).taxed)
    modules(helpers, HELPERS.format(rate=0.1, factor=2, unused=99))
    load(helpers)
    assert code_digest(load(tasks).taxed) == before


def test_constants_are_hashed_by_value(modules: Callable[[str, str], None]) -> None:
    helpers, tasks = fresh("helpers"), fresh("tasks")
    modules(helpers, HELPERS.format(rate=0.1, factor=2, unused=1))
    modules(tasks, TASKS.format(helpers=helpers))
    mod: Any = load(helpers)
    before = code_digest(load(tasks).taxed)
    assert f"constant {helpers}.py:RATE" in before.parts

    mod.RATE = 0.1 + 0.0  # an equal value: same digest
    assert code_digest(load(tasks).taxed).digest == before.digest
    mod.RATE = 0.2
    changed = code_digest(load(tasks).taxed)
    assert changed.digest != before.digest
    assert describe_change(before.parts, changed) == "constant RATE changed"
    mod.RATE = 0.1
    assert code_digest(load(tasks).taxed).digest == before.digest


MOVABLE = """
{padding}
def helper(x):
    return x - 1

def task(x):
    # {comment}
    return helper(x) * {body}
"""


def test_moving_a_function_keeps_its_digest_and_editing_its_body_changes_it(
    modules: Callable[[str, str], None],
) -> None:
    name = fresh("movable")
    modules(name, MOVABLE.format(padding="", comment="a", body=2))
    before = code_digest(load(name).task)
    modules(name, MOVABLE.format(padding="# moved\n\n\n\nX = 1\n", comment="another comment", body=2))
    assert code_digest(load(name).task) == before
    modules(name, MOVABLE.format(padding="", comment="a", body=3))
    edited = code_digest(load(name).task)
    assert edited.digest != before.digest
    assert describe_change(before.parts, edited) == "its code changed"


CYCLES = """
def even(n):
    return True if n == 0 else odd(n - 1)

def odd(n):
    return False if n == 0 else even(n - {step})

def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)

class Node:
    def __init__(self, child=None):
        self.child = child

    def depth(self):
        return 1 + (self.child.depth() if self.child else 0) + Node.zero()

    @staticmethod
    def zero():
        return {zero}

def uses_node():
    return Node(Node()).depth()
"""


def test_recursion_and_cycles_terminate_and_are_followed(modules: Callable[[str, str], None]) -> None:
    name = fresh("cycles")
    modules(name, CYCLES.format(step=1, zero=0))
    mod = load(name)
    even, fact, node = code_digest(mod.even), code_digest(mod.fact), code_digest(mod.uses_node)
    assert f"helper {name}.py:odd" in even.parts and f"class {name}.py:Node" in node.parts
    modules(name, CYCLES.format(step=1, zero=1))  # only a static method of the class changes
    mod = load(name)
    assert code_digest(mod.uses_node).digest != node.digest
    assert code_digest(mod.even) == even and code_digest(mod.fact) == fact
    modules(name, CYCLES.format(step=2, zero=1))
    assert code_digest(load(name).even).digest != even.digest


PARTIAL = """
import functools

def smooth(series, cfg):
    return [x * cfg["window"] for x in series]

def fit(ticker, cfg=None):
    return ticker
"""


def test_a_dict_bound_with_partial_is_hashed_by_value(modules: Callable[[str, str], None]) -> None:
    name = fresh("partial")
    modules(name, PARTIAL)
    mod = load(name)
    three = code_digest(functools.partial(mod.smooth, cfg={"window": 3, "min": 1}))
    same = code_digest(functools.partial(mod.smooth, cfg={"min": 1, "window": 3}))
    twelve = code_digest(functools.partial(mod.smooth, cfg={"window": 12, "min": 1}))
    assert three == same
    assert twelve.digest != three.digest
    assert describe_change(three.parts, twelve) == "bound argument cfg changed"
    nested = functools.partial(functools.partial(mod.fit, "MSFT"), cfg=[1, 2])
    assert {"bound ticker", "bound cfg"} <= set(code_digest(nested).parts)
    assert code_digest(functools.partial(mod.fit, "AAPL")) != code_digest(functools.partial(mod.fit, "MSFT"))


def test_value_digest_is_canonical_and_distinguishes_types() -> None:
    assert value_digest({"a": 1, "b": [1, 2]}) == value_digest({"b": [1, 2], "a": 1})
    assert value_digest({3, 1, 2}) == value_digest({2, 3, 1})
    assert len({value_digest(v) for v in (1, 1.0, True, "1", b"1", (1,), [1], {1}, frozenset({1}))}) == 9
    assert value_digest((1, 2)) != value_digest([1, 2])
    assert value_digest({"x": [1, {"y": (None, 2.5)}]}) == value_digest({"x": [1, {"y": (None, 2.5)}]})
    assert value_digest({"x": [1, {"y": (None, 2.5)}]}) != value_digest({"x": [1, {"y": (None, 2.6)}]})
    assert value_digest(0.0) != value_digest(-0.0)
    loop: list[object] = []
    loop.append(loop)
    assert value_digest(loop) is None
    assert value_digest(object()) is None
    assert value_digest([1, object()]) is None


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Window:
    size: int
    weights: tuple[float, ...] = ()


def test_enums_dataclasses_and_functions_are_values() -> None:
    assert value_digest(Color.RED) != value_digest(Color.BLUE)
    assert value_digest(Color.RED) != value_digest(1)
    assert value_digest(Window(3)) == value_digest(Window(3))
    assert value_digest(Window(3)) != value_digest(Window(4))
    assert value_digest(fresh) not in (None, value_digest(load))
    assert value_digest({"f": fresh}) is not None

    def ping(n: int, other: object = None) -> object:
        return other

    def pong(n: int, other: object = ping) -> object:
        return other

    ping.__defaults__ = (pong,)  # each holds the other in a default: no endless recursion
    assert "default other" in code_digest(ping).parts
    assert value_digest(ping) not in (None, value_digest(pong))


def test_stdlib_and_installed_code_is_not_followed() -> None:
    def task(x: object) -> str:
        logger.debug("x")
        return json.dumps(x) + str(anyio.sleep)

    parts = set(code_digest(task).parts)
    assert parts == {"python", "body"}
    assert not is_user_file(json.__file__)
    assert not is_user_file(anyio.__file__)
    assert is_user_file(__file__)


def test_values_that_cannot_be_hashed_are_left_out_and_warned_once_per_task(
    modules: Callable[[str, str], None],
) -> None:
    name = fresh("partial")
    modules(name, PARTIAL)
    mod = load(name)

    class ClientSession:  # holds a lock: nothing stable to hash
        def __init__(self) -> None:
            self.lock = threading.Lock()

    digest = code_digest(functools.partial(mod.fit, cfg=ClientSession()))
    assert digest.left_out == ("bound argument 'cfg' (holds a lock)",)
    assert "bound cfg" not in digest.parts
    assert code_digest(functools.partial(mod.fit, cfg=[ClientSession()])).left_out == (
        "bound argument 'cfg' (holds a lock)",
    )

    messages: list[str] = []
    handler = logger.add(messages.append, level="WARNING", format="{message}")
    logger.enable("asyncflow")
    try:
        task = fresh("fit")
        warn_left_out(task, digest)
        warn_left_out(task, digest)
        warn_left_out(fresh("clean"), code_digest(mod.fit))  # nothing left out: silent
    finally:
        logger.disable("asyncflow")
        logger.remove(handler)
    assert len(messages) == 1
    assert repr(task) in messages[0] and "'cfg' (holds a lock)" in messages[0]
    assert "cache_key_fn=" in messages[0]


DECORATED = """
import functools

def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper

def helper():
    return {helper}

@logged
def task():
    return helper()

def make(n):
    def inner():
        return n + helper()
    return inner

lam = lambda: helper()

class Model:
    def fit(self):
        return self.predict()

    def predict(self):
        return {predict}
"""


def test_decorators_closures_lambdas_and_methods_follow_their_helpers(
    modules: Callable[[str, str], None],
) -> None:
    name = fresh("decorated")
    modules(name, DECORATED.format(helper=1, predict=1))
    mod = load(name)
    first = [code_digest(f) for f in (mod.task, mod.make(1), mod.lam, mod.Model().fit)]
    assert f"helper {name}.py:logged.<locals>.wrapper" in first[0].parts
    assert code_digest(mod.make(2)).parts["closure n"] != first[1].parts["closure n"]
    assert first[3].left_out == ()  # an instance of the user's own class: by its attributes
    assert "bound self" in first[3].parts

    modules(name, DECORATED.format(helper=2, predict=1))
    mod = load(name)
    second = [code_digest(f) for f in (mod.task, mod.make(1), mod.lam, mod.Model().fit)]
    assert [a.digest != b.digest for a, b in zip(first, second, strict=True)] == [True, True, True, False]

    modules(name, DECORATED.format(helper=2, predict=2))
    mod = load(name)
    assert code_digest(mod.Model().fit).digest != second[3].digest


def test_describe_change_names_the_most_specific_change_first() -> None:
    new = CodeDigest(
        digest="x",
        parts={"body": "2", "helper p/m.py:scale": "2", "constant p/m.py:RATE": "1", "default window": "1"},
        left_out=(),
    )
    old = {"body": "1", "helper p/m.py:scale": "1", "bound cfg": "1", "default window": "1"}
    assert describe_change(None, new) == "cache key changed"
    assert describe_change(old, new) == (
        "helper scale() changed (p/m.py); constant RATE added; bound argument cfg removed; its code changed"
    )
    assert describe_change(dict(new.parts), new) == "code unchanged"


PROXY = """
class Proxy:
    # Like a context-local proxy used outside its context: every attribute raises.
    def __getattribute__(self, name):
        raise RuntimeError("working outside of the request context")

request = Proxy()
DEEP = []
for _ in range(5000):
    DEEP = [DEEP]

def task():
    return request.args, DEEP
"""


def test_objects_that_raise_when_looked_at_do_not_break_the_digest(
    modules: Callable[[str, str], None],
) -> None:
    name = fresh("proxy")
    modules(name, PROXY)
    mod = load(name)
    digest = code_digest(mod.task)  # neither the proxy nor the deep list raises
    assert set(digest.parts) == {"python", "body"}
    assert digest.left_out == ("constant DEEP (a list)",)
    assert value_digest(mod.request) is None and value_digest(mod.DEEP) is None
    assert code_digest(functools.partial(mod.task)) == digest


def test_a_closure_over_state_the_task_updates_keeps_its_digest() -> None:
    """Closure cells are hashed by value when the function is first digested (a snapshot,
    like module constants), so a counter the task bumps does not make it rerun."""
    calls: dict[str, int] = {}

    def count() -> int:
        calls["count"] = calls.get("count", 0) + 1
        return calls["count"]

    before = code_digest(count)
    assert "closure calls" in before.parts
    count()
    assert code_digest(count) == before

    def make(cfg: dict[str, int]) -> Callable[[], int]:
        def task() -> int:
            return cfg["window"]

        return task

    assert code_digest(make({"window": 3})) == code_digest(make({"window": 3}))
    assert code_digest(make({"window": 3})).digest != code_digest(make({"window": 12})).digest


SHARED = """
RATE = {rate}

def mine(x):
    return x

def helper(x, k={k}):
    return len(x) * k * RATE

def task_a(x):
    return helper(x)

def task_b(x):
    return helper(x) + 1
"""


def test_a_helper_shared_by_tasks_is_hashed_once_and_still_noticed_when_it_changes(
    modules: Callable[[str, str], None],
) -> None:
    """Every walk reaching a helper shares its node (its digest and what it reaches); a
    walk of another task still sees what changed since: a constant it reads rebound, its
    defaults reassigned, a name it calls (here the built-in ``len``) bound in its module."""
    name = fresh("shared")
    modules(name, SHARED.format(rate=0.1, k=2))
    mod: Any = load(name)
    label, rate = f"helper {name}.py:helper", f"constant {name}.py:RATE"
    a = code_digest(mod.task_a)
    mod.RATE = 0.2
    b = code_digest(mod.task_b)
    assert b.parts[rate] == value_digest(0.2) != a.parts[rate]
    assert code_digest(mod.task_a).parts[rate] == b.parts[rate]
    mod.helper.__defaults__ = (3,)
    c = code_digest(copy_of(mod.task_b))
    assert c.parts[label] != b.parts[label]
    mod.len = mod.mine  # shadows the built-in in the helper's module
    d = code_digest(copy_of(mod.task_b))
    assert f"helper {name}.py:mine" in d.parts and f"helper {name}.py:mine" not in c.parts


def copy_of(fn: Any) -> Any:
    """Another function with ``fn``'s code and globals: a root not walked yet."""
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__)


def test_a_helpers_closure_cell_is_noticed_by_the_next_walk() -> None:
    def make(k: int) -> Callable[[int], int]:
        def scaled(x: int) -> int:
            return x * k

        return scaled

    ns: dict[str, Any] = {"__name__": "cells_module"}
    exec("def task(x):\n    return helper(x)\n", ns)
    ns["helper"] = make(2)
    before = code_digest(ns["task"])
    ns["helper"].__closure__[0].cell_contents = 3
    after = code_digest(copy_of(ns["task"]))
    label = next(p for p in before.parts if p.startswith("helper "))
    assert after.parts[label] != before.parts[label]


ATTRIBUTES = """
import {helpers}

def task():
    return {helpers}.scale(1) + local()

def local():
    return {helpers}.other()
"""

ATTRIBUTE_HELPERS = """
def scale(x):
    return x * 2

def other():
    return {other}
"""


def test_each_function_looks_up_its_own_names_in_a_module_it_shares(
    modules: Callable[[str, str], None],
) -> None:
    """``local`` reaches ``helpers.other`` through a module the task already searched for
    its own names: editing ``other`` must still change the task's digest."""
    helpers, tasks = fresh("attr_helpers"), fresh("attr_tasks")
    modules(helpers, ATTRIBUTE_HELPERS.format(other=1))
    modules(tasks, ATTRIBUTES.format(helpers=helpers))
    before = code_digest(load(tasks).task)
    assert f"helper {helpers}.py:other" in before.parts
    modules(helpers, ATTRIBUTE_HELPERS.format(other=2))
    load(helpers)
    after = code_digest(load(tasks).task)
    assert describe_change(before.parts, after) == f"helper other() changed ({helpers}.py)"


def test_constants_in_bytecode_are_exact_and_set_order_does_not_matter(tmp_path: Path) -> None:
    """``1``, ``1.0``, ``True``, ``0.0`` and ``-0.0`` differ as code constants; a frozenset
    constant (``x in {...}``) gives the same digest in processes with other string hashes."""
    bodies = ["1", "1.0", "True", "0.0", "-0.0", "(1, 2)", "(1, (2,))", "b'1'", "'1'", "None"]
    digests = set()
    for body in bodies:
        ns: dict[str, Any] = {}
        exec(f"def f():\n    return {body}\n", ns)
        digests.add(code_digest(ns["f"]).digest)
    assert len(digests) == len(bodies)
    script = tmp_path / "frozen.py"
    script.write_text(
        "from asyncflow._digest import code_digest\n"
        "def f(x):\n    return x in {'alpha', 'beta', 'gamma', 'delta', 'epsilon'}\n"
        "print(code_digest(f).parts['body'])\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(runs) == 1 and len(runs.pop().strip()) == 64


def test_a_bound_container_is_hashed_anew_on_every_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """``partial`` arguments are never snapshots: a dict mutated in place between two
    digests changes the second; the memo of digests by encoding stays bounded."""
    import asyncflow._digest as digest_module

    def fit(ticker: str, cfg: dict[str, int]) -> int:
        return cfg["w"]

    cfg = {"w": 3}
    first = code_digest(functools.partial(fit, "A", cfg=cfg))
    cfg["w"] = 4
    assert code_digest(functools.partial(fit, "A", cfg=cfg)).parts["bound cfg"] != first.parts["bound cfg"]
    cfg["w"] = 3
    assert code_digest(functools.partial(fit, "A", cfg=cfg)) == first
    monkeypatch.setattr(digest_module, "_BY_ENCODING_SIZE", 4)
    for w in range(10):
        code_digest(functools.partial(fit, "A", cfg={"w": w}))
        assert len(digest_module._by_encoding) <= 4
    assert code_digest(functools.partial(fit, "A", cfg={"w": 3})) == first

"""The pass over a module (asyncflow._pass) gives exactly the walks a function's own walk
would: same parts, digest, values left out and witnesses, on random modules.

Hypothesis writes a module of helpers, constants, a class, tasks and odd bindings (a
decorated function, a lambda, an import of another user module, defaults that are data,
code or a lock, a built-in shadowed by a helper, recursion and cycles), imports it,
digests every function (the first digest runs the pass), and compares each with a walk
of that function alone.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncflow._digest import code_digest
from asyncflow._roots import lines_of, walks
from asyncflow._walk import walk_root

_names = itertools.count()

CONSTANTS = ["1", "2.5", "'text'", "[1, 2]", "{'w': 3}", "(1, 'a')", "frozenset({'x', 'y'})", "None"]
DEFAULTS = ["3", "'d'", "[4]", "helper0", "LOCK"]


@st.composite
def modules(draw: st.DrawFn) -> str:
    helpers = draw(st.integers(1, 4))
    tasks = draw(st.integers(1, 6))
    lines = ["import functools", "import threading", "import {other}", "", "LOCK = threading.Lock()"]
    for c in range(3):
        lines.append(f"C{c} = {draw(st.sampled_from(CONSTANTS))}")
    lines += ["", "class Model:", "    def fit(self):", "        return helper0() + C0", ""]
    lines += ["fit_alias = Model.fit", ""]
    callable_names = [f"helper{h}" for h in range(helpers)] + [f"task{t}" for t in range(tasks)]
    for h in range(helpers):
        calls = draw(st.lists(st.sampled_from(callable_names), max_size=2))
        terms = [f"{c}()" for c in calls] + [f"C{draw(st.integers(0, 2))}", str(h)]
        lines += [f"def helper{h}():", f"    return [{', '.join(terms)}]", ""]
    for t in range(tasks):
        uses = draw(
            st.lists(
                st.sampled_from(
                    [*callable_names, "C0", "C1", "C2", "Model", "fit_alias", "{other}.VALUE", "len"]
                ),
                max_size=3,
            )
        )
        default = draw(st.one_of(st.none(), st.sampled_from(DEFAULTS)))
        parameter = f"x={default}" if default else "x=None"
        terms = [f"{u}()" if u.startswith(("helper", "task", "Model")) else u for u in uses]
        terms = ["fit_alias(Model())" if u == "fit_alias" else u for u in terms]
        lines += [f"def task{t}({parameter}):", f"    return [{', '.join([*terms, str(t)])}]", ""]
    if draw(st.booleans()):
        lines += [
            "def deco(fn):",
            "    @functools.wraps(fn)",
            "    def wrapper(*a):",
            "        return fn(*a)",
        ]
        lines += ["    return wrapper", "", "@deco", "def decorated():", "    return helper0()", ""]
    if draw(st.booleans()):
        lines += ["lam = lambda: helper0() + C1", "alias = helper0", ""]
    if draw(st.booleans()):
        lines += ["len = helper0", ""]
    return "\n".join(lines) + "\n"


def _import(folder: Path, name: str, source: str) -> types.ModuleType:
    (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _witnesses(found: Any) -> set[tuple[int, str, int]]:
    return {(id(ns), name, id(obj)) for ns, name, obj in found}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=modules())
def test_the_module_pass_gives_each_function_its_own_walk(source: str, tmp_path_factory: Any) -> None:
    folder = tmp_path_factory.mktemp("pass")
    sys.path.insert(0, str(folder))
    other, name = f"pass_other_{next(_names)}", f"pass_module_{next(_names)}"
    try:
        _import(folder, other, "VALUE = 7\n")
        module = _import(folder, name, source.replace("{other}", other))
        functions = [f for f in vars(module).values() if isinstance(f, types.FunctionType)]
        digests = [code_digest(f) for f in functions]
        for fn, digest in zip(functions, digests, strict=True):
            walk = walk_root(fn)
            assert dict(digest.parts) == walk.parts, fn.__qualname__
            assert digest.digest == hashlib.sha256(lines_of(walk.parts)).hexdigest()
            assert digest.left_out == tuple(dict.fromkeys(walk.left_out))
            assert _witnesses(walks[id(fn)].witnesses) == _witnesses(walk.witnesses), fn.__qualname__
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)
        sys.modules.pop(other, None)


def test_a_method_also_bound_as_a_global_is_a_helper_whichever_is_met_first(tmp_path: Path) -> None:
    """A walk does not depend on the order it meets things in: a method reached through
    its class and as a global of its own is a helper either way, as in the pass."""
    sys.path.insert(0, str(tmp_path))
    name = f"pass_alias_{next(_names)}"
    source = """
    class Model:
        def fit(self):
            return 1

    fit_alias = Model.fit

    def class_first():
        return Model(), fit_alias(Model())

    def alias_first():
        return fit_alias(Model()), Model()
    """
    try:
        module: Any = _import(tmp_path, name, source)
        for fn in (module.class_first, module.alias_first):
            assert f"helper {name}.py:Model.fit" in code_digest(fn).parts
            assert dict(code_digest(fn).parts) == walk_root(fn).parts
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)

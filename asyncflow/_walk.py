"""The transitive walk behind :func:`asyncflow._digest.code_digest` (see its module docstring).

:class:`Walk` visits a root callable and the user code it reaches, collecting labelled
parts, the values it could not hash and the global bindings it looked up ("witnesses",
against which a cached walk is checked). What each user function reaches directly comes
from its :func:`asyncflow._nodes.node`, computed once per function and shared by every
walk; the walk itself only joins the nodes it reaches (and walks classes, whose attributes
it reads afresh). Imports :mod:`asyncflow._nodes` and :mod:`asyncflow._shape` only.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

from ._nodes import _PLAIN, Collector, Node, is_user, node, where
from ._shape import PYTHON, sha, shape

__all__ = ["Walk", "walk_root"]


class Walk(Collector):
    """One transitive walk from a root callable; see the module docstring.

    Attributes (besides :class:`~asyncflow._nodes.Collector`'s, which here cover the
    whole walk):
        seen: ids of the functions and classes visited.
    """

    __slots__ = ("seen",)

    def __init__(self) -> None:  # Collector's, spelled out: one call less per walk
        self.parts = {"python": PYTHON}
        self.left_out = []
        self.witnesses = []
        self.edges = []
        self.scans = None
        self.modules = None
        self.seen: set[int] = set()

    def run(self) -> None:
        """Visit every edge collected so far, and the edges those lead to, once each."""
        edges, seen, i = self.edges, self.seen, 0
        while i < len(edges):
            obj = edges[i]
            i += 1
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            try:
                if isinstance(obj, type):
                    self.klass(obj)
                else:
                    self.join(node(obj), helper=True)
            except Exception:  # an object that raises when looked at: skipped, as in names()
                continue

    def join(self, found: Node, helper: bool) -> None:
        """Add what ``found`` reaches; as part ``found.label`` too if ``helper``."""
        parts = self.parts
        if helper:
            self.record(found.label, found.digest)
        for label, digest in found.parts.items():
            if parts.get(label, digest) == digest:
                parts[label] = digest
            else:
                self.record(label, digest)
        if found.left_out:
            self.left_out += found.left_out
        self.witnesses += found.witnesses
        self.edges += found.edges

    def body(self, fn: types.FunctionType) -> str:
        """The root's own digest (bytecode and the closure cells that hold code; its data
        defaults and cells are parts of their own, see :meth:`root_values`), and what
        its code reaches."""
        code = fn.__code__
        bytecode, names = shape(code, keep=bool(code.co_freevars))  # closures: made many times
        own = [bytecode]
        namespace = fn.__globals__
        here = where(namespace)
        if fn.__closure__:
            of = f" of {code.co_qualname}() ({here})"
            for var, cell in zip(code.co_freevars, fn.__closure__, strict=False):
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell: a name assigned later in the outer function
                    continue
                if callable(contents):
                    own.append(f"c{var}={self.value(contents, f'closure variable {var!r}', of)}")
        self.names(names, namespace, here)
        return bytecode if len(own) == 1 else sha("|".join(own))

    def root_values(self, fn: types.FunctionType) -> None:
        """Parts ``default <param>`` and ``closure <variable>`` for the root's own defaults,
        keyword defaults and closure cells that hold data (cells holding code are walked
        as helpers). Hashed once per walk, as module constants are: a closure over a
        counter that the task itself updates does not change the task's key."""
        if fn.__defaults__ is None and fn.__kwdefaults__ is None and fn.__closure__ is None:
            return
        code = fn.__code__
        positional = code.co_varnames[: code.co_argcount]
        defaults = fn.__defaults__ or ()
        items = list(zip(positional[len(positional) - len(defaults) :], defaults, strict=True))
        items += sorted((fn.__kwdefaults__ or {}).items())
        for name, value in items:
            digest = self.value(value, f"default {name!r}")
            if digest is not None:
                self.parts[f"default {name}"] = digest
        for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell: a name assigned later in the outer function
                continue
            if not callable(contents):
                digest = self.value(contents, f"closure variable {var!r}")
                if digest is not None:
                    self.parts[f"closure {var}"] = digest

    def klass(self, cls: type) -> None:
        """Record a user class: its user bases by name, its methods and plain attributes."""
        own = [f"{base.__module__}.{base.__qualname__}" for base in cls.__bases__]
        for base in cls.__mro__[1:]:
            if is_user(base):
                self.edges.append(base)
        for name, attr in sorted(vars(cls).items()):
            if isinstance(attr, types.FunctionType) and is_user(attr):
                method = node(attr)  # not marked seen: reached as a helper too, it is one
                own.append(f"{name}={method.digest}")
                self.join(method, helper=False)
            elif isinstance(attr, (staticmethod, classmethod, property, type, functools.partial)):
                self.leads(attr)
                own.append(f"{name}:{type(attr).__name__}")
            elif isinstance(attr, _PLAIN) and not name.startswith("__"):
                own.append(f"{name}={self.value(attr, f'class attribute {cls.__qualname__}.{name}')}")
        here = where(vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {})
        self.record(f"class {here}:{cls.__qualname__}", sha("|".join(own)))


def walk_root(root: Any) -> Walk:
    """A finished walk from ``root``: a function (through its decorators; a method also
    through its class), a class, a built-in, or any other callable (through its class).
    Never raises for a callable."""
    walk = Walk()
    walk.seen.add(id(root))
    if isinstance(root, types.FunctionType):
        layers = [root]
        while isinstance(getattr(layers[-1], "__wrapped__", None), types.FunctionType):
            layers.append(getattr(layers[-1], "__wrapped__"))  # noqa: B009
            walk.seen.add(id(layers[-1]))
        *wrappers, layer = layers
        for wrapper in wrappers:  # decorators' wrappers written by the user count as helpers
            if is_user(wrapper):
                walk.join(node(wrapper), helper=True)
        walk.parts["body"] = walk.body(layer)
        walk.root_values(layer)
        owner = _owner(layer)
        if owner is not None:  # a method: the other methods it calls through self
            walk.leads(owner)
    elif isinstance(root, type):
        walk.klass(root)
    elif isinstance(root, types.BuiltinFunctionType):
        walk.parts["body"] = sha(f"builtin {root.__module__}.{root.__qualname__}")
    else:
        walk.leads(type(root))
    walk.run()
    return walk


def _owner(fn: types.FunctionType) -> type | None:
    """The class that defines method ``fn`` (from its ``__qualname__``), if any."""
    qualname = fn.__code__.co_qualname
    if "." not in qualname:
        return None
    path = qualname.split(".")[:-1]
    if "<locals>" in path:
        return None
    obj: Any = fn.__globals__.get(path[0])
    for name in path[1:]:
        obj = getattr(obj, name, None)
    return obj if isinstance(obj, type) else None

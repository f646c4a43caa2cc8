"""What user code contributes to a code walk directly, and the cache of it per function.

A :class:`Collector` gathers what a piece of code reaches *directly*: looking up every name
of its ``co_names`` in its globals (and in the user modules found there, ``helpers.scale``),
it records plain-data constants as parts (hashed by value), the global bindings it
followed as witnesses, the values it could not hash, and the user functions and classes
it leads to as *edges*, without walking them. :class:`asyncflow._walk.Walk` (a collector
itself) then visits the edges.

:func:`node` is the :class:`Node` of one user function: its digest (bytecode, defaults,
closure values) and what its code collects, computed once per function and shared by
every walk that reaches it, so that a helper called by 10,000 task functions is looked at
once, not 10,000 times. A node is reused only while it would come out the same: while the
function's ``__code__``, ``__defaults__``, keyword defaults and closure cells hold the same
objects, and every name it looked up (bound or not, in its globals and in the user modules
it searched) is bound to the same object. Values are snapshots (see :data:`_snapshots`).

Imports :mod:`asyncflow._shape` and :mod:`asyncflow._values` only.
"""

from __future__ import annotations

import enum
import functools
import operator
import os
import sys
import types
import weakref
from collections.abc import Mapping
from itertools import repeat
from typing import Any

from ._shape import MISSING, dropper, sha, shape
from ._values import Unhashable, describe, encode, is_user_file

__all__ = ["Collector", "Node", "is_user", "is_user_module", "node", "where"]

_PLAIN = (str, int, float, bool, bytes, type(None), tuple, list, dict, set, frozenset)
_DATA = (*_PLAIN, enum.Enum)
"""Module globals of these types are constants, hashed by value (any other object is tried
by value too, quietly: see :meth:`Collector.follow`)."""

_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
"""Constants of these exact types are looked up in :data:`_snapshots` first."""

_CODE_LIKE = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    type,
    functools.partial,
    staticmethod,
    classmethod,
    property,
)
"""Globals that are code, followed as helpers rather than hashed as values."""

_snapshots: dict[int, tuple[Any, str]] = {}
"""``{id(value): (the value, its digest)}`` for the values walks reach: module constants,
defaults and closure cells (not ``partial`` arguments, hashed on every digest). The object
is kept, so its ``id`` is never reused. A value is hashed the first time a walk meets it in
the process: a counter or list that tasks update in place keeps the digest it had then."""

_is = operator.is_


def where(namespace: Mapping[str, Any]) -> str:
    """``pipelines/prices.py`` for the globals of module ``pipelines.prices``."""
    name = namespace.get("__name__")
    if not isinstance(name, str):
        return "<unknown>"
    if name == "__main__":
        file = namespace.get("__file__")
        return os.path.basename(file) if isinstance(file, str) else "__main__"
    return name.replace(".", "/") + ("/__init__.py" if "__path__" in namespace else ".py")


def is_user(obj: Any) -> bool:
    """Whether function or class ``obj`` is the user's own code (see
    :func:`asyncflow._values.is_user_file`)."""
    code = getattr(obj, "__code__", None)
    if isinstance(code, types.CodeType):
        return is_user_file(code.co_filename)
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None:
        return False
    return is_user_module(module)


def is_user_module(module: types.ModuleType) -> bool:
    """Whether ``module`` is the user's own: ``__main__``, or loaded from a user file."""
    if module.__name__ == "__main__":
        return True
    file = getattr(module, "__file__", None)
    return isinstance(file, str) and is_user_file(file)


class Collector:
    """What code reaches directly (see the module docstring); filled by :meth:`names`.

    Attributes:
        parts: ``{label: hex digest}`` of the constants found.
        left_out: descriptions of the values that could not be hashed.
        witnesses: the bindings followed, ``(namespace, name, object)``.
        edges: the user functions and classes reached, to be walked.
        scans: ``(namespace, names, the objects they were bound to)`` for every namespace
            searched (``MISSING`` for an unbound name), or ``None`` when not kept.
    """

    __slots__ = ("edges", "left_out", "modules", "parts", "scans", "witnesses")

    def __init__(self, scans: bool) -> None:
        self.parts: dict[str, str] = {}
        self.left_out: list[str] = []
        self.witnesses: list[tuple[dict[str, Any], str, Any]] = []
        self.edges: list[Any] = []
        self.scans: list[tuple[dict[str, Any], tuple[str, ...], tuple[Any, ...]]] | None = (
            [] if scans else None
        )
        self.modules: set[int] | None = None

    def value(self, value: Any, *what: str) -> str | None:
        """The digest of a value the code reaches (a constant, default or closure cell);
        ``None``, and ``"".join(what)`` noted in ``left_out``, if it cannot be hashed.

        The digest is kept with the object (a snapshot, see :data:`_snapshots`) unless
        code was met inside it: such code becomes an edge, named in the digest."""
        known = _snapshots.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        met: list[Any] = []

        def token(obj: Any) -> str:
            met.append(obj)
            self.leads(obj)
            return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"

        try:
            digest = sha(encode(value, token))
        except Unhashable as exc:
            nested = "" if exc.value is value else "holds "
            self.left_out.append(f"{''.join(what)} ({nested}{describe(exc.value)})")
            return None
        if not met:
            _snapshots[id(value)] = (value, digest)
        return digest

    def quiet_value(self, value: Any) -> str | None:
        """:meth:`value`, but an object without a stable encoding is ``None``, not noted."""
        left = len(self.left_out)
        digest = self.value(value)
        del self.left_out[left:]
        return digest

    def record(self, label: str, digest: str) -> None:
        """Set part ``label``; two different objects under one label (an old function
        still bound by ``from m import f`` after ``m`` was reloaded) both count."""
        known = self.parts.get(label)
        self.parts[label] = digest if known in (None, digest) else sha("+".join(sorted((known, digest))))

    def names(self, names: tuple[str, ...], namespace: dict[str, Any], here: str) -> None:
        """Follow every name of ``names`` bound in ``namespace`` (a module's globals,
        whose file is ``here``)."""
        bound: tuple[Any, ...] = tuple(map(namespace.get, names, repeat(MISSING)))
        if self.scans is not None:
            self.scans.append((namespace, names, bound))
        for name, obj in zip(names, bound, strict=True):
            if obj is MISSING:
                continue
            kind = type(obj)
            try:
                if kind is types.FunctionType and is_user_file(obj.__code__.co_filename):
                    self.edges.append(obj)  # the common case, a helper: inline
                    self.witnesses.append((namespace, name, obj))
                elif kind in _SCALARS and (known := _snapshots.get(id(obj))) is not None and known[0] is obj:
                    self.witnesses.append((namespace, name, obj))  # a constant met before: inline
                    self.record(f"constant {here}:{name}", known[1])
                else:
                    self.follow(names, namespace, name, obj, here)
            except Exception:  # e.g. a context-local proxy whose attributes raise
                continue  # nothing it leads to can be told, so it is not user code

    def follow(
        self, names: tuple[str, ...], namespace: dict[str, Any], name: str, obj: Any, here: str
    ) -> None:
        """Follow global ``name`` of ``namespace``, bound to ``obj``; a user module is
        searched for all of ``names`` in turn (``helpers.scale``); see :meth:`names`."""
        if isinstance(obj, types.ModuleType):
            if is_user_module(obj):
                if self.modules is None:
                    self.modules = set()
                if id(obj) not in self.modules:
                    self.modules.add(id(obj))
                    self.witnesses.append((namespace, name, obj))
                    self.names(names, vars(obj), where(vars(obj)))
        elif isinstance(obj, _DATA):
            digest = self.value(obj, "constant ", name)
            if digest is not None:
                self.witnesses.append((namespace, name, obj))
                self.record(f"constant {here}:{name}", digest)
        elif isinstance(obj, _CODE_LIKE):
            if self.leads(obj):
                self.witnesses.append((namespace, name, obj))
        else:
            # Any other object (a config instance, a compiled pattern, a date, a Path): by
            # value when it has a stable encoding, as a constant; else (a client, a logger)
            # only its class is followed, if it is user code.
            followed = self.leads(obj)
            digest = self.quiet_value(obj)
            if digest is not None:
                self.record(f"constant {here}:{name}", digest)
            if digest is not None or followed:
                self.witnesses.append((namespace, name, obj))

    def leads(self, obj: Any, depth: int = 0) -> bool:
        """Whether ``obj`` is or leads to user code; the user functions and classes it
        leads to become edges."""
        if depth > 100:  # a __wrapped__ chain that loops
            return False
        if isinstance(obj, types.FunctionType):
            if is_user(obj):
                self.edges.append(obj)
                return True
            wrapped = getattr(obj, "__wrapped__", None)
            return wrapped is not None and self.leads(wrapped, depth + 1)
        if isinstance(obj, type):
            if not is_user(obj):
                return False
            self.edges.append(obj)
            return True
        if isinstance(obj, types.MethodType):
            return self.leads(obj.__func__, depth + 1) | self.leads(type(obj.__self__), depth + 1)
        if isinstance(obj, functools.partial):
            self.leads(obj.func, depth + 1)
            return True
        if isinstance(obj, (staticmethod, classmethod)):
            return self.leads(obj.__func__, depth + 1)
        if isinstance(obj, property):
            return any([self.leads(f, depth + 1) for f in (obj.fget, obj.fset, obj.fdel) if f is not None])
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None:
            return self.leads(wrapped, depth + 1)
        return not isinstance(obj, types.ModuleType) and self.leads(type(obj), depth + 1)


class Node(weakref.ref[types.FunctionType]):
    """The cached contribution of one user function (a weak reference to it).

    Attributes:
        digest: hex SHA-256 of its bytecode, defaults and closure values.
        label: its part label as a helper, ``"helper <file>:<qualname>"``.
        parts, left_out, witnesses, edges: as :class:`Collector` found them (tuples).
    """

    __slots__ = (
        "cells",
        "code",
        "defaults",
        "digest",
        "edges",
        "key",
        "kwdefaults",
        "label",
        "left_out",
        "parts",
        "scans",
        "witnesses",
    )
    key: int
    code: types.CodeType
    defaults: tuple[Any, ...] | None
    kwdefaults: tuple[tuple[str, Any], ...] | None
    cells: tuple[Any, ...]
    scans: tuple[tuple[dict[str, Any], tuple[str, ...], tuple[Any, ...]], ...]
    digest: str
    label: str
    parts: dict[str, str]
    left_out: tuple[str, ...]
    witnesses: tuple[tuple[dict[str, Any], str, Any], ...]
    edges: tuple[Any, ...]


_nodes: dict[int, Node] = {}
"""``{id(function): Node}``; an entry goes with its function."""

_drop_node = dropper(_nodes)


def node(fn: types.FunctionType) -> Node:
    """The :class:`Node` of user function ``fn``: the cached one while it is still what
    ``fn`` would give (see the module docstring), else a new one. Never raises for a
    function: names whose objects raise when looked at are skipped."""
    entry = _nodes.get(id(fn))
    if entry is not None and entry() is fn and _valid(entry, fn):
        return entry
    return _make(fn)


def _cell_values(closure: tuple[Any, ...]) -> tuple[Any, ...]:
    values = []
    for cell in closure:
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell: a name assigned later in the outer function
            values.append(MISSING)
    return tuple(values)


def _same_items(mapping: dict[str, Any], items: tuple[tuple[str, Any], ...]) -> bool:
    return len(mapping) == len(items) and all([mapping.get(key, MISSING) is value for key, value in items])


def _valid(entry: Node, fn: types.FunctionType) -> bool:
    if fn.__code__ is not entry.code or fn.__defaults__ is not entry.defaults:
        return False
    kwdefaults, known = fn.__kwdefaults__, entry.kwdefaults
    if known is None:
        if kwdefaults:
            return False
    elif not kwdefaults or not _same_items(kwdefaults, known):
        return False
    if entry.cells and not all(map(_is, _cell_values(fn.__closure__ or ()), entry.cells)):
        return False
    for namespace, names, bound in entry.scans:
        if not all(map(_is, map(namespace.get, names, repeat(MISSING)), bound)):
            return False
    return True


def _make(fn: types.FunctionType) -> Node:
    code = fn.__code__
    bytecode, names = shape(code)
    namespace = fn.__globals__
    here = where(namespace)
    found = Collector(scans=True)
    own = [bytecode]
    defaults, kwdefaults = fn.__defaults__, fn.__kwdefaults__
    cells = _cell_values(fn.__closure__) if fn.__closure__ else ()
    of = f" of {code.co_qualname}() ({here})" if defaults or kwdefaults or cells else ""
    for i, value in enumerate(defaults or ()):
        own.append(f"d{i}={found.value(value, f'default #{i}', of)}")
    for key, value in sorted((kwdefaults or {}).items()):
        own.append(f"k{key}={found.value(value, f'default {key!r}', of)}")
    for var, contents in zip(code.co_freevars, cells, strict=False):
        if contents is not MISSING:
            own.append(f"c{var}={found.value(contents, f'closure variable {var!r}', of)}")
    found.names(names, namespace, here)
    entry = Node(fn, _drop_node)
    entry.key, entry.code, entry.defaults, entry.cells = id(fn), code, defaults, cells
    entry.kwdefaults = tuple(kwdefaults.items()) if kwdefaults else None
    entry.scans = tuple(found.scans or ())
    entry.digest = bytecode if len(own) == 1 else sha("|".join(own))
    entry.label = f"helper {here}:{code.co_qualname}"
    entry.parts, entry.left_out = found.parts, tuple(found.left_out)
    entry.witnesses, entry.edges = tuple(found.witnesses), tuple(found.edges)
    _nodes[entry.key] = entry
    return entry

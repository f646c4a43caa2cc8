"""One pass over a module: the walks of all its functions at once, the first time one of
them is digested (see :func:`module_pass`).

Most of a cold walk's cost is not the user's code but per-walk bookkeeping, done again
for each of 10,000 functions that call the same helper and read the same constant. The
pass shares it: every name any plain function of the module looks up is followed once
(a *share*: the parts, witnesses and functions visited that following it adds to any
walk), functions that look up the same followed names form a *group* whose parts, lines
and witnesses are joined once, and the per-function remainder (bytecode digests, the
final digest of each group member, the cache entries) runs in loops over ``map`` that
stay in C.

The result is exactly the walk :func:`asyncflow._walk.walk_root` would give, parts,
digest and witnesses alike. A function goes the way of its own walk (in the same pass,
so every function of the module leaves it walked) when the shortcut could differ: it has
a closure or decorators or is not module-level; a name it looks up is a user module
(which is searched for *that* function's names); following a name leaves a value out
(whose order in ``left_out`` a walk decides); a share reaches the function itself; two
shares give one label two digests; or its own defaults lead to code or cannot be hashed.

Imports :mod:`asyncflow._roots`, :mod:`asyncflow._walk`, :mod:`asyncflow._nodes` and
:mod:`asyncflow._shape` only.
"""

from __future__ import annotations

import bisect
import operator
import types
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from ._nodes import is_user_module, where
from ._roots import lines_of, store, store_many, walks
from ._shape import MISSING, PYTHON, shapes
from ._walk import Walk, walk_root

__all__ = ["module_pass"]


@dataclass(slots=True, eq=False)
class _Share:
    """What following one global name adds to every walk that looks it up."""

    parts: dict[str, str]
    witnesses: tuple[Any, ...]
    seen: set[int]  # ids of the functions and classes visited


_ALONE: Any = object()
"""A name whose functions must be walked one by one (see the module docstring)."""


@dataclass(slots=True, eq=False)
class _Group:
    """The functions whose followed names are the same: what they share, joined once."""

    parts: dict[str, str]  # "python" and the shares' parts: every part but "body"
    witnesses: tuple[Any, ...]
    seen: set[int]
    before: str  # the sorted lines before the body's, and "body="
    after: str  # the sorted lines after the body's, each after a newline


_code = operator.attrgetter("__code__")


def module_pass(root: types.FunctionType) -> None:
    """Walk ``root`` and every function bound in its module's globals that was not walked
    yet, and cache the walks (as :func:`asyncflow._roots.store` does). Never raises."""
    namespace = root.__globals__
    pending = dict.fromkeys(
        fn
        for fn in namespace.values()
        if type(fn) is types.FunctionType and fn.__globals__ is namespace and id(fn) not in walks
    )
    pending[root] = None
    plain, alone = [], []
    for fn in pending:
        if fn.__closure__ is None and "." not in fn.__code__.co_qualname and not hasattr(fn, "__wrapped__"):
            plain.append(fn)
        else:
            alone.append(fn)
    if plain:
        alone += _together(plain, namespace)
    for fn in alone:
        walk = walk_root(fn)
        store(fn, walk.parts, walk.left_out, walk.witnesses)


def _together(fns: list[types.FunctionType], namespace: dict[str, Any]) -> list[types.FunctionType]:
    """Walk and cache the plain functions ``fns`` of ``namespace`` together; return
    those that must be walked one by one."""
    here = where(namespace)
    bodies, names = shapes(list(map(_code, fns)))
    shares: dict[str, Any] = {name: _share(namespace, name, here) for name in set().union(*names)}
    _part_conflicts(shares)
    keys = map(tuple, map(filter, repeat(None), map(map, repeat(shares.get), names)))
    groups: dict[tuple[Any, ...], _Group | None] = {}
    alone: list[types.FunctionType] = []
    members: dict[int, tuple[_Group, list[types.FunctionType], list[str]]] = {}
    own: list[tuple[types.FunctionType, dict[str, str], tuple[Any, ...]]] = []
    for fn, body, key in zip(fns, bodies, keys, strict=True):
        group = groups[key] if key in groups else groups.setdefault(key, _group(key))
        if group is None or id(fn) in group.seen:
            alone.append(fn)
        elif fn.__defaults__ is None and fn.__kwdefaults__ is None:
            entry = members.get(id(group))
            if entry is None:
                entry = members[id(group)] = (group, [], [])
            entry[1].append(fn)
            entry[2].append(body)
        else:  # defaults: parts of their own, so lines of their own
            values = _defaults(fn)
            if values is None:
                alone.append(fn)
            else:
                own.append((fn, {**group.parts, "body": body, **values}, group.witnesses))
    roots: list[types.FunctionType] = []
    parts: list[dict[str, str]] = []
    lines: list[bytes] = []
    witnesses: list[tuple[Any, ...]] = []
    for group, group_fns, group_bodies in members.values():
        n = len(group_fns)
        group_parts = list(map(dict, repeat(group.parts, n)))
        list(map(operator.setitem, group_parts, repeat("body"), group_bodies))
        texts = map("".join, zip(repeat(group.before), group_bodies, repeat(group.after)))
        lines += map(str.encode, texts, repeat("utf-8"), repeat("surrogatepass"))
        roots += group_fns
        parts += group_parts
        witnesses += repeat(group.witnesses, n)
    for fn, fn_parts, fn_witnesses in own:
        roots.append(fn)
        parts.append(fn_parts)
        lines.append(lines_of(fn_parts))
        witnesses.append(fn_witnesses)
    store_many(roots, parts, lines, witnesses)
    return alone


def _share(namespace: dict[str, Any], name: str, here: str) -> Any:
    """What following global ``name`` adds to a walk: a :class:`_Share`, ``None`` when
    nothing (unbound, or nothing followed), or :data:`_ALONE`."""
    obj = namespace.get(name, MISSING)
    if obj is MISSING:
        return None
    if issubclass(type(obj), types.ModuleType):  # not isinstance: that may ask the object
        return _ALONE if is_user_module(obj) else None
    walk = Walk()
    walk.names((name,), namespace, here)
    walk.run()
    if walk.left_out:
        return _ALONE
    if not walk.witnesses:
        return None
    del walk.parts["python"]
    return _Share(walk.parts, tuple(walk.witnesses), walk.seen)


def _part_conflicts(shares: dict[str, Any]) -> None:
    """Turn into :data:`_ALONE` the shares that give a label another share's label gives
    a different digest (a walk would combine the two)."""
    digests: dict[str, str] = {}
    clashing: set[str] = set()
    found = [share for share in shares.values() if isinstance(share, _Share)]
    for share in found:
        for label, digest in share.parts.items():
            if digests.setdefault(label, digest) != digest:
                clashing.add(label)
    if clashing:
        for name, share in shares.items():
            if isinstance(share, _Share) and not clashing.isdisjoint(share.parts):
                shares[name] = _ALONE


def _group(key: Iterable[Any]) -> _Group | None:
    """The :class:`_Group` of functions whose followed names give the shares ``key``;
    ``None`` if one of them is :data:`_ALONE`."""
    parts = {"python": PYTHON}
    witnesses: list[Any] = []
    seen: set[int] = set()
    for share in key:
        if share is _ALONE:
            return None
        parts.update(share.parts)
        witnesses += share.witnesses
        seen |= share.seen
    lines = sorted(map("=".join, parts.items()))
    at = bisect.bisect(lines, "body=")  # no other label starts with "body"
    before = "".join([line + "\n" for line in lines[:at]]) + "body="
    after = "".join(["\n" + line for line in lines[at:]])
    return _Group(parts, tuple(witnesses), seen, before, after)


def _defaults(fn: types.FunctionType) -> dict[str, str] | None:
    """The ``default`` parts of ``fn``'s own defaults; ``None`` if one leads to code or
    cannot be hashed."""
    walk = Walk()
    walk.root_values(fn)
    if walk.left_out or walk.edges:
        return None
    del walk.parts["python"]
    return walk.parts

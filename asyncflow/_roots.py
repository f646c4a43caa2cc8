"""The cache of finished walks, one per root callable, and the :class:`CodeDigest` type.

A cached walk (:class:`Walked`) is a weak reference to its root, keyed by the root's ``id``
in :data:`walks` and dropped with it, holding the code parts, the global bindings the
walk followed ("witnesses", ``(namespace, name, object)``), the sorted
``label=part`` lines the digest hashes and the :class:`CodeDigest` itself. :func:`lookup`
returns it while every witness is still bound to the same object and the root's
``__code__`` is the same; :func:`store` and :func:`store_many` make entries.

Imports :mod:`asyncflow._shape` only.
"""

from __future__ import annotations

import hashlib
import operator
import types
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from ._shape import MISSING, dropper

__all__ = [
    "CodeDigest",
    "Walked",
    "lines_of",
    "lookup",
    "make_digest",
    "store",
    "store_many",
    "unwrap",
    "walks",
]


@dataclass(frozen=True, slots=True)
class CodeDigest:
    """What a callable computes, as one digest and the parts it was made of.

    Attributes:
        digest: hex SHA-256 over the ``label=part`` lines of ``parts``: the code parts'
            lines sorted (``default`` and ``closure`` parts among them), then the
            ``bound`` parts' lines sorted.
        parts: ``{label: hex SHA-256 of that component}``. Labels: ``"python"``,
            ``"body"`` (the task function's own code), ``"helper <file>:<qualname>"`` (a
            user function reached), ``"class <file>:<qualname>"``, ``"constant
            <file>:<name>"`` (a plain-data module global read), ``"bound <param>"`` (a
            ``partial`` argument; ``"bound #<i>"`` when a positional one has no name,
            ``"bound self"`` for a bound method's object), ``"default <param>"``,
            ``"closure <variable>"``. ``<file>`` is the module's path relative to its
            import root (``pipelines/prices.py``), so it does not depend on the current
            directory.
        left_out: descriptions of values that could not be hashed stably and are not in
            the digest, e.g. ``"bound argument 'session' (a ClientSession)"``.

    ``parts`` and ``left_out`` default to empty, so that a digest loaded from a checkpoint
    can be rebuilt as ``CodeDigest(digest, parts)`` for :func:`describe_change`.
    """

    digest: str
    parts: Mapping[str, str] = field(default_factory=dict)
    left_out: tuple[str, ...] = ()


class Walked(weakref.ref[Any]):
    """A cached walk (a weak reference to its root): its code parts, and what each call
    needs to add the bound values (see the module docstring)."""

    __slots__ = ("code", "inner", "key", "left_out", "lines", "parts", "result", "witnesses")
    key: int
    parts: dict[str, str]
    left_out: tuple[str, ...]
    witnesses: tuple[tuple[dict[str, Any], str, Any], ...]  # (namespace, name, object)
    code: Any  # the root's __code__ when walked (a reassigned __code__ invalidates)
    lines: bytes  # the code parts' sorted "label=part" lines, which the digest hashes
    inner: Any  # the root without its decorators
    result: CodeDigest  # the digest when nothing is bound


walks: dict[int, Walked] = {}
"""``{id(root): Walked}``; an entry goes with its root."""

_drop = dropper(walks)
_new = object.__new__
_set_digest, _set_parts, _set_left_out = (
    vars(CodeDigest)[f].__set__ for f in ("digest", "parts", "left_out")
)
_hexdigest = operator.methodcaller("hexdigest")
_proxy = types.MappingProxyType


def make_digest(digest: str, parts: Mapping[str, str], left_out: tuple[str, ...]) -> CodeDigest:
    """``CodeDigest(digest, parts, left_out)`` without the frozen dataclass's ``__init__``
    (which sets each field through ``object.__setattr__``): half the cost, once per task."""
    made: CodeDigest = _new(CodeDigest)
    _set_digest(made, digest)
    _set_parts(made, parts)
    _set_left_out(made, left_out)
    return made


def lookup(root: Any) -> Walked | None:
    """The cached walk of ``root`` if it is still valid (see the module docstring)."""
    walked = walks.get(id(root))
    if walked is None or walked() is not root or getattr(root, "__code__", None) is not walked.code:
        return None
    for namespace, name, obj in walked.witnesses:
        if namespace.get(name, MISSING) is not obj:
            return None
    return walked


def lines_of(parts: dict[str, str]) -> bytes:
    """The sorted ``label=part`` lines of ``parts``, as the digest hashes them."""
    return "\n".join(sorted(map("=".join, parts.items()))).encode("utf-8", "surrogatepass")


def store(root: Any, parts: dict[str, str], left_out: Sequence[str], witnesses: Sequence[Any]) -> Walked:
    """Cache (unless ``root`` cannot be weakly referenced) and return the walk of
    ``root`` that found ``parts``, ``left_out`` (duplicates dropped) and ``witnesses``."""
    try:
        walked = Walked(root, _drop)
    except TypeError:  # not weakly referenceable: not cached
        walked = Walked(store, None)
    else:
        walked.key = id(root)
        walks[walked.key] = walked
    left = tuple(dict.fromkeys(left_out)) if left_out else ()
    lines = lines_of(parts)
    walked.parts, walked.left_out, walked.lines = parts, left, lines
    walked.witnesses = tuple(witnesses)
    walked.code = getattr(root, "__code__", None)
    walked.inner = unwrap(root)
    walked.result = make_digest(hashlib.sha256(lines).hexdigest(), _proxy(parts), left)
    return walked


def store_many(
    roots: Sequence[types.FunctionType],
    parts: Sequence[dict[str, str]],
    lines: Sequence[bytes],
    witnesses: Sequence[tuple[Any, ...]],
) -> None:
    """Cache the walks of many plain functions (no decorators, nothing left out) at once:
    ``parts[i]``, ``lines[i]`` (:func:`lines_of` them) and ``witnesses[i]`` are those of
    ``roots[i]``. The same as :func:`store` for each, in a few loops that run in C."""
    n = len(roots)
    entries = list(map(Walked, roots, repeat(_drop, n)))
    keys = list(map(id, roots))
    results = list(map(_new, repeat(CodeDigest, n)))
    fields: tuple[tuple[Any, Iterable[Any]], ...] = (
        (_set_digest, map(_hexdigest, map(hashlib.sha256, lines))),
        (_set_parts, map(_proxy, parts)),
        (_set_left_out, repeat((), n)),
    )
    for setter, values in fields:
        list(map(setter, results, values))
    slots: tuple[tuple[str, Iterable[Any]], ...] = (
        ("key", keys),
        ("parts", parts),
        ("left_out", repeat((), n)),
        ("lines", lines),
        ("witnesses", witnesses),
        ("code", map(operator.attrgetter("__code__"), roots)),
        ("inner", roots),
        ("result", results),
    )
    for name, slot_values in slots:
        list(map(setattr, entries, repeat(name), slot_values))
    walks.update(zip(keys, entries, strict=True))


def unwrap(fn: Any) -> Any:
    """``fn`` without its decorators: follows ``__wrapped__`` while it leads to a function."""
    while isinstance(getattr(fn, "__wrapped__", None), types.FunctionType):
        fn = fn.__wrapped__
    return fn

"""The bytecode digest of one code object (:func:`shape`), and the small tools the digest
caches share (:func:`dropper`, :func:`sha`, :data:`PYTHON`, :data:`MISSING`).

What :func:`shape` hashes, in one SHA-256: the :mod:`marshal` encoding (format version 2,
which writes every object in full, so the bytes do not depend on reference counts or
interning) of a tuple of the code object's name, argument counts, flags, ``co_names``,
``co_varnames``, ``co_freevars``, ``co_cellvars``, ``co_code``, exception table and
constants. Line numbers and the file name are left out. Marshal spells the usual constants
(``None``, bools, ints, floats, complex, str, bytes, ``...`` and tuples of them) exactly
(``1``, ``1.0`` and ``True`` differ, so do ``0.0`` and ``-0.0``). Any other constant is
``None`` in the tuple and spelled in one more field, of ``(index, spelling)`` pairs: a nested
code object by its own shape, anything else (a frozenset, whose marshal order follows
string hashes, which differ between processes; a nested tuple) by its canonical
:func:`asyncflow._values.encode`, in which set order does not matter.

Imports :mod:`asyncflow._values` only.
"""

from __future__ import annotations

import hashlib
import marshal
import operator
import sys
import types
import weakref
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from typing import Any

from ._values import Unhashable, encode

__all__ = ["MISSING", "PYTHON", "dropper", "sha", "shape", "shapes"]

PYTHON = hashlib.sha256(f"python {sys.version_info[0]}.{sys.version_info[1]}".encode()).hexdigest()
"""The ``python`` part of every code digest: bytecode differs between Python versions."""

MISSING: Any = object()
"""The stand-in for "not bound" in namespace look-ups (``namespace.get(name, MISSING)``)."""

_EXACT = frozenset({str, int, float, complex, bool, bytes, type(None), type(Ellipsis)})
"""Constant types that marshal spells exactly and canonically."""


def dropper(cache: dict[int, Any]) -> Callable[[weakref.ref[Any]], None]:
    """A callback for the weak-reference entries of ``cache`` (keyed by ``id``, each entry
    a :class:`weakref.ref` subclass with a ``key`` slot holding that id) that removes the
    entry when its object goes; one per cache, so that an entry costs no closure."""

    def drop(ref: weakref.ref[Any]) -> None:
        key: int = getattr(ref, "key", -1)
        if cache.get(key) is ref:
            del cache[key]

    return drop


def sha(text: str) -> str:
    """The hex SHA-256 of ``text`` (UTF-8; lone surrogates kept, so never raises)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _Shape(weakref.ref[types.CodeType]):
    """A cached shape: a weak reference to the code object, with its digest and names."""

    __slots__ = ("digest", "key", "names")
    key: int
    digest: str
    names: tuple[str, ...]


_FIELDS = operator.attrgetter(
    "co_name",
    "co_argcount",
    "co_posonlyargcount",
    "co_kwonlyargcount",
    "co_flags",
    "co_names",
    "co_varnames",
    "co_freevars",
    "co_cellvars",
    "co_code",
    "co_exceptiontable",
    "co_consts",
)
"""The hashed fields of a code object, in order (one C call fetches them all)."""
_NAMES, _CONSTS = operator.itemgetter(5), operator.itemgetter(-1)
_HEXDIGEST = operator.methodcaller("hexdigest")

_shapes: dict[int, _Shape] = {}
"""``{id(code): _Shape}`` for code objects that may be met again (see :func:`shape`)."""

_drop_shape = dropper(_shapes)


def shape(code: types.CodeType, keep: bool = True) -> tuple[str, tuple[str, ...]]:
    """The bytecode digest of ``code`` (hex SHA-256, see the module docstring) and every
    name its code, nested code included, looks up (``co_names``, in order, deduplicated).

    Args:
        code: the code object.
        keep: cache the result with ``code`` (weakly). Nested code objects are always
            kept. A caller that keeps the digest itself (a task function's own code,
            digested once per walk) passes ``False`` and saves the entry.

    Never raises.
    """
    entry = _shapes.get(id(code))
    if entry is not None and entry() is code:
        return entry.digest, entry.names
    fields = _FIELDS(code)
    names: tuple[str, ...] = fields[5]
    if not _EXACT.issuperset(map(type, fields[-1])):
        fields, names = _special(fields, names)
    digest = hashlib.sha256(marshal.dumps(fields, 2)).hexdigest()
    if keep:
        entry = _Shape(code, _drop_shape)
        entry.key, entry.digest, entry.names = id(code), digest, names
        _shapes[entry.key] = entry
    return digest, names


def shapes(codes: Sequence[types.CodeType]) -> tuple[list[str], list[tuple[str, ...]]]:
    """:func:`shape` (not kept) of every code object of ``codes``, in a few loops that
    run in C: the list of digests and the list of names, in the order of ``codes``."""
    fields = list(map(_FIELDS, codes))
    names: list[tuple[str, ...]] = list(map(_NAMES, fields))
    exact = map(_EXACT.issuperset, map(map, repeat(type), map(_CONSTS, fields)))
    for i in compress(range(len(fields)), map(operator.not_, exact)):
        fields[i], names[i] = _special(fields[i], names[i])
    return list(map(_HEXDIGEST, map(hashlib.sha256, map(marshal.dumps, fields, repeat(2))))), names


def _special(fields: tuple[Any, ...], names: tuple[str, ...]) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """``fields`` with ``None`` for each constant marshal does not spell exactly, those
    spelled otherwise in one more field, ``(index, spelling)`` pairs; and ``names`` with
    the names of nested code objects added."""
    found = dict.fromkeys(names)
    out: list[Any] = []
    special: list[tuple[int, str]] = []
    for i, const in enumerate(fields[-1]):
        kind = type(const)
        if kind in _EXACT or (kind is tuple and _EXACT.issuperset(map(type, const))):
            out.append(const)  # a tuple of plain constants: keyword names of a call, say
            continue
        out.append(None)
        if kind is types.CodeType:
            inner, inner_names = shape(const)
            found.update(dict.fromkeys(inner_names))
            special.append((i, f"code {inner}"))
            continue
        try:  # a frozenset, a nested tuple, an object put there by code.replace()
            special.append((i, f"value {encode(const, repr)}"))
        except Unhashable:
            special.append((i, f"object {const!r}"))
    return (*fields[:-1], tuple(out), tuple(special)), tuple(found)

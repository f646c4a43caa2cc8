"""Canonical encodings of plain data, and the rule for what counts as the user's own code.

Two things that :mod:`asyncflow._digest` builds on, kept here so that it stays one job:

* :func:`encode` turns a value into a canonical ``str`` such that two values get the same
  encoding exactly when they are equal as *data*: dict and set order does not matter;
  ``1``, ``1.0`` and ``True`` differ, and so do a tuple and a list with the same items.
  It understands ``None``, bools, ints, floats (by :meth:`float.hex`, so ``-0.0`` and
  ``0.0`` differ), complex, str, bytes, tuples, lists, dicts, sets, frozensets (and their
  subclasses, tagged with the subclass's name), enum members (by qualified name and value),
  dataclass instances (by class and fields), instances of the user's own classes (by class
  and attributes), compiled regular expressions, and a few stdlib
  types whose ``repr`` is their value (dates and times, ``Decimal``, ``Fraction``, paths,
  ``UUID``, ``range``). Functions and classes are handed to a callback (the code digest).
  Anything else raises :class:`Unhashable`: its ``repr`` may hold an address, or its state
  may live outside Python (an open file, a client), so no stable encoding exists.
* :func:`is_user_file` decides whether code is the user's own: see its docstring.

This module imports nothing from asyncflow.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import os
import pathlib
import re
import site
import sys
import sysconfig
import types
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["Unhashable", "describe", "encode", "is_user_file"]

_BY_REPR = (
    datetime.date,  # datetime.datetime is a subclass
    datetime.time,
    datetime.timedelta,
    datetime.timezone,
    decimal.Decimal,
    fractions.Fraction,
    pathlib.PurePath,
    uuid.UUID,
    range,
)
"""Types whose ``repr`` is a stable spelling of their value (no address, no hidden state)."""

_CODE = (type, types.FunctionType, types.MethodType, types.BuiltinFunctionType)
"""Values encoded by the ``code`` callback of :func:`encode` (their code digest)."""


class Unhashable(Exception):
    """A value has no stable encoding; ``.value`` is the offending (possibly nested) object."""

    def __init__(self, value: Any) -> None:
        super().__init__(describe(value))
        self.value = value


def describe(value: Any) -> str:
    """A short phrase naming ``value``'s type, e.g. ``"a ClientSession"``, for warnings."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def encode(value: Any, code: Callable[[Any], str]) -> str:
    """The canonical encoding of ``value`` (see the module docstring).

    Args:
        value: the value to encode, nested to any depth.
        code: called with each function or class met inside ``value``; returns its digest.

    Raises:
        Unhashable: ``value`` is, or contains, an object without a stable encoding, or a
            container that contains itself; also when looking at it raises (an object
            whose attributes raise, nesting deeper than the recursion limit).
    """
    kind = type(value)
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        return scalar(value)
    if kind is dict:  # a configuration of plain keys and values, most often: no recursion
        flat = _flat_dict(value)
        if flat is not None:
            return flat
    try:
        return _encode(value, code, set())
    except Unhashable:
        raise
    except Exception as exc:  # a proxy whose attributes raise, nesting past the recursion limit
        raise Unhashable(value) from exc


_SCALARS: dict[type, Callable[[Any], str]] = {
    str: lambda v: f"s{len(v)}:{v}",
    int: lambda v: f"i{v};",
    float: lambda v: f"f{v.hex()};",
    bool: lambda v: f"c{v}",
    type(None): lambda v: "cNone",
    type(Ellipsis): lambda v: "cEllipsis",
    bytes: lambda v: f"b{len(v)}:{v.hex()}",
    complex: lambda v: f"j{v.real.hex()},{v.imag.hex()};",
}
"""The encoding of each scalar type, by exact type (subclasses are tagged, see below)."""


def _flat_dict(value: dict[Any, Any]) -> str | None:
    """:func:`_container`'s encoding of a dict whose keys and values are all scalars (of
    exact scalar types); ``None`` for any other dict."""
    scalar = _SCALARS.get
    items = []
    for key, item in value.items():
        encode_key, encode_item = scalar(type(key)), scalar(type(item))
        if encode_key is None or encode_item is None:
            return None
        items.append(encode_key(key) + "=" + encode_item(item))
    items.sort()
    return f"{{{len(items)}:" + ",".join(items) + "}"


def _encode(value: Any, code: Callable[[Any], str], active: set[int]) -> str:
    kind = type(value)
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        return scalar(value)
    if kind is dict or kind is list or kind is tuple or kind is set or kind is frozenset:
        return _container(value, kind, code, active)
    if isinstance(value, enum.Enum):
        return f"e{kind.__module__}.{kind.__qualname__}.{value.name}=" + _encode(value.value, code, active)
    tag = f"<{kind.__module__}.{kind.__qualname__}>"
    for scalar_base in (str, int, float, bytes, complex):  # a subclass of a scalar type: tagged
        if isinstance(value, scalar_base):
            convert: Callable[[Any], Any] = scalar_base
            return tag + _SCALARS[scalar_base](convert(value))
    container_base: type
    for container_base in (dict, list, tuple, set, frozenset):
        if isinstance(value, container_base):
            return tag + _container(value, container_base, code, active)
    if isinstance(value, _CODE):
        return f"F{code(value)};"
    if isinstance(value, functools.partial):
        return "P" + _encode((value.func, value.args, value.keywords), code, active)
    if isinstance(value, _BY_REPR):
        return f"r{kind.__qualname__}:{value!r};"
    if isinstance(value, re.Pattern):
        return f"R{value.flags}:" + _encode(value.pattern, code, active)
    if dataclasses.is_dataclass(value) and _has_user_class(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return f"D{kind.__module__}.{kind.__qualname__}:" + _guarded(value, fields, dict, code, active)
    if _has_user_class(value) and isinstance(getattr(value, "__dict__", None), dict):
        # An instance of a class of the user's own code: by class and attributes, each by
        # value (an attribute that cannot be hashed leaves the whole object out, loudly).
        return f"O{kind.__module__}.{kind.__qualname__}:" + _guarded(value, vars(value), dict, code, active)
    raise Unhashable(value)


def _guarded(owner: Any, value: Any, kind: type, code: Callable[[Any], str], active: set[int]) -> str:
    if id(owner) in active:
        raise Unhashable(owner)
    active.add(id(owner))
    try:
        return _container(value, kind, code, active)
    finally:
        active.discard(id(owner))


def _container(value: Any, kind: type, code: Callable[[Any], str], active: set[int]) -> str:
    if id(value) in active:
        raise Unhashable(value)
    active.add(id(value))
    try:
        if kind is dict:
            items = sorted(
                [_encode(k, code, active) + "=" + _encode(v, code, active) for k, v in value.items()]
            )
            return f"{{{len(items)}:" + ",".join(items) + "}"
        if kind is set or kind is frozenset:
            tag = "S" if kind is set else "Z"
            return f"{tag}{len(value)}:" + ",".join(sorted(_encode(v, code, active) for v in value)) + ";"
        opening = "(" if kind is tuple else "["
        return f"{opening}{len(value)}:" + ",".join([_encode(v, code, active) for v in value]) + ";"
    finally:
        active.discard(id(value))


def _has_user_class(value: Any) -> bool:
    module = sys.modules.get(type(value).__module__)
    file = getattr(module, "__file__", None)
    return type(value).__module__ == "__main__" or (isinstance(file, str) and is_user_file(file))


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    roots.add(site.getusersitepackages())
    roots.add(os.path.dirname(os.path.abspath(__file__)))  # asyncflow itself
    return tuple(sorted(os.path.join(os.path.realpath(r), "") for r in roots if r))


_LIBRARY_ROOTS = _library_roots()


@functools.cache
def is_user_file(filename: str) -> bool:
    """Whether code from ``filename`` (a ``co_filename`` or module ``__file__``) is user code.

    The rule: code is the user's own unless its file lies under the standard library or
    an installed-packages directory (``sysconfig``'s ``stdlib``, ``platstdlib``,
    ``purelib`` and ``platlib`` paths, ``site.getsitepackages()``, the user site
    directory, or any directory named ``site-packages`` or ``dist-packages``), or in
    asyncflow's own package directory. Frozen stdlib modules (``"<frozen os>"``) are not
    user code; other pseudo-files (``"<string>"`` from ``exec``, notebook cells) are.
    Packages installed in editable mode live in the user's tree and so count as user code.
    Cached per file name for the life of the process.
    """
    if filename.startswith("<"):
        return not filename.startswith("<frozen")
    path = os.path.join(os.path.realpath(filename), "")
    parts = path.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not path.startswith(_LIBRARY_ROOTS)

"""Canonical encodings of plain data, and the rule for what counts as the user's own code.

Two things that :mod:`asyncflow._digest` builds on, kept here so that it stays one job:

* :func:`encode` turns a value into a canonical ``str`` such that two values get the same
  encoding exactly when they are equal as *data*: dict and set order does not matter;
  ``1``, ``1.0`` and ``True`` differ, and so do a tuple and a list with the same items.
  It understands ``None``, bools, ints, floats (by :meth:`float.hex`, so ``-0.0`` and
  ``0.0`` differ), complex, str, bytes, tuples, lists, dicts, sets, frozensets (and their
  subclasses, tagged with the subclass's name), enum members (by qualified name and value),
  dataclass instances (by class and fields), compiled regular expressions, and a few stdlib
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
            container that contains itself.
    """
    out: list[str] = []
    _encode(value, code, out, set())
    return "".join(out)


def _encode(value: Any, code: Callable[[Any], str], out: list[str], active: set[int]) -> None:
    kind = type(value)
    if kind is str:
        out.append(f"s{len(value)}:{value}")
    elif value is None or kind is bool or value is Ellipsis:
        out.append(f"c{value}")
    elif kind is int:
        out.append(f"i{value};")
    elif kind is float:
        out.append(f"f{value.hex()};")
    elif isinstance(value, enum.Enum):
        out.append(f"e{kind.__module__}.{kind.__qualname__}.{value.name}=")
        _encode(value.value, code, out, active)
    elif isinstance(value, (str, int, float, bytes, complex)) and kind is not bytes and kind is not complex:
        out.append(f"<{kind.__module__}.{kind.__qualname__}>")  # a subclass of a scalar type
        _encode(kind.__mro__[-2](value), code, out, active)
    elif kind is bytes:
        out.append(f"b{len(value)}:{value.hex()}")
    elif kind is complex:
        out.append(f"j{value.real.hex()},{value.imag.hex()};")
    elif isinstance(value, (tuple, list, dict, set, frozenset)):
        if id(value) in active:
            raise Unhashable(value)
        active.add(id(value))
        if kind not in (tuple, list, dict, set, frozenset):
            out.append(f"<{kind.__module__}.{kind.__qualname__}>")
        if isinstance(value, dict):
            items = sorted((encode_in(k, code, active), encode_in(v, code, active)) for k, v in value.items())
            out.append(f"{{{len(items)}:" + "".join(k + v for k, v in items) + "}")
        elif isinstance(value, (set, frozenset)):
            tag = "S" if isinstance(value, set) else "Z"
            out.append(
                f"{tag}{len(value)}:" + "".join(sorted(encode_in(v, code, active) for v in value)) + ";"
            )
        else:
            out.append(f"{'(' if isinstance(value, tuple) else '['}{len(value)}:")
            for item in value:
                _encode(item, code, out, active)
        active.discard(id(value))
    elif isinstance(value, _CODE):
        out.append(f"F{code(value)};")
    elif isinstance(value, functools.partial):
        out.append("P")
        _encode((value.func, value.args, value.keywords), code, out, active)
    elif isinstance(value, _BY_REPR):
        out.append(f"r{kind.__qualname__}:{value!r};")
    elif isinstance(value, re.Pattern):
        out.append(f"R{value.flags}:")
        _encode(value.pattern, code, out, active)
    elif dataclasses.is_dataclass(value) and _has_user_class(value):
        if id(value) in active:
            raise Unhashable(value)
        active.add(id(value))
        out.append(f"D{kind.__module__}.{kind.__qualname__}:")
        _encode({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, code, out, active)
        active.discard(id(value))
    else:
        raise Unhashable(value)


def encode_in(value: Any, code: Callable[[Any], str], active: set[int]) -> str:
    """:func:`encode` inside an encoding already under way (``active``: containers open)."""
    out: list[str] = []
    _encode(value, code, out, active)
    return "".join(out)


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

"""The transitive walk behind :func:`asyncflow._digest.code_digest` (see its module docstring).

:class:`Walk` visits a root callable and the user code it reaches, collecting labelled
parts, the values it could not hash and the global bindings it looked up ("witnesses",
against which a cached walk is checked). :func:`shape` digests one code object from its
bytecode, cached per code object. Imports :mod:`asyncflow._values` only.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import sys
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ._values import Unhashable, describe, encode, is_user_file

__all__ = ["MISSING", "Walk", "dropper", "sha", "shape", "walk_root"]

PYTHON = hashlib.sha256(f"python {sys.version_info[0]}.{sys.version_info[1]}".encode()).hexdigest()
MISSING: Any = object()
_PLAIN = (str, int, float, bool, bytes, type(None), tuple, list, dict, set, frozenset)
_DATA = (*_PLAIN, enum.Enum)
"""Module globals of these types are constants, hashed by value (any other object is tried
by value too, quietly: see :meth:`Walk.follow`)."""

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


_shapes: dict[int, tuple[weakref.KeyedRef[int, types.CodeType], str, tuple[str, ...]]] = {}
"""``{id(code): (weak reference keyed by that id, bytecode digest, names looked up)}``."""


_snapshots: dict[int, tuple[Any, str]] = {}
"""``{id(value): (the value, its digest)}`` for the values walks reach: module constants,
defaults and closure cells (not ``partial`` arguments, hashed on every digest). The object
is kept, so its ``id`` is never reused. A value is hashed the first time a walk meets it in
the process: a counter or list that tasks update in place keeps the digest it had then."""


def dropper(cache: dict[int, Any]) -> Callable[[weakref.KeyedRef[int, Any]], None]:
    """A callback for ``weakref.KeyedRef(obj, callback, id(obj))`` entries of ``cache``
    (keyed by ``id``) that removes the entry when ``obj`` goes; one per cache, so that an
    entry costs one weak reference and no closure."""

    def drop(ref: weakref.KeyedRef[int, Any]) -> None:
        cache.pop(ref.key, None)

    return drop


_drop_shape = dropper(_shapes)


def sha(text: str) -> str:
    """The hex SHA-256 of ``text`` (UTF-8; lone surrogates kept, so never raises)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def shape(code: types.CodeType) -> tuple[str, tuple[str, ...]]:
    """The bytecode digest of ``code`` and every name its code (nested too) looks up."""
    entry = _shapes.get(id(code))
    if entry is not None and entry[0]() is code:
        return entry[1], entry[2]
    names = dict.fromkeys(code.co_names)
    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner, inner_names = shape(const)
            names.update(dict.fromkeys(inner_names))
            consts.append(f"C{inner};")
        else:
            consts.append(encode(const, repr))
    header = (
        f"{code.co_name}|{code.co_argcount}|{code.co_posonlyargcount}|{code.co_kwonlyargcount}|"
        f"{code.co_flags}|{code.co_names}|{code.co_varnames}|{code.co_freevars}|{code.co_cellvars}|"
        f"{len(code.co_code)}|{len(code.co_exceptiontable)}|"
    ).encode("utf-8", "surrogatepass")
    text = "".join(consts).encode("utf-8", "surrogatepass")
    h = hashlib.sha256(header + code.co_code + code.co_exceptiontable + text)
    digest, found = h.hexdigest(), tuple(names)
    key = id(code)
    _shapes[key] = (weakref.KeyedRef(code, _drop_shape, key), digest, found)
    return digest, found


def _where(namespace: Mapping[str, Any]) -> str:
    """``pipelines/prices.py`` for the globals of module ``pipelines.prices``."""
    name = namespace.get("__name__")
    if not isinstance(name, str):
        return "<unknown>"
    if name == "__main__":
        file = namespace.get("__file__")
        return os.path.basename(file) if isinstance(file, str) else "__main__"
    return name.replace(".", "/") + ("/__init__.py" if "__path__" in namespace else ".py")


def _is_user(obj: Any) -> bool:
    code = getattr(obj, "__code__", None)
    if isinstance(code, types.CodeType):
        return is_user_file(code.co_filename)
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None:
        return False
    return _is_user_module(module)


def _is_user_module(module: types.ModuleType) -> bool:
    if module.__name__ == "__main__":
        return True
    file = getattr(module, "__file__", None)
    return isinstance(file, str) and is_user_file(file)


class Walk:
    """One transitive walk from a root callable; see the module docstring."""

    def __init__(self) -> None:
        self.parts: dict[str, str] = {"python": PYTHON}
        self.left_out: list[str] = []
        self.witnesses: list[tuple[dict[str, Any], str, Any]] = []
        self.seen: set[int] = set()

    def value(self, value: Any, what: str) -> str | None:
        """The digest of a value the walk reaches (a constant, default or closure cell);
        ``None``, and ``what`` noted in ``left_out``, if it cannot be hashed.

        The digest is kept with the object (a snapshot, see :data:`_snapshots`) unless
        code was met inside it: code is walked into this walk's parts, every time."""
        known = _snapshots.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        met: list[Any] = []

        def token(obj: Any) -> str:
            met.append(obj)
            return self.token(obj)

        try:
            digest = sha(encode(value, token))
        except Unhashable as exc:
            nested = "" if exc.value is value else "holds "
            self.left_out.append(f"{what} ({nested}{describe(exc.value)})")
            return None
        if not met:
            _snapshots[id(value)] = (value, digest)
        return digest

    def token(self, obj: Any) -> str:
        """Stand-in for code met inside a value: the code is walked, its name is the token."""
        self.reference(obj)
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"

    def function(self, fn: types.FunctionType, label: str | None, root: bool = False) -> str:
        """Walk ``fn``; record it as a helper part under ``label`` (or return its digest).

        The root's own defaults and plain closure values are separate parts (see
        :meth:`root_values`); a helper's are part of its digest.
        """
        bytecode, names = shape(fn.__code__)
        own = [bytecode]
        where = _where(fn.__globals__)
        of = (
            f" of {fn.__code__.co_qualname}() ({where})"
            if fn.__defaults__ or fn.__kwdefaults__ or fn.__closure__
            else ""
        )
        if not root:
            for i, value in enumerate(fn.__defaults__ or ()):
                own.append(f"d{i}={self.value(value, f'default #{i}{of}')}")
            for key, value in sorted((fn.__kwdefaults__ or {}).items()):
                own.append(f"k{key}={self.value(value, f'default {key!r}{of}')}")
        if fn.__closure__:
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=False):
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell: a name assigned later in the outer function
                    continue
                if root and not callable(contents):
                    continue
                own.append(f"c{var}={self.value(contents, f'closure variable {var!r}{of}')}")
        self.names(names, fn.__globals__, where)
        digest = bytecode if len(own) == 1 else sha("|".join(own))
        if label is not None:
            self.record(label, digest)
        return digest

    def root_values(self, fn: types.FunctionType) -> None:
        """Parts ``default <param>`` and ``closure <variable>`` for the root's own defaults,
        keyword defaults and closure cells that hold data (cells holding code are walked
        as helpers). Hashed once per walk, as module constants are: a closure over a
        counter that the task itself updates does not change the task's key."""
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

    def record(self, label: str, digest: str) -> None:
        """Set part ``label``; two different objects under one label (an old function
        still bound by ``from m import f`` after ``m`` was reloaded) both count."""
        known = self.parts.get(label)
        self.parts[label] = digest if known in (None, digest) else sha("+".join(sorted((known, digest))))

    def names(self, names: tuple[str, ...], namespace: dict[str, Any], where: str) -> None:
        """Follow every name of ``names`` bound in ``namespace`` (a module's globals)."""
        for name in names:
            obj = namespace.get(name, MISSING)
            if obj is MISSING:
                continue
            try:
                self.follow(names, namespace, name, obj, where)
            except Exception:  # e.g. a context-local proxy whose attributes raise
                continue  # nothing it leads to can be told, so it is not user code

    def follow(
        self, names: tuple[str, ...], namespace: dict[str, Any], name: str, obj: Any, where: str
    ) -> None:
        """Follow global ``name`` of ``namespace``, bound to ``obj``; a user module is
        searched for all of ``names`` in turn (``helpers.scale``); see :meth:`names`."""
        if isinstance(obj, types.ModuleType):
            if _is_user_module(obj) and id(obj) not in self.seen:
                self.seen.add(id(obj))
                self.witnesses.append((namespace, name, obj))
                self.names(names, vars(obj), _where(vars(obj)))
        elif isinstance(obj, _DATA):
            digest = self.value(obj, f"constant {name}")
            if digest is not None:
                self.witnesses.append((namespace, name, obj))
                self.record(f"constant {where}:{name}", digest)
        elif isinstance(obj, _CODE_LIKE):
            if self.reference(obj):
                self.witnesses.append((namespace, name, obj))
        else:
            # Any other object (a config instance, a compiled pattern, a date, a Path): by
            # value when it has a stable encoding, as a constant; else (a client, a logger)
            # only its class is followed, if it is user code.
            followed = self.reference(obj)
            digest = self.quiet_value(obj)
            if digest is not None:
                self.record(f"constant {where}:{name}", digest)
            if digest is not None or followed:
                self.witnesses.append((namespace, name, obj))

    def quiet_value(self, value: Any) -> str | None:
        """:meth:`value`, but an object without a stable encoding is ``None``, not noted."""
        left = len(self.left_out)
        digest = self.value(value, "")
        del self.left_out[left:]
        return digest

    def reference(self, obj: Any) -> bool:
        """Follow ``obj`` if it is (or leads to) user code; whether it did."""
        if id(obj) in self.seen:
            return True
        self.seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            if _is_user(obj):
                self.function(obj, f"helper {_where(obj.__globals__)}:{obj.__code__.co_qualname}")
                return True
            wrapped = getattr(obj, "__wrapped__", None)
            return wrapped is not None and self.reference(wrapped)
        if isinstance(obj, type):
            if not _is_user(obj):
                return False
            self.klass(obj)
            return True
        if isinstance(obj, types.MethodType):
            return self.reference(obj.__func__) | self.reference(type(obj.__self__))
        if isinstance(obj, functools.partial):
            self.reference(obj.func)
            return True
        if isinstance(obj, (staticmethod, classmethod)):
            return self.reference(obj.__func__)
        if isinstance(obj, property):
            return any([self.reference(f) for f in (obj.fget, obj.fset, obj.fdel) if f is not None])
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None:
            return self.reference(wrapped)
        return not isinstance(obj, types.ModuleType) and self.reference(type(obj))

    def klass(self, cls: type) -> None:
        """Record a user class: its user bases by name, its methods and plain attributes."""
        own = [f"{base.__module__}.{base.__qualname__}" for base in cls.__bases__]
        for base in cls.__mro__[1:]:
            if _is_user(base):
                self.reference(base)
        for name, attr in sorted(vars(cls).items()):
            if isinstance(attr, types.FunctionType) and _is_user(attr):
                self.seen.add(id(attr))
                own.append(f"{name}={self.function(attr, None)}")
            elif isinstance(attr, (staticmethod, classmethod, property, type, functools.partial)):
                self.reference(attr)
                own.append(f"{name}:{type(attr).__name__}")
            elif isinstance(attr, _PLAIN) and not name.startswith("__"):
                own.append(f"{name}={self.value(attr, f'class attribute {cls.__qualname__}.{name}')}")
        where = _where(vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {})
        self.record(f"class {where}:{cls.__qualname__}", sha("|".join(own)))


def walk_root(root: Any) -> Walk:
    """A finished walk from ``root``: a function (through its decorators; a method also
    through its class), a class, a built-in, or any other callable (through its class)."""
    walk = Walk()
    walk.seen.add(id(root))
    if isinstance(root, types.FunctionType):
        layers = [root]
        while isinstance(getattr(layers[-1], "__wrapped__", None), types.FunctionType):
            layers.append(getattr(layers[-1], "__wrapped__"))  # noqa: B009
            walk.seen.add(id(layers[-1]))
        *wrappers, layer = layers
        for wrapper in wrappers:  # decorators' wrappers written by the user count as helpers
            if _is_user(wrapper):
                walk.function(wrapper, f"helper {_where(wrapper.__globals__)}:{wrapper.__code__.co_qualname}")
        walk.parts["body"] = walk.function(layer, None, root=True)
        walk.root_values(layer)
        owner = _owner(layer)
        if owner is not None:  # a method: the other methods it calls through self
            walk.reference(owner)
    elif isinstance(root, type):
        walk.klass(root)
    elif isinstance(root, types.BuiltinFunctionType):
        walk.parts["body"] = sha(f"builtin {root.__module__}.{root.__qualname__}")
    else:
        walk.reference(type(root))
    return walk


def _owner(fn: types.FunctionType) -> type | None:
    """The class that defines method ``fn`` (from its ``__qualname__``), if any."""
    path = fn.__code__.co_qualname.split(".")[:-1]
    if not path or "<locals>" in path:
        return None
    obj: Any = fn.__globals__.get(path[0])
    for name in path[1:]:
        obj = getattr(obj, name, None)
    return obj if isinstance(obj, type) else None

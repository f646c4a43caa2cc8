"""Fast construction of frozen, slotted dataclasses that are built by the thousand.

A ``@dataclass(frozen=True, slots=True)`` ``__init__`` stores each field with
``object.__setattr__`` (its own ``__setattr__`` refuses): for the 17 fields of a
:class:`~asyncflow.Task` that is most of the cost of registering a task in a large fan-out.

:func:`layout_twin` makes a plain class with the same slots, in the same order, whose
instances are filled with ordinary (fast) attribute stores; :func:`become` then turns such
an instance into an instance of the frozen class by assigning ``__class__``, which CPython
allows between classes of identical layout. The result *is* an instance of the frozen
class, field for field as if its ``__init__`` had built it: same ``type()``, ``repr``,
equality, hashing, pickling, ``dataclasses.replace`` and immutability. A builder must set
every slot (an unset slot raises ``AttributeError`` when read); the tests compare what
each builder makes with what the class's own ``__init__`` makes.

A class that derives from another dataclass (the run's events derive from
:class:`~asyncflow.Event`) cannot have a twin: ``__class__`` assignment needs the same
base. :func:`positional_builder` serves those: a generated function that stores each
field through its slot's descriptor, positionally, at about half the cost of the
keyword-only ``__init__`` (0.3 against 0.7 µs for a five-field event).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["become", "layout_twin", "positional_builder"]

T = TypeVar("T")


def layout_twin(cls: type) -> type:
    """A plain, mutable class with ``cls``'s ``__slots__`` (same names, same order).

    Args:
        cls: a class defined with ``__slots__`` (e.g. ``@dataclass(slots=True)``) that
            adds no ``__dict__`` or ``__weakref__`` and derives directly from ``object``.

    Raises:
        TypeError: ``cls`` does not have that shape (checked once, here, by converting a
            blank instance), so that :func:`become` cannot fail later.
    """
    slots = cls.__dict__.get("__slots__")
    if cls.__bases__ != (object,) or not isinstance(slots, tuple) or "__weakref__" in slots:
        raise TypeError(f"{cls.__qualname__} must derive from object and declare a tuple of __slots__")
    twin = type(f"_{cls.__name__}Fields", (), {"__slots__": slots, "__module__": cls.__module__})
    become(twin(), cls)  # raises TypeError if the layouts differ
    return twin


def become(blank: Any, cls: type[T]) -> T:
    """Turn ``blank``, an instance of ``layout_twin(cls)`` with every slot set, into a ``cls``.

    Returns:
        ``blank`` itself, now an instance of ``cls`` (frozen if ``cls`` is).

    Raises:
        TypeError: ``blank``'s class does not have ``cls``'s layout.
    """
    blank.__class__ = cls
    result: T = blank
    return result


def positional_builder(cls: type[T]) -> Callable[..., T]:
    """A function ``build(*values) -> cls`` taking every field of dataclass ``cls``
    positionally, in ``dataclasses.fields(cls)`` order (a base class's fields first), and
    storing each through its slot's descriptor, as the frozen ``__init__`` would, without
    keyword parsing or ``object.__setattr__`` calls.

    The function is generated source (as :mod:`dataclasses` makes ``__init__``), so that
    each store is one call; it takes no defaults: pass every field.

    Raises:
        TypeError: ``cls`` is not a slotted dataclass, or defines ``__post_init__`` (which
            the builder would skip).
    """
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__qualname__} must be a dataclass without __post_init__")
    names = [f.name for f in dataclasses.fields(cls)]
    space: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    for name in names:
        owner = next((k for k in cls.__mro__ if name in k.__dict__.get("__slots__", ())), None)
        if owner is None:
            raise TypeError(f"{cls.__qualname__}.{name} is not a slot")
        space[f"_set_{name}"] = owner.__dict__[name].__set__
    stores = "".join(f"    _set_{name}(obj, {name})\n" for name in names)
    source = f"def build({', '.join(names)}):\n    obj = _new(_cls)\n{stores}    return obj\n"
    exec(source, space)  # our own source, made from field names
    build: Callable[..., T] = space["build"]
    build.__qualname__ = f"positional_builder({cls.__qualname__})"
    return build

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
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["become", "layout_twin"]

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

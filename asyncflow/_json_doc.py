"""Typed access to a JSON document read back from a file, with errors that name the field.

Used to read run records back (:mod:`asyncflow._records`); it knows nothing about them.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["JsonObject"]


class JsonObject:
    """Typed access to one JSON object (a ``dict`` read back from JSON), with errors that
    name the field.

    Args:
        doc: the object; anything else raises.
        where: its place in the document, for error messages (``"tasks.fetch"``).

    Raises:
        ValueError: ``doc`` is not a ``dict``.
    """

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise ValueError(f"{where} must be a JSON object, not {type(doc).__name__}")
        self.doc, self.where = doc, where

    def get(self, key: str, kind: type[Any]) -> Any:
        """The value of ``key``, of type ``kind`` (an int is taken as a float).

        Raises:
            ValueError: ``key`` is missing or its value has another type.
        """
        if key not in self.doc:
            raise ValueError(f"{self.where} has no {key!r}")
        return self._check(key, self.doc[key], kind)

    def opt(self, key: str, kind: type[Any]) -> Any:
        """The value of ``key`` of type ``kind``, or ``None`` when it is missing or null.

        Raises:
            ValueError: its value has another type.
        """
        value = self.doc.get(key)
        return None if value is None else self._check(key, value, kind)

    def enum(self, key: str, kind: type[enum.Enum]) -> Any:
        """The member of ``kind`` whose value is the string at ``key``.

        Raises:
            ValueError: ``key`` is missing, not a string, or no member's value.
        """
        value = self.get(key, str)
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{self.where}.{key} has an unknown value {value!r}") from None

    def _check(self, key: str, value: Any, kind: type[Any]) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{self.where}.{key} must be {kind.__name__}, not {type(value).__name__}")
        return value

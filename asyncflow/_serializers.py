"""How a task's result is turned into checkpoint bytes and back.

A serializer is any object with four members (the :class:`Serializer` protocol):

* ``name``: a short, stable name stored in every checkpoint it writes (``"json"``);
* ``suffix``: the file suffix of its checkpoint files (``".json"``, ``".pkl"``);
* ``dumps(value) -> bytes`` and ``loads(data: bytes) -> value``.

A serializer may also have ``dump(value, file)`` and ``load(file) -> value`` (binary
files); the file store then streams large results instead of holding their bytes.

Two are built in. :data:`JSON` (the default) is asyncflow's strict JSON: plain data only,
no NaN, so a downstream task receives the same value on a first run and on a resumed run.
:data:`PICKLE` stores any picklable object (DataFrames, arrays, sets, datetimes,
dataclasses). **Loading a pickle runs code**: asyncflow unpickles a checkpoint only for a
task that declares ``serializer="pickle"``, and only a file its own store wrote and named
in its journal, never a file found by its name alone. A checkpoint whose stored serializer
name differs from the task's current one is a cache miss (``serializer changed: json ->
pickle``), never decoded with the wrong serializer.

A task's serializer is chosen with ``@pipeline.task(serializer=...)``, else the
pipeline's (``Pipeline(..., serializer=...)``), else :data:`JSON`; see
:func:`resolve_serializer`. Whatever ``loads`` returns is what downstream tasks receive,
on the first run too: the runner round-trips a fresh result through the serializer.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

from ._files import dumps_json

__all__ = ["JSON", "PICKLE", "JsonSerializer", "PickleSerializer", "Serializer", "resolve_serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns a task's result into bytes and back, for checkpoints.

    Attributes:
        name: stored in each checkpoint; a checkpoint is loaded only by a serializer of
            the same name. Letters, digits, ``_``, ``-`` and ``.``.
        suffix: the checkpoint file's suffix, with its dot (``".parquet"``).
    """

    name: str
    suffix: str

    def dumps(self, value: Any) -> bytes:
        """The bytes of ``value``.

        Raises:
            Exception: ``value`` cannot be serialized (the task fails with a
                :class:`~asyncflow.CheckpointError` naming it, the serializer and the
                value's type; it is not retried).
        """
        ...

    def loads(self, data: bytes) -> Any:
        """The value whose bytes are ``data``.

        Raises:
            Exception: ``data`` is not what ``dumps`` writes (a corrupted file: asyncflow
                warns and treats the checkpoint as missing).
        """
        ...


class JsonSerializer:
    """Strict JSON (``allow_nan=False``), UTF-8; the default serializer.

    Only plain data round-trips: dict (str keys), list, str, int, float, bool, None.
    Tuples come back as lists, which is why asyncflow hands downstream tasks the decoded
    value on the first run too.
    """

    name = "json"
    suffix = ".json"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; see :func:`asyncflow._files.dumps_json` for what raises."""
        return dumps_json(value).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        """Decode ``data``.

        Raises:
            ValueError: not JSON, or nested too deeply.
        """
        try:
            return json.loads(data)
        except RecursionError:
            raise ValueError("nested too deeply to decode") from None

    def __repr__(self) -> str:
        return "JSON"


class PickleSerializer:
    """:mod:`pickle` at ``pickle.HIGHEST_PROTOCOL``: any picklable object.

    Unpickling runs code named by the file: load only files you wrote (see the module
    docstring for how asyncflow makes sure of it).
    """

    name = "pickle"
    suffix = ".pkl"

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value``.

        Raises:
            pickle.PicklingError, TypeError, AttributeError: ``value`` cannot be pickled.
            ValueError: it is nested too deeply.
        """
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except RecursionError:
            raise ValueError("nested too deeply to pickle") from None

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data``.

        Raises:
            Exception: ``data`` is not a pickle (any unpickling error).
        """
        return pickle.loads(data)

    def dump(self, value: Any, file: Any) -> None:
        """Pickle ``value`` into binary ``file`` as it goes (the store's streaming path).

        Raises:
            as :meth:`dumps`.
        """
        try:
            pickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)
        except RecursionError:
            raise ValueError("nested too deeply to pickle") from None

    def load(self, file: Any) -> Any:
        """Unpickle from binary ``file``.

        Raises:
            Exception: the file is not a pickle.
        """
        return pickle.load(file)

    def __repr__(self) -> str:
        return "PICKLE"


JSON: Serializer = JsonSerializer()
"""The default serializer: strict JSON."""

PICKLE: Serializer = PickleSerializer()
"""The pickle serializer (``serializer="pickle"``)."""

_BY_NAME = {"json": JSON, "pickle": PICKLE}


def resolve_serializer(spec: str | Serializer | None, *, where: str) -> Serializer | None:
    """The serializer ``spec`` names: ``"json"``, ``"pickle"``, an object, or ``None``.

    Args:
        spec: the ``serializer=`` option as given.
        where: who gave it, for the error message (``"task 'fit'"``).

    Returns:
        the serializer, or ``None`` when ``spec`` is ``None`` (inherit the default).

    Raises:
        ValueError: ``spec`` is an unknown name, or an object without ``name``, ``suffix``,
            ``dumps`` and ``loads``.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        try:
            return _BY_NAME[spec]
        except KeyError:
            raise ValueError(
                f"{where}: unknown serializer {spec!r}; use 'json', 'pickle' or an object with "
                "name, suffix, dumps(value) -> bytes and loads(data) -> value"
            ) from None
    if not isinstance(spec, Serializer):
        raise ValueError(
            f"{where}: serializer {spec!r} lacks name, suffix, dumps or loads (see asyncflow.Serializer)"
        )
    name, suffix = getattr(spec, "name", None), getattr(spec, "suffix", None)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-." for c in name):
        raise ValueError(f"{where}: serializer name {name!r} must be a non-empty word (letters, digits, _-.)")
    if not isinstance(suffix, str) or not suffix.startswith(".") or "/" in suffix or "\\" in suffix:
        raise ValueError(f"{where}: serializer suffix {suffix!r} must start with '.' and name no folder")
    return spec

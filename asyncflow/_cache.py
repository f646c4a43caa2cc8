"""Cache keys: when may a checkpoint stand in for running a task?

A task's cache key is the SHA-256 (``hashlib``) of a canonical JSON document holding:

* ``code``: the digest of what the task's function computes, including the helpers,
  classes and module constants of the user's own code that it reaches, and the values
  bound to it (defaults, closures, ``functools.partial`` arguments), hashed by value
  (see :mod:`asyncflow._digest`);
* ``params``: the run parameters **the task read** on its last run (through its
  ``params`` mapping or ``context.params``), by name and value digest; a parameter it
  never reads is not in its key;
* ``extra``: the digest of the task's ``cache_key_fn(params)`` value, if it has one (use
  it for the content of input files: ``cache_key_fn=lambda p: file_digest(p["csv"])``);
* ``upstream``: the digest of each upstream task's **result** (the checkpoint's
  serialized bytes), by upstream name, and which task feeds which parameter;
* ``serializer``: the name of the serializer the result is stored with.

Early cutoff. Because upstream *results* are folded in, not upstream keys, a task that
runs again and returns the same value leaves everything below it cached, as in build
systems (Shake, Bazel). Parameters read are found by running: the checkpoint stores the
names a task read, and the next run compares only those (:func:`finish_key`).

The one way to still be wrong: code outside the user's own modules (an installed
package's new version) and I/O a task does behind asyncflow's back (a file it reads, a
URL) are not in the key. Fold them in with ``cache_key_fn``.

:func:`base_key` computes what is known before the task runs; :func:`finish_key` adds
the parameters read. The runner calls both when a task becomes ready; the planner
(``--dry-run``) calls them in topological order, with the names a checkpoint recorded.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._digest import CodeDigest, code_digest, warn_left_out
from ._files import dumps_json

if TYPE_CHECKING:
    from ._graph import Node

__all__ = [
    "CacheKey",
    "DigestView",
    "KeyBase",
    "TrackedParams",
    "base_key",
    "cache_key",
    "effect_edges",
    "effect_mark",
    "file_digest",
    "finish_key",
    "key_of",
    "read_digests_of",
    "result_digest",
    "volatile_key",
]

_ABSENT = "absent"
"""The digest recorded for a parameter a task looked up that the run does not have."""


class TrackedParams(Mapping[str, Any]):
    """The run parameters as a task sees them: a read-only mapping that records reads.

    Looking a name up (``params["holdout"]``, ``params.get(...)``, ``"x" in params``)
    records that name; anything that sees every parameter (iterating, ``len``,
    ``dict(params)``, ``copy()``, ``str``/``repr``/f-strings, comparing, pickling it for
    another process) records them all. It is a read-only ``Mapping``, not a ``dict``:
    ``json.dumps(dict(params))`` works, ``json.dumps(params)`` raises ``TypeError``.
    The names read become part of the task's cache key (see :func:`finish_key`).
    """

    __slots__ = ("_copy", "_source", "read")

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._source = params
        self._copy: dict[str, Any] | None = None
        self.read: set[str] = set()

    @property
    def _params(self) -> dict[str, Any]:
        # The task's own deep copy, made on first use: a task that mutates a nested value
        # (params["cfg"]["a"] += 1) changes neither the run's parameters, which the cache
        # keys are computed from, nor what any other task sees.
        if self._copy is None:
            self._copy = copy.deepcopy(dict(self._source))
        return self._copy

    def __getitem__(self, name: str) -> Any:
        self.read.add(name)
        return self._params[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read.add(name)
        return name in self._source

    def __iter__(self) -> Iterator[str]:
        self.read.update(self._params)
        return iter(self._params)

    def __len__(self) -> int:
        self.read.update(self._params)
        return len(self._params)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` of every parameter (so all count as read)."""
        self.read.update(self._params)
        return dict(self._params)

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to another process, its reads there cannot be seen: count them all.
        return (dict, (self.copy(),))

    def __repr__(self) -> str:
        self.read.update(self._source)  # printing them all depends on them all
        return repr(self._params)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyBase:
    """What a task's key is built from before it runs (all but the parameters it reads).

    Attributes:
        code: the task function's :class:`~asyncflow._digest.CodeDigest`.
        extra: the digest of its ``cache_key_fn`` value (of ``null`` without one).
        upstream: ``(upstream task, its result's digest)`` for each upstream task, then
            ``(parameter, task name)`` for each parameter fed by one task,
            ``(parameter, "a,b,...")`` for each fan-in and ``(parameter, "item:<digest>")``
            for each item an instance of a mapped task receives.
        serializer: the name of the task's serializer.
    """

    code: CodeDigest
    extra: str
    upstream: tuple[tuple[str, str], ...]
    serializer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheKey:
    """A task's cache key and what it was computed from.

    Attributes:
        key: the cache key (hex SHA-256).
        code: the digest of the task's code (:attr:`CodeDigest.digest`).
        code_parts: the digest of each part of it (body, helpers, constants, bound
            values), so that a change can be named.
        params: ``{parameter read: digest of its value}`` (``"absent"`` for a name looked
            up that the run does not have).
        extra: as :attr:`KeyBase.extra`.
        upstream: as :attr:`KeyBase.upstream`.
        serializer: as :attr:`KeyBase.serializer`.
    """

    key: str
    code: str
    code_parts: Mapping[str, str]
    params: Mapping[str, str]
    extra: str
    upstream: tuple[tuple[str, str], ...]
    serializer: str

    def parts(self) -> dict[str, Any]:
        """The parts as a JSON object, as stored in a checkpoint's ``key_parts``."""
        return {
            "code": self.code,
            "code_parts": dict(self.code_parts),
            "params": dict(self.params),
            "extra": self.extra,
            "upstream": [list(pair) for pair in self.upstream],
            "serializer": self.serializer,
        }


async def base_key(
    node: Node,
    nodes: Sequence[Node],
    digests: Sequence[str | None],
    params: Mapping[str, Any],
    serializer: str,
    items: Sequence[tuple[str, str]] = (),
) -> KeyBase:
    """The :class:`KeyBase` of ``node``'s task in a run with ``params``.

    Args:
        node: the task's node.
        nodes: every node of the graph, indexed like ``digests``.
        digests: the result digest of each upstream task of ``node``, by node index
            (``None`` counts as ``""``).
        params: the run's parameters (``cache_key_fn`` receives a copy).
        serializer: the name of the task's serializer.
        items: ``(parameter, item digest)`` for each item an instance of a mapped task
            receives (see :func:`asyncflow._instances.item_digests`); ``()`` for a task.

    Raises:
        Exception: whatever the task's ``cache_key_fn`` raises (e.g. ``OSError`` for a
            missing input file).
    """
    task = node.task
    extra = None
    if task.cache_key_fn is not None:
        extra = task.cache_key_fn(dict(params))
        if inspect.isawaitable(extra):
            extra = await extra
    # By task name: an instance of a mapped task (``fetch[3]``) counts as its task, so
    # that an instance's key does not depend on its position (``task.name`` is ``fetch``).
    upstream = [(nodes[u].task.name, digests[u] or "") for u in node.upstream]
    upstream += [(param, nodes[u].task.name) for param, u in node.inputs]
    if node.gathers:
        upstream += [(param, ",".join(nodes[u].task.name for u in group)) for param, group in node.gathers]
    if items:
        upstream += [(param, f"item:{digest}") for param, digest in items]
    code = code_digest(task.fn)
    if code.left_out:
        warn_left_out(task.name, code)  # once per task: which value, and cache_key_fn as the remedy
    return KeyBase(
        code=code,
        extra=_NONE_DIGEST if extra is None else _digest(extra),
        upstream=tuple(upstream),
        serializer=serializer,
    )


def finish_key(
    base: KeyBase, read: Iterable[str], params: Mapping[str, Any], prior: CacheKey | None = None
) -> CacheKey:
    """The :class:`CacheKey` of a task that reads the parameters ``read``.

    Before a task runs, ``read`` is the set its checkpoint recorded (so the key matches
    exactly when those parameters kept their values); after it ran, the set it read.
    ``prior``, a key computed from the same ``base`` and ``params`` before the task ran,
    is returned as it is when it was computed with the same names.

    The key is :func:`key_of` the parts.
    """
    names = sorted(read)
    if prior is not None and len(names) == len(prior.params) and all(n in prior.params for n in names):
        return prior
    read_digests = read_digests_of(names, params)
    return cache_key(base, read_digests, key_of(base, read_digests))


def read_digests_of(names: Iterable[str], params: Mapping[str, Any]) -> dict[str, str]:
    """``{name: digest of its value}`` for the parameter ``names``, in their order
    (``"absent"`` for a name the run does not have)."""
    return {name: _digest(params[name]) if name in params else _ABSENT for name in names}


def key_of(base: KeyBase, read_digests: Mapping[str, str]) -> str:
    """The cache key (hex SHA-256) of a task with ``base`` that read ``read_digests``.

    The SHA-256 of the parts, each a hex digest or a name, joined with separators that
    cannot occur in them (``\x1f`` between the parts of a pair, ``\x1e`` between pairs,
    ``\x1d`` between sections).
    """
    text = "\x1d".join(
        (
            base.code.digest,
            "\x1e".join(map("\x1f".join, read_digests.items())) if read_digests else "",
            base.extra,
            "\x1e".join(map("\x1f".join, base.upstream)),
            base.serializer,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(base: KeyBase, read_digests: Mapping[str, str], key: str) -> CacheKey:
    """The :class:`CacheKey` ``key`` (:func:`key_of` ``base`` and ``read_digests``) with its parts."""
    return CacheKey(
        key=key,
        code=base.code.digest,
        code_parts=base.code.parts,
        params=read_digests,
        extra=base.extra,
        upstream=base.upstream,
        serializer=base.serializer,
    )


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


_NONE_DIGEST = _digest(None)


def effect_edges(node: Node, nodes: Sequence[Node]) -> list[int]:
    """The upstream tasks of ``node`` whose *effects*, not results, it may depend on.

    Those on an ordering-only edge (``after=``: no parameter receives their result) and
    those that declare ``outputs`` (files they write). Early cutoff does not apply across
    such an edge: when the upstream task runs with another key, ``node`` runs again too,
    even if it returned the same value (see :func:`effect_mark`). One pass over the
    node's inputs: O(in-degree), also for a wide fan-in.
    """
    data = {u for _, u in node.inputs}
    for _, group in node.gathers:
        data.update(group)
    return [u for u in node.upstream if u not in data or nodes[u].task.outputs]


def effect_mark(cache_key: str, digest: str) -> str:
    """What a downstream task folds in for an upstream task across a side-effect edge.

    The upstream task's cache key with its result's digest: it changes whenever that task
    ran with other code or inputs (so it may have done something else), whatever it
    returned, and stays put while the task is cached or merely re-creates a deleted output
    with the same key. A task without checkpoint gets :func:`volatile_key` instead (it
    always runs, so what depends on what it does runs too).
    """
    return hashlib.sha256(f"{cache_key}:{digest}".encode()).hexdigest()


class DigestView(Sequence[str | None]):
    """Result digests by node index, with some replaced for one downstream task's key."""

    __slots__ = ("_base", "_over")

    def __init__(self, base: Sequence[str | None], over: Mapping[int, str]) -> None:
        self._base, self._over = base, over

    def __getitem__(self, i: int) -> str | None:  # type: ignore[override]
        over = self._over.get(i)
        return over if over is not None else self._base[i]

    def __len__(self) -> int:
        return len(self._base)


def result_digest(value: Any) -> str | None:
    """The digest of a result that was not checkpointed: of its strict JSON, else ``None``.

    Used for a ``checkpoint=False`` task, so that the tasks below it stay cached when it
    returns the same value; ``None`` when the value is not JSON (see :func:`volatile_key`).
    """
    try:
        return hashlib.sha256(dumps_json(value).encode()).hexdigest()
    except (TypeError, ValueError):
        return None


def volatile_key(key: str, run_id: str) -> str:
    """A digest that is new on every run, for a result that cannot be hashed by value.

    A ``checkpoint=False`` task whose result is not JSON hands this to the tasks
    downstream of it, so that they run again too.
    """
    return hashlib.sha256(f"{key}:{run_id}".encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """The hex SHA-256 digest of a file's content (``hashlib.file_digest``).

    Made for ``cache_key_fn``, so that changing an input file re-runs the task that
    reads it and everything downstream whose input changes.

    Raises:
        OSError: the file cannot be read (e.g. ``FileNotFoundError``).
    """
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

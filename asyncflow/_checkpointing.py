"""The runner's side of checkpoints: may a checkpoint stand in for a task, and saving one.

:func:`lookup` runs when a checkpointed task becomes ready: it loads the task's
checkpoint and says whether it matches (same serializer, and the key computed with the
parameters the checkpoint recorded as read equals the stored key). :func:`save` runs
after a successful attempt: it computes the final key from the parameters the task did
read and stores the result, turning every way a save can fail into one
:class:`~asyncflow.CheckpointError` that names the task (never retried: the task's
computation succeeded, it is its storage that failed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from ._cache import CacheKey, KeyBase, cache_key, finish_key, key_of, read_digests_of
from ._errors import CheckpointError, CheckpointReadError
from ._serializers import Serializer
from ._store import Checkpoint, CheckpointStore

__all__ = ["Lookup", "Stager", "lookup", "recorded_reads", "save", "stage", "write_failed"]


class Lookup:
    """What :func:`lookup` found: a matching checkpoint or not, and the key to run under.

    Attributes:
        checkpoint: the matching checkpoint, or ``None`` when the task must run.
        cache_key: the key (hex) the task would have with the parameters its checkpoint
            recorded as read (or none, without a checkpoint).
    """

    __slots__ = ("_base", "_reads", "cache_key", "checkpoint")

    def __init__(self, checkpoint: Checkpoint | None, base: KeyBase, reads: dict[str, str], key: str) -> None:
        self.checkpoint = checkpoint
        self.cache_key = key
        self._base, self._reads = base, reads

    @property
    def key(self) -> CacheKey:
        """:attr:`cache_key` with its parts (made when asked for: a cached task never is)."""
        return cache_key(self._base, self._reads, self.cache_key)


def recorded_reads(checkpoint: Checkpoint | None) -> Iterable[str]:
    """The parameter names ``checkpoint`` recorded as read by its task (``()`` if none)."""
    if checkpoint is None:
        return ()
    if checkpoint.reads is not None:
        return checkpoint.reads
    parts = checkpoint.key_parts
    read = parts.get("params") if parts is not None else None
    return read if isinstance(read, dict) else ()


async def lookup(
    store: CheckpointStore,
    task: str,
    serializer: Serializer,
    base: KeyBase,
    params: Mapping[str, Any],
    *,
    force: bool,
) -> Lookup:
    """Load ``task``'s checkpoint and tell whether it matches ``base`` and ``params``.

    With ``force`` nothing is loaded (the task runs whatever its checkpoint says).

    Raises:
        CheckpointError: the checkpoint exists but cannot be read (chaining the store's
            :class:`~asyncflow.CheckpointReadError`): finished work is never silently
            taken for missing.
    """
    if force:
        return Lookup(None, base, {}, key_of(base, {}))
    try:
        stored = await store.load(task, serializer)
    except CheckpointReadError as exc:
        error = CheckpointError(task, f"{exc}; the task was not run again, to keep finished work")
        raise error from exc
    read = recorded_reads(stored)
    reads = read_digests_of(sorted(read), params) if read else {}
    key = key_of(base, reads)
    matches = stored is not None and stored.serializer == serializer.name and stored.cache_key == key
    return Lookup(stored if matches else None, base, reads, key)


@runtime_checkable
class Stager(Protocol):
    """A store that can queue a checkpoint and make many durable at once (group commit).

    :class:`~asyncflow.FileStore` is one; see its ``stage`` and ``commit``.
    """

    def stage(
        self,
        task: str,
        cache_key: str,
        result: Any,
        *,
        key_parts: Mapping[str, Any] | None = None,
        serializer: Serializer = ...,
    ) -> Checkpoint | None: ...

    async def commit(self) -> None: ...


def stage(
    store: Stager,
    task: str,
    serializer: Serializer,
    base: KeyBase,
    read: Iterable[str],
    params: Mapping[str, Any],
    result: Any,
    prior: CacheKey | None = None,
) -> tuple[Checkpoint, CacheKey] | None:
    """Queue ``result`` of ``task`` in ``store``'s next commit, as :func:`save` would store it.

    Returns ``None`` when the store cannot stage this result (then call :func:`save`).
    ``prior`` is the key :func:`lookup` computed, reused when the task read the same
    parameters as its checkpoint recorded.

    Raises:
        CheckpointError: the serializer cannot encode the result.
    """
    key = finish_key(base, read, params, prior)
    try:
        checkpoint = store.stage(task, key.key, result, key_parts=key.parts(), serializer=serializer)
    except Exception as exc:
        raise _unstorable(task, serializer, result, exc) from exc
    return None if checkpoint is None else (checkpoint, key)


def write_failed(task: str, exc: OSError) -> CheckpointError:
    """The error of a task whose checkpoint could not be written."""
    error = CheckpointError(task, f"the checkpoint of task {task!r} could not be written: {exc}")
    error.__cause__ = exc
    return error


def _unstorable(task: str, serializer: Serializer, result: Any, exc: Exception) -> CheckpointError:
    kind = type(result).__qualname__
    if serializer.name == "json":
        message = (
            f"task {task!r} returned a result that is not strict JSON ({kind}): {exc}; return "
            "plain data (dict, list, str, int, float, bool, None), choose another serializer "
            "(serializer='pickle') or declare the task with checkpoint=False"
        )
    else:
        message = (
            f"task {task!r} returned a result ({kind}) that serializer {serializer.name!r} "
            f"cannot store or load back: {type(exc).__name__}: {exc}"
        )
    return CheckpointError(task, message)


async def save(
    store: CheckpointStore,
    task: str,
    serializer: Serializer,
    base: KeyBase,
    read: Iterable[str],
    params: Mapping[str, Any],
    result: Any,
    prior: CacheKey | None = None,
) -> tuple[Checkpoint, CacheKey]:
    """Store ``result`` of ``task``, keyed on the parameters it ``read``.

    Returns the checkpoint as it loads back (its ``result`` is what downstream tasks
    receive) and the final key.

    Raises:
        CheckpointError: the serializer cannot encode the result (the message names the
            task, the serializer and the value's type), or the store cannot be written.
    """
    key = finish_key(base, read, params, prior)
    try:
        checkpoint = await store.save(task, key.key, result, key_parts=key.parts(), serializer=serializer)
    except OSError as exc:
        raise write_failed(task, exc) from exc
    except Exception as exc:
        raise _unstorable(task, serializer, result, exc) from exc
    return checkpoint, key

"""The options of ``Pipeline.task``: their types, and the values shared between tasks.

:class:`TaskOptions` types the decorator's keyword options for type checkers;
:func:`retry_policy` makes one shared, immutable :class:`~asyncflow.RetryPolicy` per set
of retry options (a 10,000-task fan-out holds one, not 10,000); :func:`one_or_many`
reads an option that takes one value or several; :func:`after_names_of` reads ``after``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from ._errors import PipelineDefinitionError
from ._retry import RetryPolicy
from ._serializers import Serializer
from ._task import Each, Task

__all__ = ["TaskOptions", "after_names_of", "one_or_many", "retry_policy"]


class TaskOptions(TypedDict, total=False):
    """The keyword options of :meth:`Pipeline.task`, for type checkers (see its docstring)."""

    name: str | None
    inputs: Mapping[str, str | Sequence[str] | Each] | None
    after: Iterable[str | Callable[..., Any]]
    retries: int
    retry_delay: float
    backoff: float
    max_delay: float
    jitter: float
    retry_on: type[Exception] | tuple[type[Exception], ...]
    timeout: float | None
    checkpoint: bool
    cache_key_fn: Callable[[Mapping[str, Any]], Any] | None
    tags: Iterable[str]
    executor: Literal["local"] | None
    outputs: Iterable[str]
    serializer: str | Serializer | None


@functools.lru_cache(maxsize=256, typed=True)
def retry_policy(
    retries: int,
    delay: float,
    backoff: float,
    max_delay: float,
    jitter: float,
    retry_on: tuple[type[Exception], ...],
) -> RetryPolicy:
    """One shared (immutable) :class:`RetryPolicy` per set of options, so a 10,000-task
    fan-out holds one instead of 10,000. Raises ``ValueError`` like the class does."""
    return RetryPolicy(
        retries=retries, delay=delay, backoff=backoff, max_delay=max_delay, jitter=jitter, retry_on=retry_on
    )


def one_or_many(value: Any) -> tuple[Any, ...]:
    """A lone string means one item, not its characters: ``tags="db"`` is ``("db",)``."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def after_names_of(
    after: Iterable[str | Callable[..., Any]],
    by_fn: Mapping[int, str],
    tasks: Mapping[str, Task],
    pipeline: str,
) -> tuple[str, ...]:
    """The task names in an ``after=`` option: a name as is, a function as the name of the
    first task registered with it.

    Args:
        after: one name or function, or several.
        by_fn: ``{id(function): name of its first task}``; a function missing from it (a
            ``functools.partial``: a fan-out does not index its thousands) is looked for
            in ``tasks``, in definition order.
        tasks: the pipeline's tasks so far, ``{name: Task}``.
        pipeline: the pipeline's name, for the error.

    Raises:
        PipelineDefinitionError: a function is not a task of the pipeline.
    """
    names = []
    for ref in one_or_many(after):
        if isinstance(ref, str):
            names.append(ref)
            continue
        found = by_fn.get(id(ref))
        if found is None:
            found = next((task.name for task in tasks.values() if task.fn is ref), None)
        if found is None:
            raise PipelineDefinitionError(
                f"after=[{getattr(ref, '__name__', ref)!r}] refers to a function that is not "
                f"a task of pipeline {pipeline!r}; register it first or pass its name"
            )
        names.append(found)
    return tuple(names)

"""The options of ``Pipeline.task``: their types, and the values shared between tasks.

:class:`TaskOptions` types the decorator's keyword options for type checkers;
:func:`retry_policy` makes one shared, immutable :class:`~asyncflow.RetryPolicy` per set
of retry options (a 10,000-task fan-out holds one, not 10,000); :func:`one_or_many`
reads an option that takes one value or several.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from ._retry import RetryPolicy
from ._serializers import Serializer
from ._task import Each

__all__ = ["TaskOptions", "one_or_many", "retry_policy"]


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

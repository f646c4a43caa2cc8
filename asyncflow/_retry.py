"""Retry policy: pure arithmetic, no clock and no sleeping.

The runner asks :meth:`RetryPolicy.delay` how long to wait before the next attempt and does
the waiting itself with ``anyio.sleep``, so a wait is always cancellable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and after how long a failed task is tried again.

    Attributes:
        retries: retries after the first attempt, so at most ``retries + 1`` attempts (int >= 0).
        delay: wait before the first retry, in seconds (float >= 0).
        backoff: factor by which the wait grows with each further retry (float >= 1).
        max_delay: upper bound on any single wait, in seconds (float >= 0), jitter included.
        jitter: fraction in [0, 1]. The wait is drawn uniformly from
            ``[(1 - jitter) * d, d]`` where ``d`` is the capped exponential delay. ``0`` is
            deterministic; ``1`` is the "full jitter" of the AWS Architecture Blog post
            *Exponential Backoff And Jitter* (2015). Jitter only ever shortens a wait, so it
            never exceeds ``max_delay``.
        retry_on: the exception types that are retried; any other exception fails the task
            at once. Cancellation is never retried (it is not an ``Exception``).

    Raises:
        ValueError: from the constructor, when a field is out of its range.
    """

    retries: int = 0
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, not {self.retries!r}")
        if not self.delay >= 0:  # also rejects NaN
            raise ValueError(f"retry_delay must be >= 0 seconds, not {self.delay!r}")
        if not self.backoff >= 1:
            raise ValueError(f"backoff must be >= 1, not {self.backoff!r}")
        if not self.max_delay >= 0:
            raise ValueError(f"max_delay must be >= 0 seconds, not {self.max_delay!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}")
        for exc_type in self.retry_on:
            if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
                raise ValueError(
                    f"retry_on must hold Exception subclasses, not {exc_type!r} "
                    "(cancellation and BaseException are never retried)"
                )

    @property
    def max_attempts(self) -> int:
        """The largest number of attempts a task makes: ``retries + 1``."""
        return self.retries + 1

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """Whether attempt number ``attempt`` (1-based), which raised ``error``, is retried."""
        return attempt <= self.retries and isinstance(error, self.retry_on)

    def base_delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based), before jitter, in seconds.

        ``min(max_delay, delay * backoff ** (attempt - 1))``: the usual exponential backoff
        (as in Prefect's ``exponential_backoff`` and Airflow's ``retry_exponential_backoff``).
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, not {attempt}")
        try:
            raw = self.delay * self.backoff ** (attempt - 1)
        except OverflowError:
            return self.max_delay if self.delay else 0.0
        return min(self.max_delay, raw)

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt ``attempt``, jitter applied, in seconds.

        Args:
            attempt: the 1-based number of the attempt that just failed.
            rng: the random source for jitter; the module's global one when ``None``.
        """
        base = self.base_delay(attempt)
        if not self.jitter:
            return base
        u = (rng or random).random()
        return base * (1.0 - self.jitter * u)

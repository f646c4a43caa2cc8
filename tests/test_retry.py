"""RetryPolicy: pure arithmetic of attempts, backoff and jitter (no clock, no sleeping)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncflow import RetryPolicy

# -- exponential backoff ------------------------------------------------------------------


def test_base_delay_grows_exponentially_from_first_retry() -> None:
    policy = RetryPolicy(retries=5, delay=0.5, backoff=3.0, max_delay=1000.0)
    assert [policy.base_delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 13.5, 40.5]


def test_base_delay_is_capped_by_max_delay() -> None:
    policy = RetryPolicy(retries=10, delay=1.0, backoff=2.0, max_delay=5.0)
    assert [policy.base_delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_one_gives_constant_delay() -> None:
    policy = RetryPolicy(retries=3, delay=0.25, backoff=1.0)
    assert {policy.base_delay(n) for n in range(1, 50)} == {0.25}


def test_zero_delay_means_immediate_retries_at_any_attempt() -> None:
    policy = RetryPolicy(retries=3, delay=0.0, backoff=10.0, max_delay=60.0)
    assert policy.base_delay(1) == 0.0
    assert policy.base_delay(5) == 0.0
    # 10.0 ** 999 overflows a float; 0 * anything is still 0, not max_delay.
    assert policy.base_delay(1000) == 0.0


def test_huge_attempt_numbers_are_capped_not_overflowing() -> None:
    policy = RetryPolicy(retries=3, delay=1.0, backoff=2.0, max_delay=30.0)
    assert policy.base_delay(10_000) == 30.0
    int_backoff = RetryPolicy(retries=3, delay=1.0, backoff=2, max_delay=30.0)
    assert int_backoff.base_delay(10_000) == 30.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_numbers_start_at_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="start at 1"):
        RetryPolicy(retries=1).base_delay(attempt)


@settings(database=None, max_examples=300, deadline=None)
@given(
    delay=st.floats(min_value=0, max_value=100, allow_nan=False),
    backoff=st.floats(min_value=1, max_value=10, allow_nan=False),
    max_delay=st.floats(min_value=0, max_value=1000, allow_nan=False),
    attempt=st.integers(min_value=1, max_value=400),
)
def test_base_delay_matches_formula(delay: float, backoff: float, max_delay: float, attempt: int) -> None:
    policy = RetryPolicy(retries=1, delay=delay, backoff=backoff, max_delay=max_delay)
    try:
        raw = delay * backoff ** (attempt - 1)
    except OverflowError:
        raw = math.inf if delay > 0 else 0.0
    assert policy.base_delay(attempt) == min(max_delay, raw)
    assert 0 <= policy.base_delay(attempt) <= max_delay
    if attempt > 1:
        assert policy.base_delay(attempt - 1) <= policy.base_delay(attempt)


def test_delay_for_without_jitter_equals_base_delay() -> None:
    policy = RetryPolicy(retries=4, delay=0.1, backoff=2.0)
    rng = random.Random(1)
    assert [policy.delay_for(n, rng) for n in range(1, 5)] == [policy.base_delay(n) for n in range(1, 5)]


# -- jitter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.1, 0.5, 1.0])
def test_jitter_draws_stay_within_bounds_and_below_max_delay(jitter: float) -> None:
    policy = RetryPolicy(retries=10, delay=1.0, backoff=2.0, max_delay=6.0, jitter=jitter)
    rng = random.Random(1234)
    for attempt in range(1, 8):
        d = policy.base_delay(attempt)
        draws = [policy.delay_for(attempt, rng) for _ in range(2000)]
        assert min(draws) >= (1 - jitter) * d
        assert max(draws) <= d <= policy.max_delay
        # The draws spread over the interval rather than sitting on one value.
        width = jitter * d
        assert min(draws) < (1 - jitter) * d + 0.05 * width
        assert max(draws) > d - 0.05 * width


def test_full_jitter_is_uniform_on_zero_to_delay() -> None:
    policy = RetryPolicy(retries=1, delay=2.0, jitter=1.0)
    rng = random.Random(7)
    draws = [policy.delay_for(1, rng) for _ in range(20_000)]
    assert 0.0 <= min(draws) < 0.01
    assert 1.99 < max(draws) <= 2.0
    assert abs(sum(draws) / len(draws) - 1.0) < 0.03
    below_half = sum(1 for x in draws if x < 1.0) / len(draws)
    assert 0.48 < below_half < 0.52


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy(retries=5, delay=1.0, jitter=0.5)
    first = [policy.delay_for(n, random.Random(42)) for n in range(1, 6)]
    second = [policy.delay_for(n, random.Random(42)) for n in range(1, 6)]
    third = [policy.delay_for(n, random.Random(43)) for n in range(1, 6)]
    assert first == second
    assert first != third


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retries": "3"}, "retries"),
        ({"delay": -0.1}, "retry_delay"),
        ({"delay": math.nan}, "retry_delay"),
        ({"backoff": 0.5}, "backoff"),
        ({"backoff": math.nan}, "backoff"),
        ({"max_delay": -1.0}, "max_delay"),
        ({"max_delay": math.nan}, "max_delay"),
        ({"jitter": -0.01}, "jitter"),
        ({"jitter": 1.01}, "jitter"),
        ({"jitter": math.nan}, "jitter"),
        ({"retry_on": (BaseException,)}, "retry_on"),
        ({"retry_on": (KeyboardInterrupt,)}, "retry_on"),
        ({"retry_on": ("ValueError",)}, "retry_on"),
    ],
)
def test_out_of_range_fields_raise_value_error_naming_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)


def test_boundary_values_are_accepted() -> None:
    policy = RetryPolicy(retries=0, delay=0.0, backoff=1.0, max_delay=0.0, jitter=1.0, retry_on=())
    assert policy.max_attempts == 1
    assert RetryPolicy(jitter=0.0).jitter == 0.0


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.retries, policy.delay, policy.backoff, policy.max_delay, policy.jitter) == (
        0,
        1.0,
        2.0,
        60.0,
        0.0,
    )
    assert policy.retry_on == (Exception,)
    assert policy.max_attempts == 1


def test_policy_is_immutable() -> None:
    policy = RetryPolicy(retries=2)
    with pytest.raises(AttributeError):
        policy.retries = 5  # type: ignore[misc]


# -- should_retry ---------------------------------------------------------------------------


def test_should_retry_respects_attempt_count() -> None:
    policy = RetryPolicy(retries=2)
    error = RuntimeError("boom")
    assert [policy.should_retry(n, error) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert policy.max_attempts == 3


def test_no_retries_never_retries() -> None:
    assert not RetryPolicy(retries=0).should_retry(1, RuntimeError())


def test_should_retry_respects_retry_on_including_subclasses() -> None:
    policy = RetryPolicy(retries=3, retry_on=(OSError, KeyError))
    assert policy.should_retry(1, OSError())
    assert policy.should_retry(1, ConnectionResetError())  # an OSError subclass
    assert policy.should_retry(1, KeyError("k"))
    assert not policy.should_retry(1, ValueError())
    assert not policy.should_retry(1, TypeError())


def test_cancellation_is_never_retried() -> None:
    import asyncio

    policy = RetryPolicy(retries=3)
    assert not policy.should_retry(1, asyncio.CancelledError())
    assert not policy.should_retry(1, KeyboardInterrupt())

"""A pipeline whose second run has one task of every kind, for the run-record tests.

Run it twice against one working directory (or one store): the first run checkpoints
``source``; on the second, ``source`` is cached, ``flaky`` fails twice and succeeds on
its third attempt (two backoff waits), ``broken`` fails, ``after_broken`` is skipped and
``total`` succeeds. That is 5 attempts in all: flaky 3, broken 1, total 1.
"""

from __future__ import annotations

import anyio

import asyncflow

pipeline = asyncflow.Pipeline("mixed", params={"base": 1})

ATTEMPTS = {"source": 0, "flaky": 3, "broken": 1, "after_broken": 0, "total": 1}
"""Attempts per task on the second run."""


@pipeline.task
async def source(params: dict[str, int]) -> int:
    await anyio.sleep(0.01)
    return params["base"]


@pipeline.task(retries=2, retry_delay=0.05, backoff=2, checkpoint=False)
async def flaky(source: int, context: asyncflow.RunContext) -> int:
    await anyio.sleep(0.01)
    if context.attempt < 3:
        raise ValueError(f"flaky on attempt {context.attempt}")
    return source + 1


@pipeline.task(checkpoint=False)
async def broken(source: int) -> int:
    await anyio.sleep(0.005)
    raise RuntimeError("broken on purpose")


@pipeline.task(checkpoint=False)
async def after_broken(broken: int) -> int:
    return broken


@pipeline.task(checkpoint=False)
async def total(flaky: int, source: int) -> int:
    await anyio.sleep(0.005)
    return flaky + source

"""A pipeline with mapped tasks (asyncflow.each), for the observability tests.

``urls -> fetch (mapped over urls) -> parse (mapped over fetch) -> summary (the list)``.
``fetch`` has one retry: an item starting with ``"bad"`` fails both attempts, one starting
with ``"flaky"`` fails its first attempt only, one starting with ``"slow"`` takes
:data:`SLOW` seconds; every other item succeeds at once. :func:`make` builds it over a
given result of ``urls``; the module's :data:`pipeline` (for the command line) builds
that list from its parameters: ``n`` items, those at the indices in ``bad``, ``flaky``
and ``slow`` (comma-separated) marked so.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

import asyncflow

SLOW = 0.05
"""Seconds a ``"slow..."`` item's fetch takes."""


def make(items: Any = None, name: str = "mapped") -> asyncflow.Pipeline:
    """The pipeline over ``items`` (any value: a non-list fails ``fetch``), or over the
    list built from its parameters when ``items`` is ``None``."""
    p = asyncflow.Pipeline(name, params={"n": 4, "bad": "1", "flaky": "", "slow": ""})

    @p.task(checkpoint=False)
    async def urls(params: dict[str, Any]) -> Any:
        if items is not None:
            return items
        marked = {
            int(k): kind for kind in ("bad", "flaky", "slow") for k in str(params[kind]).split(",") if k
        }
        return [f"{marked.get(k, 'u')}{k}" for k in range(int(params["n"]))]

    @p.task(inputs={"url": asyncflow.each("urls")}, retries=1, retry_delay=0.01)
    async def fetch(url: str, context: asyncflow.RunContext) -> str:
        await anyio.lowlevel.checkpoint()
        if url.startswith("bad") or (url.startswith("flaky") and context.attempt == 1):
            raise ConnectionError(f"cannot fetch {url}")
        if url.startswith("slow"):
            await anyio.sleep(SLOW)
        return url

    @p.task(inputs={"page": asyncflow.each("fetch")})
    def parse(page: str) -> str:
        return page.upper()

    @p.task
    async def summary(parse: list[str]) -> int:
        return len(parse)

    return p


pipeline = make()

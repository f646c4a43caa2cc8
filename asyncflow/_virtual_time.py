"""Virtual time for tests: event loops whose clock jumps ahead while every task waits.

A retry policy with minutes of backoff, or a task ``timeout``, is tested in milliseconds
when the event loop's clock is virtual: whenever nothing is ready to run and the loop
would sleep until its next timer, the clock jumps to that timer instead. Sleeps
(``anyio.sleep``), timeouts (``anyio.fail_after``) and the runner's own clock (the loop's
``time()``, see ``_event_loop_clock`` in :mod:`asyncflow._runner`) all read that clock, so
every duration a run reports is virtual too.

* On **trio** this is trio's own :class:`trio.testing.MockClock` with
  ``autojump_threshold`` (see :func:`trio_clock`).
* On **asyncio** it is :class:`VirtualTimeEventLoop`, a selector event loop whose
  ``time()`` is a counter. Its selector first polls for I/O for at most
  ``autojump_threshold`` real seconds; when nothing arrived and a timer is due later, it
  advances the counter to that timer. With no timer pending it blocks as usual.

Both take anyio's ``backend_options``: ``anyio.run(fn, backend="asyncio",
backend_options={"loop_factory": VirtualTimeEventLoop})`` or ``backend="trio",
backend_options={"clock": trio_clock()}``; :func:`virtual_time_options` returns them.

A caveat shared with trio's ``MockClock``: with ``autojump_threshold=0`` the clock also
jumps while the loop waits for a worker thread (a plain ``def`` task), so that task's
``timeout`` can expire at once. Give such tests a real threshold (``0.05`` seconds,
say): the clock then jumps only after the loop was idle that long.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

__all__ = ["VirtualTimeEventLoop", "trio_clock", "virtual_time_options"]


class _JumpingSelector(selectors.BaseSelector):
    """A selector that turns an idle wait for a timer into a jump of the loop's clock."""

    def __init__(self, loop: VirtualTimeEventLoop, inner: selectors.BaseSelector) -> None:
        self._loop = loop
        self._inner = inner

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return self._inner.select(timeout)
        ready = self._inner.select(min(timeout, self._loop.autojump_threshold))
        if not ready:
            self._loop.advance(timeout)
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop with a virtual clock that jumps to the next timer when idle.

    Use it as a loop factory: ``asyncio.Runner(loop_factory=VirtualTimeEventLoop)``, or
    anyio's ``backend_options={"loop_factory": VirtualTimeEventLoop}``.

    Args:
        autojump_threshold: how long, in real seconds, the loop polls for I/O before it
            jumps to its next timer (default 0: at once). See the module docstring for
            when a positive value is needed.
        start: the clock's first reading, in seconds (default 0.0).

    Raises:
        ValueError: ``autojump_threshold`` is negative or not finite.
    """

    def __init__(self, autojump_threshold: float = 0.0, start: float = 0.0) -> None:
        if not 0 <= autojump_threshold < float("inf"):
            raise ValueError(
                f"autojump_threshold must be a finite number of seconds >= 0, not {autojump_threshold!r}"
            )
        self.autojump_threshold = float(autojump_threshold)
        self._now = float(start)
        super().__init__(_JumpingSelector(self, selectors.DefaultSelector()))

    def time(self) -> float:
        """The virtual clock, in seconds; it moves only by :meth:`advance`."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward by ``seconds`` (negative values are ignored)."""
        if seconds > 0:
            self._now += seconds


def trio_clock(autojump_threshold: float = 0.0) -> Any:
    """A fresh ``trio.testing.MockClock(autojump_threshold=...)`` (threshold in real seconds).

    Raises:
        ImportError: trio is not installed (``pip install 'asyncflow-dag[trio]'``).
    """
    from trio.testing import MockClock

    return MockClock(autojump_threshold=autojump_threshold)


def virtual_time_options(backend: str, autojump_threshold: float = 0.0) -> dict[str, Any]:
    """anyio ``backend_options`` that give ``backend``'s event loop a virtual clock.

    Args:
        backend: ``"asyncio"`` or ``"trio"``.
        autojump_threshold: real seconds of idleness before the clock jumps (default 0).

    Raises:
        ValueError: an unknown backend.
        ImportError: ``backend`` is ``"trio"`` and trio is not installed.
    """
    if backend == "asyncio":

        def factory() -> asyncio.AbstractEventLoop:
            return VirtualTimeEventLoop(autojump_threshold)

        return {"loop_factory": factory}
    if backend == "trio":
        return {"clock": trio_clock(autojump_threshold)}
    raise ValueError(f"backend must be 'asyncio' or 'trio', not {backend!r}")

"""``EventStream``: a run's events as an async iterator, for embedding applications.

A listener is called synchronously inside the runner, so it must not await. An
application that wants to ``await`` per event (update a web socket, write to a database)
subscribes with an :class:`EventStream` instead: pass it as a listener and iterate it
from a concurrent task::

    async with EventStream() as stream, anyio.create_task_group() as tg:

        async def show() -> None:
            async for event in stream:          # ends after the run's RunFinished
                print(type(event).__name__, getattr(event, "task", ""))

        tg.start_soon(show)
        result = await pipeline.run(listeners=[stream])

The stream is an anyio memory object stream with an unbounded buffer: the runner puts each
event in with ``send_nowait`` and never waits for the consumer, so a slow consumer can't
slow down a run (it lags behind and keeps the events in memory until it catches up). The
sending side is closed on :class:`~asyncflow.RunFinished`, which is always a run's last
event (also when the caller cancels the run), so ``async for`` ends by itself once the
consumer has every event. If the run fails before it starts (a
:class:`~asyncflow.MissingCheckpointError`, say), no event comes at all: that is why the
example runs it in the task group, whose exception cancels the consumer.

One stream serves one run. Nothing is built unless the application creates a stream: the
runner builds no event object when a run has no listener.
"""

from __future__ import annotations

import math
from types import TracebackType

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._events import Event, RunFinished

__all__ = ["EventStream"]


class EventStream:
    """A listener whose events are read back with ``async for event in stream``.

    Create it anywhere (no event loop is needed), pass it in ``listeners=[...]`` of one
    run, and iterate it in another task of the same event loop. Iteration yields every
    event of the run in order and stops after :class:`~asyncflow.RunFinished`, or after
    :meth:`close`. Used as ``async with EventStream() as stream:``, leaving the block
    closes both ends (events not yet read are dropped).
    """

    __slots__ = ("_ended", "_receive", "_send", "_stopped")

    def __init__(self) -> None:
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](math.inf)
        self._ended = False  # the reader saw the end
        self._stopped = False  # the reader stopped listening (aclose)

    def __repr__(self) -> str:
        stats = self._send.statistics()
        state = "closed" if stats.open_send_streams == 0 else "open"
        return f"<EventStream {state}, {stats.current_buffer_used} events buffered>"

    # -- the listener side --------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Queue ``event`` for the reader without waiting; close after ``RunFinished``.

        Events that arrive after the reader stopped listening (:meth:`aclose`) are dropped.

        Raises:
            RuntimeError: the stream was closed (it already received a run's
                ``RunFinished``, or :meth:`close` was called): use one stream per run.
                The runner then disables this listener and logs the error.
        """
        if self._stopped:
            return
        try:
            self._send.send_nowait(event)
        except anyio.ClosedResourceError:
            raise RuntimeError(
                f"this EventStream is closed and cannot take {type(event).__name__} of run "
                f"{event.run_id}; create one EventStream per run"
            ) from None
        if isinstance(event, RunFinished):
            self._send.close()

    def close(self) -> None:
        """End the stream: the reader gets the events already queued, then iteration stops."""
        self._send.close()

    # -- the reader side ----------------------------------------------------------------

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        """The next event, waiting for it if needed.

        Raises:
            StopAsyncIteration: the stream was closed and every queued event was read.
        """
        if self._ended:
            raise StopAsyncIteration
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._ended = True
            self._receive.close()
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop listening: iteration stops, queued and further events are dropped."""
        self._stopped = self._ended = True
        self._send.close()
        self._receive.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # A stream that was never read to its end would make anyio warn about unclosed
        # memory streams; those belong to this object, so close them quietly.
        try:
            self._send.close()
            self._receive.close()
        except AttributeError:  # __init__ did not finish
            pass

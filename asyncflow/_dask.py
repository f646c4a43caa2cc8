"""The Dask executor: plain ``def`` tasks computed on a Dask cluster.

The optional dependencies (``pip install 'asyncflow-dag[dask]'``, or ``pip install -e
'.[dask]'`` in a checkout: ``dask`` and ``distributed``) are imported when a run opens the
executor, never when asyncflow is imported.

Per run, :meth:`DaskExecutor.open` connects one ``distributed.Client(asynchronous=True)``
on the run's own asyncio event loop, to the scheduler at ``address`` or to a
``LocalCluster`` of worker processes that it starts for the run (and closes after it).
Each attempt of a task is one Dask future: the call is pickled here with cloudpickle
(see :func:`asyncflow._pickling.dump_call`), submitted under a unique key named after
the task (``fit_AAPL-<hex>``, so Dask's dashboard groups attempts by task) with
``pure=False`` and no Dask-side retries, and awaited on the event loop. The runner keeps
the DAG: every input is sent from here and every result comes back here, is checkpointed
here and released on the cluster.

Cancellation. When the await is cancelled (the task's ``timeout``, ``fail_fast``, the
caller), the future is cancelled on the scheduler, under a shield and a time limit,
before the cancellation propagates. Dask cannot interrupt Python code that a worker
thread is already running: the worker finishes that call and drops its result.

Backends. Dask's client runs on asyncio only; on trio, :meth:`DaskExecutor.open` raises
:class:`~asyncflow.ExecutorError` before any task runs. :class:`~asyncflow.ProcessExecutor`
works on both.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio

from ._dist import install_hint
from ._errors import ExecutorError
from ._executors import Submit
from ._pickling import dump_call, load_result, remote_error, run_pickled
from ._task import Task

__all__ = ["DaskExecutor"]

_CLOSE_TIMEOUT = 10.0
"""Seconds allowed to close the client and a local cluster at the end of a run."""
_CANCEL_TIMEOUT = 5.0
"""Seconds allowed to tell the scheduler that a future is cancelled."""
_WHERE = "the Dask workers"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DaskExecutor:
    """Run plain ``def`` tasks on a Dask cluster (CLI ``--executor dask [--dask-address]``).

    Needs ``pip install 'asyncflow-dag[dask]'`` and the asyncio backend. The workers must be
    able to import the task functions' modules (a ``LocalCluster`` started here inherits
    this process's ``sys.path``) and asyncflow itself. Functions and arguments travel with
    cloudpickle, results with :mod:`pickle`.

    Args:
        address: the scheduler, e.g. ``"tcp://10.0.0.5:8786"``; ``None`` (default) starts a
            ``distributed.LocalCluster`` of worker processes on 127.0.0.1 for the run
            and closes it afterwards (its HTTP server on a free loopback port).
        n_workers: worker processes of that local cluster; ``None`` lets Dask choose from
            the number of CPUs. Ignored with ``address``.
        threads_per_worker: threads per worker process of that local cluster (default 1:
            pure-Python tasks hold the GIL). Ignored with ``address``.
        connect_timeout: seconds to wait for the scheduler to answer; ``None`` (default)
            uses Dask's configuration (``distributed.comm.timeouts.connect``, 30 s unless
            set, e.g. with ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s``).

    Raises:
        ValueError: ``n_workers``, ``threads_per_worker`` or ``connect_timeout`` is out of
            range.
    """

    address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1
    connect_timeout: float | None = None
    name: ClassVar[str] = "dask"

    def __post_init__(self) -> None:
        if self.n_workers is not None and (not isinstance(self.n_workers, int) or self.n_workers < 1):
            raise ValueError(f"n_workers must be a positive int or None, not {self.n_workers!r}")
        if not isinstance(self.threads_per_worker, int) or self.threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be a positive int, not {self.threads_per_worker!r}")
        if self.connect_timeout is not None and not self.connect_timeout > 0:
            raise ValueError(
                f"connect_timeout must be a positive number of seconds or None, not {self.connect_timeout!r}"
            )

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Submit]:
        """Connect a client (starting a local cluster first when ``address`` is ``None``),
        yield the submit function, and close both at the end of the run.

        Raises:
            ExecutorError: not running on asyncio; ``dask``/``distributed`` not installed;
                the local cluster cannot start; the scheduler cannot be reached within the
                connect timeout. Nothing has run then.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ExecutorError(
                "the Dask executor needs the asyncio backend: Dask's client runs on asyncio "
                "and cannot be driven from trio; run with backend='asyncio' (CLI: --backend "
                "asyncio), or use executor='processes', which works on both"
            ) from None
        try:
            import cloudpickle  # type: ignore[import-untyped, unused-ignore]
            import distributed
        except ImportError as exc:
            raise ExecutorError(
                f"the Dask executor needs the optional dependencies dask and distributed ({exc}); "
                f"install them with: {install_hint('dask')}"
            ) from exc

        cluster: Any = None
        client: Any = None
        try:
            address = self.address
            if address is None:
                cluster = await self._start_cluster(distributed)
                address = cluster.scheduler_address
            client = await self._connect(distributed, address)

            import uuid

            async def submit(task: Task, kwargs: dict[str, Any]) -> Any:
                payload = dump_call(task, kwargs, cloudpickle.dumps, _WHERE)
                future = client.submit(
                    run_pickled, payload, key=f"{task.name}-{uuid.uuid4().hex}", pure=False, retries=0
                )
                try:
                    data = await future
                except Exception as exc:
                    error = remote_error(task, exc, _WHERE)
                    if error is exc:
                        raise
                    raise error from None
                except BaseException:  # cancelled: the timeout, fail_fast or the caller
                    if not future.done():
                        with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_TIMEOUT):
                            await client.cancel([future], reason=f"asyncflow cancelled task {task.name!r}")
                    raise
                return load_result(task, data)

            yield submit
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
                if client is not None:
                    await client.close()
                if cluster is not None:
                    await cluster.close()

    async def _start_cluster(self, distributed: Any) -> Any:
        import logging

        try:
            return await distributed.LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # a free port: never warns that 8787 is taken
                silence_logs=logging.ERROR,
                asynchronous=True,
            )
        except Exception as exc:
            raise ExecutorError(
                f"the Dask executor could not start a local cluster: {type(exc).__name__}: {exc}"
            ) from exc

    async def _connect(self, distributed: Any, address: Any) -> Any:
        timeout = self.connect_timeout
        if timeout is None:
            import dask.config
            from dask.utils import parse_timedelta

            timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
        try:
            return await distributed.Client(address, asynchronous=True, timeout=timeout, set_as_default=False)
        except Exception as exc:
            raise ExecutorError(
                f"cannot connect to the Dask scheduler at {address!r} within {timeout:g} s "
                f"({type(exc).__name__}: {exc}); check the address (CLI: --dask-address), or "
                "leave it out to start a local cluster"
            ) from exc

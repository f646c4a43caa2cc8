"""Testing your pipelines with pytest: fixtures, fakes for tasks, virtual time, assertions.

Installed with asyncflow as a pytest plugin (entry point ``pytest11``, name ``asyncflow``),
so its fixtures are there in every test session; it needs anyio's own pytest plugin,
which anyio registers the same way. ::

    from asyncflow.testing import assert_failed, assert_succeeded
    from mypipelines.prices import pipeline

    def test_report_survives_a_flaky_download(run_pipeline):
        calls = []
        async def fake_fetch(params):               # no network in tests
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("flaky")
            return [1.0, 2.0]
        result = run_pipeline(pipeline, overrides={"fetch": fake_fetch}, virtual_time=True)
        assert_succeeded(result, "fetch", "report")  # minutes of backoff, in milliseconds

Fixtures:

* ``run_pipeline``: a :class:`PipelineRunner` for the test. It runs a pipeline on the
  test's anyio backend (the ``anyio_backend`` fixture: both asyncio and trio when that is
  parametrised, as anyio's plugin does by default when trio is installed), with an
  in-memory :class:`~asyncflow.MemoryStore` and a fresh temporary working directory, and
  prints nothing. Call it from a plain ``def`` test; ``await run_pipeline.run(...)`` in
  an ``async def`` test.
* ``replace_task``: ``replace_task(pipeline, "fetch", fake)`` swaps a task's function
  until the end of the test (like ``monkeypatch``); :func:`replaced` is the same as a
  ``with`` block.

Virtual time: ``run_pipeline(..., virtual_time=True)`` runs on an event loop whose clock
jumps to the next timer whenever every task waits (trio's ``MockClock``; on asyncio
:class:`~asyncflow._virtual_time.VirtualTimeEventLoop`), so retries and timeouts of
minutes take milliseconds and the reported durations are virtual. For ``async def``
tests, parametrise ``anyio_backend`` with :func:`virtual_time_backends`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from ._errors import UnknownDependencyError
from ._events import TaskState
from ._pipeline import Pipeline
from ._result import RunResult, TaskRun
from ._store import CheckpointStore, MemoryStore
from ._task import Task
from ._virtual_time import VirtualTimeEventLoop, virtual_time_options

__all__ = [
    "PipelineRunner",
    "VirtualTimeEventLoop",
    "assert_cached",
    "assert_cancelled",
    "assert_failed",
    "assert_skipped",
    "assert_succeeded",
    "replace_task",
    "replaced",
    "run_pipeline",
    "virtual_time_backends",
    "virtual_time_options",
]


# -- replacing a task's function -----------------------------------------------------------


def _swap(pipeline: Pipeline, task: Task) -> None:
    """Put ``task`` in place of the pipeline's task of the same name (private access, one place)."""
    pipeline._tasks[task.name] = task
    pipeline._graph = None  # the validated graph holds the old Task


@contextlib.contextmanager
def replaced(pipeline: Pipeline, task: str, fn: Callable[..., Any]) -> Iterator[Task]:
    """Run ``fn`` instead of the function of ``pipeline``'s task ``task`` inside the block.

    Everything else about the task stays: its name, upstream tasks, retries, timeout,
    checkpointing. ``fn`` may be ``async def`` or a plain ``def`` (run in a worker thread)
    whatever the original was, and is called with the original's arguments by keyword (the
    upstream results, and ``params``/``context`` if the original declares them), so it
    must accept those names (``**kwargs`` does). The original is restored on exit, also
    when the block raises. Its cache key is computed from ``fn``'s code, so a fake's
    result never passes for the real one in a file store.

    Yields:
        the replacement :class:`~asyncflow.Task`.

    Raises:
        UnknownDependencyError: the pipeline has no task ``task`` (with a suggestion).
        TypeError: ``fn`` is not callable or cannot take the original's arguments.
    """
    tasks = pipeline.tasks
    if task not in tasks:
        import difflib

        close = difflib.get_close_matches(task, list(tasks), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownDependencyError(
            f"pipeline {pipeline.name!r} has no task {task!r}{hint} (tasks: {', '.join(tasks) or 'none'})"
        )
    original = tasks[task]
    if not callable(fn):
        raise TypeError(f"the replacement for task {task!r} must be callable, not {fn!r}")
    names = [name for name, _ in original.parameters]
    names += ["params"] * original.wants_params + ["context"] * original.wants_context
    try:
        inspect.signature(fn).bind(**dict.fromkeys(names))
    except TypeError as exc:
        raise TypeError(
            f"the replacement for task {task!r} must accept the arguments "
            f"({', '.join(names) or 'none'}) by keyword: {exc}"
        ) from None
    except ValueError:  # no signature to check (a builtin): let the call tell
        pass
    fake = dataclasses.replace(original, fn=fn, is_async=_is_async(fn))
    _swap(pipeline, fake)
    try:
        yield fake
    finally:
        _swap(pipeline, original)


def _is_async(fn: Callable[..., Any]) -> bool:
    call = type(fn).__call__ if not inspect.isfunction(fn) else None  # an object with async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


# -- running ---------------------------------------------------------------------------------


class PipelineRunner:
    """Runs pipelines for one test: the ``run_pipeline`` fixture's value.

    Args:
        backend: ``"asyncio"`` or ``"trio"``.
        backend_options: anyio ``backend_options`` for :meth:`__call__` (the options of a
            ``("trio", {...})`` form of the ``anyio_backend`` fixture).
        workdir: the working directory every run of this runner uses.

    Attributes:
        store: the :class:`~asyncflow.MemoryStore` shared by this runner's runs, so a
            second run in one test finds the first run's checkpoints (``cached``).
        workdir: as given (``<tmp_path>/workdir`` in the fixture).
    """

    def __init__(self, backend: str, backend_options: Mapping[str, Any], workdir: Path) -> None:
        self.backend = backend
        self.backend_options = dict(backend_options)
        self.workdir = workdir
        self.store: CheckpointStore = MemoryStore()

    def __repr__(self) -> str:
        return f"<PipelineRunner backend={self.backend!r} workdir={str(self.workdir)!r}>"

    def __call__(
        self,
        pipeline: Pipeline,
        /,
        *,
        overrides: Mapping[str, Callable[..., Any]] | None = None,
        virtual_time: bool | float = False,
        **options: Any,
    ) -> RunResult:
        """Run ``pipeline`` in a new event loop of the test's backend; return its result.

        For plain ``def`` tests (an ``async def`` test awaits :meth:`run` instead).

        Args:
            pipeline: the :class:`~asyncflow.Pipeline`.
            overrides: ``{task name: replacement function}`` for this run only (see
                :func:`replaced`).
            virtual_time: ``True`` to run on a virtual clock that jumps to the next timer
                whenever all tasks wait (backoff and timeouts take no real time); a
                number is the real idle time in seconds before it jumps (see
                :mod:`asyncflow._virtual_time`). Default ``False``: the real clock.
            options: passed to :meth:`Pipeline.run` (``params``, ``force``,
                ``fail_fast``, ``seed``, ``listeners``, ...). The defaults differ:
                ``store`` is this runner's :attr:`store`, ``workdir`` its
                :attr:`workdir`, ``log=False``, ``lock=None``.

        Raises:
            whatever :meth:`Pipeline.run` raises before running (an invalid pipeline, an
            unknown parameter); failed tasks do not raise (see the ``assert_*`` helpers).
        """
        backend_options = dict(self.backend_options)
        if virtual_time is not False:
            threshold = 0.0 if virtual_time is True else float(virtual_time)
            backend_options.update(virtual_time_options(self.backend, threshold))

        async def main() -> RunResult:
            return await self.run(pipeline, overrides=overrides, **options)

        return anyio.run(main, backend=self.backend, backend_options=backend_options)

    async def run(
        self,
        pipeline: Pipeline,
        /,
        *,
        overrides: Mapping[str, Callable[..., Any]] | None = None,
        **options: Any,
    ) -> RunResult:
        """Run ``pipeline`` in the running event loop (an ``async def`` test); as :meth:`__call__`
        without ``virtual_time`` (use :func:`virtual_time_backends` for that)."""
        options.setdefault("store", self.store)
        options.setdefault("workdir", self.workdir)
        options.setdefault("log", False)
        options.setdefault("lock", None)
        with contextlib.ExitStack() as stack:
            for name, fn in (overrides or {}).items():
                stack.enter_context(replaced(pipeline, name, fn))
            return await pipeline.run(**options)


def virtual_time_backends(autojump_threshold: float = 0.0) -> list[Any]:
    """``anyio_backend`` parameters with a virtual clock, for ``async def`` tests::

        @pytest.fixture(params=asyncflow.testing.virtual_time_backends())
        def anyio_backend(request):
            return request.param

    Returns ``[("asyncio", {"loop_factory": ...}), ("trio", {"clock": MockClock(...)})]``
    (trio's only when trio is installed). ``autojump_threshold``: real idle seconds before
    the clock jumps.
    """
    backends: list[Any] = [("asyncio", virtual_time_options("asyncio", autojump_threshold))]
    with contextlib.suppress(ImportError):
        backends.append(("trio", virtual_time_options("trio", autojump_threshold)))
    return backends


@pytest.fixture
def run_pipeline(anyio_backend: Any, tmp_path: Path) -> PipelineRunner:
    """A :class:`PipelineRunner` on the test's anyio backend, with a :class:`~asyncflow.MemoryStore`
    and the working directory ``<tmp_path>/workdir`` (created by the first run)."""
    if isinstance(anyio_backend, str):
        name, options = anyio_backend, {}
    else:
        name, options = anyio_backend
    return PipelineRunner(name, options, tmp_path / "workdir")


@pytest.fixture
def replace_task() -> Iterator[Callable[[Pipeline, str, Callable[..., Any]], Task]]:
    """``replace_task(pipeline, task_name, fn)``: :func:`replaced` until the test ends."""
    with contextlib.ExitStack() as stack:

        def replace(pipeline: Pipeline, task: str, fn: Callable[..., Any]) -> Task:
            return stack.enter_context(replaced(pipeline, task, fn))

        yield replace


# -- assertions ------------------------------------------------------------------------------


def _describe(run: TaskRun) -> str:
    attempts = f"{run.attempts} attempt" + ("" if run.attempts == 1 else "s")
    parts = [f"task {run.name!r} is {run.state.value} after {attempts}"]
    if run.error is not None:
        parts.append(f"error: {type(run.error).__name__}: {run.error}")
    if run.reason:
        parts.append(f"reason: {run.reason}")
    return "; ".join(parts)


def _task_run(result: RunResult, task: str) -> TaskRun:
    if task not in result.tasks:
        raise AssertionError(
            f"run {result.run_id} of pipeline {result.pipeline!r} has no task {task!r} "
            f"(tasks: {', '.join(result.tasks) or 'none'})"
        )
    return result.tasks[task]


def _assert_state(result: RunResult, tasks: tuple[str, ...], state: TaskState) -> None:
    if not tasks:
        tasks = tuple(result.tasks)
    wrong = [_task_run(result, name) for name in tasks]
    wrong = [run for run in wrong if run.state is not state]
    if wrong:
        lines = [f"expected {state.value}, but " + _describe(wrong[0])]
        lines += ["and " + _describe(run) for run in wrong[1:]]
        raise AssertionError("\n".join(lines))


def assert_succeeded(result: RunResult, *tasks: str) -> None:
    """Assert that each of ``tasks`` (default: every task of the run) ran and succeeded.

    Raises:
        AssertionError: one line per task that did not, naming its state, attempts, error
            or reason; or a task name the run does not have.
    """
    _assert_state(result, tasks, TaskState.SUCCEEDED)


def assert_cached(result: RunResult, *tasks: str) -> None:
    """Assert that each of ``tasks`` (default: every task) was loaded from its checkpoint.

    Raises:
        AssertionError: as for :func:`assert_succeeded`.
    """
    _assert_state(result, tasks, TaskState.CACHED)


def assert_skipped(result: RunResult, *tasks: str) -> None:
    """Assert that each of ``tasks`` (default: every task) was skipped (an upstream failed).

    Raises:
        AssertionError: as for :func:`assert_succeeded`.
    """
    _assert_state(result, tasks, TaskState.SKIPPED)


def assert_cancelled(result: RunResult, *tasks: str) -> None:
    """Assert that each of ``tasks`` (default: every task) was cancelled.

    Raises:
        AssertionError: as for :func:`assert_succeeded`.
    """
    _assert_state(result, tasks, TaskState.CANCELLED)


def assert_failed(
    result: RunResult,
    task: str,
    *,
    error: type[BaseException] | None = None,
    match: str | None = None,
    attempts: int | None = None,
) -> BaseException:
    """Assert that ``task`` failed, and return its exception (the last attempt's).

    Args:
        error: the exception must be an instance of this type.
        match: ``str(exception)`` must contain this text.
        attempts: it must have made exactly this many attempts.

    Raises:
        AssertionError: naming the task's state, attempts and error when it did not fail
            that way.
    """
    run = _task_run(result, task)
    if run.state is not TaskState.FAILED or run.error is None:
        raise AssertionError("expected failed, but " + _describe(run))
    if error is not None and not isinstance(run.error, error):
        raise AssertionError(f"expected {task!r} to fail with {error.__name__}, but " + _describe(run))
    if match is not None and match not in str(run.error):
        raise AssertionError(f"expected {task!r}'s error to contain {match!r}, but " + _describe(run))
    if attempts is not None and run.attempts != attempts:
        raise AssertionError(f"expected {task!r} to fail after {attempts} attempts, but " + _describe(run))
    return run.error

"""The command line: ``python -m asyncflow MODULE [options]``.

Exit codes: 0 every task succeeded or was cached; 1 a task failed, was skipped or was
cancelled (or asyncflow itself failed); 2 a usage error (bad option, unknown module, a
module that raises on import, an invalid pipeline or parameter, an unusable working
directory); 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (see
:mod:`asyncflow._interrupt`). Errors are one line on stderr; full tracebacks go to the
run's log file, ``<workdir>/runs/<run id>/run.log``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import anyio
from loguru import logger

from . import _history as history
from ._cli_args import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
    fail,
)
from ._cli_inspect import inspect
from ._cli_options import check_backend, choose_executor, parse_params, parse_pools, selection, tracing
from ._errors import (
    ExecutorError,
    MissingCheckpointError,
    PipelineDefinitionError,
    WorkdirLockedError,
)
from ._interrupt import (
    SignalGuard,
    describe_error,
    exit_without_abandoned_threads,
    route_asyncio_logging,
)
from ._log_sinks import add_cli_sinks, log_file_failure
from ._pipeline import Pipeline
from ._progress import terminal_display
from ._recorder import RunRecorder, save_now
from ._render import render_summary, run_json
from ._render_mapped import Instances, capped_errors, mapped_over_names
from ._result import RunResult
from ._runner import new_run_id
from ._tracker import TaskTracker

__all__ = ["UsageError", "build_parser", "find_pipeline", "load_module", "main"]


def never_fail_on_encoding() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` write what their encoding cannot show as
    backslash escapes (``\\u6570``) instead of raising ``UnicodeEncodeError``: a task name
    that a cp1252 console cannot show must not crash the summary of a run that succeeded.
    Everything the command line prints goes through them: tables, log lines, rich's live
    display (it writes to ``sys.stderr``)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(Exception):  # a stream that cannot change: leave it
                reconfigure(errors="backslashreplace")


def _log_pointer(log_file: Path, template: str) -> str:
    """``template`` filled with the log file, or ``""`` if it could not be written (then
    the reason is given instead of a pointer to an empty file)."""
    failure = log_file_failure()
    if failure is None:
        return template.format(log_file)
    return f" (the log file could not be written: {failure.strerror or failure})"


# -- loading the pipeline ------------------------------------------------------------------


def load_module(spec: str) -> ModuleType:
    """Import the pipeline module named by ``spec`` (dotted name or ``.py`` path).

    Raises:
        UsageError: the module does not exist, or raised while being imported (the
            message holds the module's own traceback, without importlib's frames).
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if spec.endswith(".py") or os.sep in spec:
            path = Path(spec)
            if not path.is_file():
                raise UsageError(f"pipeline file {spec!r} does not exist")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise UsageError(f"cannot import {spec!r} as a Python module")
            # Its folder is importable here and in worker processes (--executor processes
            # or dask), which find its functions by module name.
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
                os.environ["PYTHONPATH"] = os.pathsep.join(
                    filter(None, (folder, os.environ.get("PYTHONPATH")))
                )
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise UsageError(
                f"no module named {spec!r} (run from the directory that contains it, or pass "
                "the path of a .py file)"
            ) from None
        raise UsageError(_import_failure(spec, exc)) from exc
    except UsageError:
        raise
    except BaseException as exc:
        if not isinstance(exc, Exception | SystemExit):
            raise
        raise UsageError(_import_failure(spec, exc)) from exc


def _import_failure(spec: str, exc: BaseException) -> str:
    """One line naming the error, then the module's own frames (no importlib, no asyncflow)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in frame.filename
        and not frame.filename.startswith("<frozen")
        and not os.path.abspath(frame.filename).startswith(package)
    ]
    error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    error = error.replace(f"{type(exc).__module__}.{type(exc).__qualname__}", type(exc).__name__, 1)
    if not frames:  # e.g. a SyntaxError: the error itself shows where
        return f"importing {spec!r} failed: {error}"
    lines = ["Traceback of the module (most recent call last):\n", *traceback.format_list(frames)]
    return f"importing {spec!r} failed: {error}\n" + "".join(lines).rstrip()


def find_pipeline(module: ModuleType, name: str | None) -> Pipeline:
    """The module-level :class:`Pipeline` of ``module``.

    Raises:
        UsageError: there is none; or several and ``name`` does not select one.
    """
    found: dict[int, tuple[str, Pipeline]] = {}
    for var, value in vars(module).items():
        if isinstance(value, Pipeline):
            found.setdefault(id(value), (var, value))
    candidates = list(found.values())
    if name is not None:
        for var, pipeline in candidates:
            if name in (var, pipeline.name):
                return pipeline
        names = ", ".join(p.name for _, p in candidates) or "none"
        raise UsageError(f"module {module.__name__!r} has no pipeline named {name!r} (found: {names})")
    if not candidates:
        raise UsageError(
            f"module {module.__name__!r} defines no asyncflow.Pipeline at module level "
            "(create one with pipeline = asyncflow.Pipeline('name'))"
        )
    if len(candidates) > 1:
        names = ", ".join(p.name for _, p in candidates)
        raise UsageError(
            f"module {module.__name__!r} defines {len(candidates)} pipelines ({names}); "
            "choose one with --pipeline NAME"
        )
    return candidates[0][1]


# -- main -------------------------------------------------------------------------------------


def _listed(names: list[str], most: int = 10) -> str:
    """``a, b, c`` for at most ``most`` names, then ``and N more`` (a mapped task's
    thousands of instances must not make one line of tens of thousands of characters)."""
    if not names:
        return "none"
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Usage errors exit with code 2 through ``SystemExit`` (argparse's convention).
    """
    if hasattr(signal, "SIGPIPE"):
        # `python -m asyncflow ... | head`: end quietly when the reader goes away, as Unix
        # tools do, instead of a BrokenPipeError traceback (checkpoints already written stay).
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    never_fail_on_encoding()
    args = build_parser().parse_args(argv)
    if history.wanted(args):
        return history.main(args)
    if args.module is None:
        fail(
            "the MODULE argument is required to run a pipeline (e.g. python -m asyncflow "
            "pipelines.prices); --runs, --show-run and --timeline need none",
            EXIT_USAGE,
        )
    try:
        check_backend(args.backend)
        module = load_module(args.module)
        pipeline = find_pipeline(module, args.pipeline)
        params = pipeline.resolve_params(parse_params(args.param, pipeline))
        graph = pipeline.validate()
        selected = selection(args, graph)
        executor = choose_executor(args)
        pools = parse_pools(args.pool, graph)
        traces = tracing(args)
    except (UsageError, PipelineDefinitionError) as exc:
        fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:  # Ctrl-C while the module was imported (or raised by it)
        fail(f"interrupted while importing {args.module!r}; nothing ran", EXIT_INTERRUPTED)
    if args.list or args.graph or args.dry_run:
        return inspect(args, pipeline, graph, params, selected)

    workdir: Path = args.workdir
    run_id = new_run_id()
    log_file = workdir / "runs" / run_id / "run.log"
    try:
        if workdir.exists() and not workdir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory")
        for part in ("checkpoints", "runs"):  # the folders a run writes in it
            if (workdir / part).exists() and not (workdir / part).is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{part!r} in it is a file, not a directory")
        workdir.mkdir(parents=True, exist_ok=True)
        if not os.access(workdir, os.W_OK):
            raise PermissionError(f"permission denied: {str(workdir)!r}")
    except OSError as exc:
        fail(f"cannot use working directory {str(workdir)!r}: {exc.strerror or exc}", EXIT_USAGE)
    add_cli_sinks(level=args.log_level, log_file=log_file, json_lines=args.log_json)
    route_asyncio_logging()

    sinks = frozenset(node.name for node in graph.nodes if not node.downstream)
    recorder = RunRecorder()
    display = terminal_display() if not args.log_json else None  # live progress on a terminal
    tracker = TaskTracker(recorder, pipeline.name, [node.name for node in graph.nodes], params)

    def abandon() -> None:  # a second signal: the process ends without further cleanup
        if display is not None:
            display.abandon()  # first: it cannot fail, saving the record can
        save_now(recorder, workdir / "runs")

    guard = SignalGuard(
        tracker,
        grace=args.grace,
        render=lambda r: (
            json.dumps(run_json(r, log_file, graph)) if args.json else render_summary(r, sinks, graph)
        ),
        log_file=log_file,
        on_abandon=abandon,
    )

    async def run() -> RunResult | None:
        return await guard.run(
            lambda: pipeline.run(
                params=params,
                workdir=workdir,
                force=args.no_skip,
                max_concurrency=args.max_concurrency,
                threads=args.threads,
                warn_blocking=args.warn_blocking or None,
                fail_fast=args.fail_fast,
                run_id=run_id,
                only=selected,
                executor=executor,
                listeners=[tracker, *traces] if display is None else [tracker, display, *traces],
                record=recorder,
                pools=pools,
                lock=args.lock,
            )
        )

    try:
        # With --json, stdout carries the JSON document only: what tasks print goes to stderr.
        with (
            contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext(),
            display if display is not None else contextlib.nullcontext(),
        ):
            result = anyio.run(run, backend=args.backend)
    except MissingCheckpointError as exc:
        fail(str(exc), EXIT_USAGE)
    except ExecutorError as exc:  # raised before any task ran
        logger.opt(exception=exc).bind(run_id=run_id, task="-").debug("the executor failed")
        fail(f"{exc} (log: {log_file})", EXIT_FAILED)
    except WorkdirLockedError as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:  # not a task's (that fails the task): the working directory's
        cannot = f"cannot write to working directory {str(workdir)!r}: {exc.strerror or exc}"
        if tracker.run_id == "-":  # before the first task: nothing ran, nothing was left
            fail(cannot, EXIT_USAGE)
        logger.opt(exception=exc).bind(run_id=run_id, task="-").debug("the run stopped")
        print(guard.render(tracker.result(stopped_by=describe_error(exc))))
        fail(f"the run stopped: {cannot}{_log_pointer(log_file, ' (log: {})')}", EXIT_FAILED)
    except KeyboardInterrupt as exc:
        culprit = tracker.raised_by(exc)
        if culprit is None:
            print(
                f"\nasyncflow: interrupted; finished tasks are checkpointed (log: {log_file})",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        # Raised by a task, not by a signal: the run cancelled the others, on both backends.
        print(guard.render(tracker.result(stopped_by=f"task {culprit!r} raising KeyboardInterrupt")))
        print(
            f"asyncflow: task {culprit!r} raised KeyboardInterrupt: the run stopped and the "
            f"tasks still running were cancelled; finished tasks are checkpointed and a rerun "
            f"resumes (log: {log_file})",
            file=sys.stderr,
        )
        return exit_without_abandoned_threads(tracker.result(), EXIT_INTERRUPTED)
    except BaseException as exc:  # a task raised SystemExit or a BaseException; or a bug
        logger.opt(exception=exc).bind(run_id=run_id, task="-").debug("the run stopped")
        print(guard.render(tracker.result(stopped_by=describe_error(exc))))
        fail(f"the run stopped: {describe_error(exc)} (traceback in {log_file})", EXIT_FAILED)
    if result is None:  # interrupted by a signal
        print(guard.render(tracker.result()))
        print(
            f"asyncflow: interrupted by {tracker.interrupted_by}; cancelled: "
            f"{_listed(tracker.cancelled)}; finished tasks are checkpointed and "
            f"a rerun resumes (log: {log_file})",
            file=sys.stderr,
        )
        return exit_without_abandoned_threads(tracker.result(), guard.exit_code)

    if args.json:
        print(json.dumps(run_json(result, log_file, graph)))
        return exit_without_abandoned_threads(result, EXIT_OK if result.ok else EXIT_FAILED)
    print(render_summary(result, sinks, graph))
    failure = log_file_failure()
    print(f"log: {log_file}" if failure is None else f"log: not written ({failure.strerror or failure})")
    errors, left_out = capped_errors(result.errors, Instances(result, mapped_over_names(graph)))
    for name, error in errors.items():
        print(f"asyncflow: task {name!r} failed: {describe_error(error)}", file=sys.stderr)
    for name, count in left_out.items():
        more = f"asyncflow: and {count} more instances of {name!r} failed (the log has them all)"
        print(more, file=sys.stderr)
    return exit_without_abandoned_threads(result, EXIT_OK if result.ok else EXIT_FAILED)

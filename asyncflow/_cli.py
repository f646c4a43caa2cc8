"""The command line: ``python -m asyncflow MODULE [options]``.

Exit codes: 0 every task succeeded or was cached; 1 a task failed, was skipped or was
cancelled (or asyncflow itself failed); 2 a usage error (bad option, unknown module, a
module that raises on import, an invalid pipeline or parameter, an unusable working
directory); 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (see
:mod:`asyncflow._interrupt`). Errors are one line on stderr; full tracebacks go to the
run's log file, ``<workdir>/runs/<run id>/run.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import functools
import importlib
import importlib.util
import json
import math
import os
import signal
import sys
import traceback
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import anyio
from loguru import logger

from . import __version__
from . import _history as history
from . import _otel_cli as otel_cli
from ._dask import DaskExecutor
from ._dist import install_hint
from ._errors import (
    ExecutorError,
    MissingCheckpointError,
    PipelineDefinitionError,
    UnknownDependencyError,
    WorkdirLockedError,
)
from ._events import Listener
from ._executors import EXECUTOR_NAMES, Executor, resolve_executor
from ._graph import Graph
from ._interrupt import (
    DEFAULT_GRACE,
    SignalGuard,
    TaskTracker,
    describe_error,
    exit_without_abandoned_threads,
    route_asyncio_logging,
)
from ._lock import LOCK_MODES
from ._logging import add_cli_sinks
from ._pipeline import DEFAULT_WORKDIR, Pipeline, default_file_store
from ._plan import make_plan, select
from ._progress import terminal_display
from ._records import RunRecorder, save_now
from ._render import (
    plan_json,
    render_dot,
    render_mermaid,
    render_plan,
    render_summary,
    render_tasks,
    run_json,
    tasks_json,
)
from ._result import RunResult
from ._runner import new_run_id

__all__ = ["UsageError", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """A problem with the command line's input; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``asyncflow: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see python -m asyncflow --help)", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m asyncflow``."""
    parser = _Parser(
        prog="python -m asyncflow",
        description="Run an asyncflow pipeline: every task starts as soon as its upstream "
        "tasks finish; finished tasks are checkpointed and skipped on the next run.",
        epilog="Exit codes: 0 all tasks succeeded or cached; 1 a task failed or was skipped; "
        "2 usage error; 130 interrupted by SIGINT, 143 by SIGTERM. Example: "
        "python -m asyncflow pipelines.prices --param holdout=24",
    )
    parser.add_argument(
        "module",
        nargs="?",
        help="the pipeline module: a dotted module name importable from the current "
        "directory (pipelines.prices) or a path to a .py file; required except with "
        "--runs, --show-run and --timeline",
    )
    parser.add_argument(
        "--pipeline",
        metavar="NAME",
        help="which Pipeline to run when the module defines several (its name or variable name)",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a run parameter (repeatable). The value is converted to the type of the "
        "parameter's default (int, float, bool, str); other values are read as JSON if "
        "they parse, else kept as text",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help=f"working directory for checkpoints, logs and outputs (default: ./{DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--no-skip",
        action="store_true",
        help="run every task even if its checkpoint is current (checkpoints are rewritten)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=_positive_int,
        metavar="N",
        help="run at most N tasks at once (default: no limit)",
    )
    parser.add_argument(
        "--fail-fast",
        action="store_true",
        help="cancel the rest of the run at the first failed task (default: only the failed "
        "task's downstream tasks are skipped)",
    )
    parser.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="TAG=N",
        help="run at most N tasks tagged TAG at once, on top of --max-concurrency "
        "(repeatable; N a positive integer; TAG must be a tag of some task)",
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, the running tasks are cancelled and get this many seconds "
        f"for their cleanup before it is abandoned (default: {DEFAULT_GRACE:g}); a second "
        "signal stops at once",
    )
    parser.add_argument(
        "--lock",
        choices=LOCK_MODES,
        default="fail",
        help="when another run holds the working directory's lock (<workdir>/.lock): fail at "
        "once naming that run (exit 1), or wait until it finishes (default: fail)",
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help=f"the anyio event loop backend (default: asyncio); trio needs {install_hint('trio')}",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTOR_NAMES,
        help="where plain def tasks compute: local (worker threads; the default), processes "
        "(a pool of local worker processes, one per CPU), dask (a Dask cluster: the one at "
        f"--dask-address, else a local cluster started for the run; needs {install_hint('dask')} "
        "and --backend asyncio). Coroutine tasks always run on the event "
        "loop, and tasks declared executor='local' in worker threads",
    )
    parser.add_argument(
        "--dask-address",
        metavar="tcp://HOST:PORT",
        help="the Dask scheduler to run on (implies --executor dask); the connection "
        "timeout is Dask's distributed.comm.timeouts.connect (default 30 s)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        metavar="LEVEL",
        help=f"console log level, one of {', '.join(LOG_LEVELS)} (default: INFO); the log "
        "file always records DEBUG",
    )
    # -- part of the DAG, and verbs that run nothing --
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="TASK",
        help="run only these tasks; the tasks upstream of them are loaded from their checkpoints",
    )
    parser.add_argument(
        "--from",
        dest="from_task",
        metavar="TASK",
        help="run TASK and every task downstream of it (upstream results come from checkpoints)",
    )
    parser.add_argument("--until", metavar="TASK", help="run TASK and every task upstream of it")
    verbs = parser.add_mutually_exclusive_group()
    verbs.add_argument(
        "--list",
        action="store_true",
        help="list the tasks with their upstream tasks and options, in definition order; run nothing",
    )
    verbs.add_argument(
        "--dry-run",
        action="store_true",
        help="show for each task whether it would run or be cached, and why; run nothing",
    )
    verbs.add_argument(
        "--graph",
        choices=("mermaid", "dot"),
        help="print the DAG as a Mermaid flowchart or a Graphviz DOT digraph; run nothing",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON document on stdout instead of the table (a run's summary, the "
        "--list or the --dry-run plan) and nothing else",
    )
    parser.add_argument(
        "--log-json", action="store_true", help="write the console log to stderr as JSON lines"
    )
    history.add_arguments(parser)
    otel_cli.add_arguments(parser)
    parser.add_argument("--version", action="version", version=f"asyncflow {__version__}")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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


def parse_params(pairs: Sequence[str], pipeline: Pipeline) -> dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into parameters, typed after the pipeline's defaults.

    Raises:
        UsageError: a pair without ``=``, or a value that does not convert.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param expects KEY=VALUE, got {pair!r}")
        default = pipeline.params.get(key)
        try:
            params[key] = _convert(raw, default)
        except ValueError as exc:
            raise UsageError(f"--param {key}={raw}: {exc}") from None
    return params


def parse_pools(pairs: Sequence[str], graph: Graph) -> dict[str, int]:
    """Turn ``--pool TAG=N`` strings into ``pools`` for :meth:`Pipeline.run`.

    Raises:
        UsageError: a pair without ``=``, a limit that is not a positive integer, a tag
            given twice, or a tag that no task carries (with the closest tag, if any).
    """
    tags = sorted({tag for node in graph.nodes for tag in node.task.tags})
    pools: dict[str, int] = {}
    for pair in pairs:
        tag, sep, raw = pair.partition("=")
        tag = tag.strip()
        if not sep or not tag:
            raise UsageError(f"--pool expects TAG=N, got {pair!r}")
        try:
            limit = _positive_int(raw.strip())
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--pool {tag}={raw}: {exc}") from None
        if tag in pools:
            raise UsageError(f"--pool {tag} is given twice")
        if tag not in tags:
            close = difflib.get_close_matches(tag, tags, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(
                f"--pool {tag}={limit}: no task has tag {tag!r}{hint} (tags: {', '.join(tags) or 'none'})"
            )
        pools[tag] = limit
    return pools


def _convert(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected a boolean (true/false, yes/no, 1/0, on/off)")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
    if isinstance(default, float):
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(number):  # JSON has no NaN or infinity: cache keys and records need it
            raise ValueError("expected a finite number")
        return number
    if isinstance(default, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        if default is not None:
            raise ValueError(f"expected JSON like the default {json.dumps(default)}") from None
        return raw


# -- output -----------------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    print(f"asyncflow: error: {message}", file=sys.stderr)
    raise SystemExit(code)


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Usage errors exit with code 2 through ``SystemExit`` (argparse's convention).
    """
    if hasattr(signal, "SIGPIPE"):
        # `python -m asyncflow ... | head`: end quietly when the reader goes away, as Unix
        # tools do, instead of a BrokenPipeError traceback (checkpoints already written stay).
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    if history.wanted(args):
        return history.main(args)
    if args.module is None:
        _fail(
            "the MODULE argument is required to run a pipeline (e.g. python -m asyncflow "
            "pipelines.prices); --runs, --show-run and --timeline need none",
            EXIT_USAGE,
        )
    try:
        _check_backend(args.backend)
        module = load_module(args.module)
        pipeline = find_pipeline(module, args.pipeline)
        params = pipeline.resolve_params(parse_params(args.param, pipeline))
        graph = pipeline.validate()
        selected = _selection(args, graph)
        executor = _executor(args)
        pools = parse_pools(args.pool, graph)
        tracing = _tracing(args)
    except (UsageError, PipelineDefinitionError) as exc:
        _fail(str(exc), EXIT_USAGE)
    if args.list or args.graph or args.dry_run:
        return _inspect(args, pipeline, graph, params, selected)

    workdir: Path = args.workdir
    run_id = new_run_id()
    log_file = workdir / "runs" / run_id / "run.log"
    try:
        if workdir.exists() and not workdir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory")
        workdir.mkdir(parents=True, exist_ok=True)
        if not os.access(workdir, os.W_OK):
            raise PermissionError(f"permission denied: {str(workdir)!r}")
    except OSError as exc:
        _fail(f"cannot use working directory {str(workdir)!r}: {exc.strerror or exc}", EXIT_USAGE)
    add_cli_sinks(level=args.log_level, log_file=log_file, json_lines=args.log_json)
    route_asyncio_logging()

    sinks = frozenset(node.name for node in graph.nodes if not node.downstream)
    recorder = RunRecorder()
    tracker = TaskTracker(recorder, pipeline.name, [node.name for node in graph.nodes], params)
    guard = SignalGuard(
        tracker,
        grace=args.grace,
        render=lambda r: json.dumps(run_json(r, log_file)) if args.json else render_summary(r, sinks),
        log_file=log_file,
        on_abandon=lambda: save_now(recorder, workdir / "runs"),
    )

    display = terminal_display() if not args.log_json else None  # live progress on a terminal

    async def run() -> RunResult | None:
        return await guard.run(
            lambda: pipeline.run(
                params=params,
                workdir=workdir,
                force=args.no_skip,
                max_concurrency=args.max_concurrency,
                fail_fast=args.fail_fast,
                run_id=run_id,
                only=selected,
                executor=executor,
                listeners=[tracker, *tracing] if display is None else [tracker, display, *tracing],
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
        _fail(str(exc), EXIT_USAGE)
    except ExecutorError as exc:  # raised before any task ran
        logger.opt(exception=exc).bind(run_id=run_id, task="-").debug("the executor failed")
        _fail(f"{exc} (log: {log_file})", EXIT_FAILED)
    except WorkdirLockedError as exc:
        _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"\nasyncflow: interrupted; finished tasks are checkpointed (log: {log_file})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as exc:  # a task raised SystemExit or a BaseException; or a bug
        logger.opt(exception=exc).bind(run_id=run_id, task="-").debug("the run stopped")
        print(guard.render(tracker.result(stopped_by=describe_error(exc))))
        _fail(f"the run stopped: {describe_error(exc)} (traceback in {log_file})", EXIT_FAILED)
    if result is None:  # interrupted by a signal
        print(guard.render(tracker.result()))
        print(
            f"asyncflow: interrupted by {tracker.interrupted_by}; cancelled: "
            f"{', '.join(tracker.cancelled) or 'none'}; finished tasks are checkpointed and "
            f"a rerun resumes (log: {log_file})",
            file=sys.stderr,
        )
        return guard.exit_code

    if args.json:
        print(json.dumps(run_json(result, log_file)))
        return exit_without_abandoned_threads(result, EXIT_OK if result.ok else EXIT_FAILED)
    print(render_summary(result, sinks))
    print(f"log: {log_file}")
    for name, error in result.errors.items():
        print(f"asyncflow: task {name!r} failed: {describe_error(error)}", file=sys.stderr)
    return exit_without_abandoned_threads(result, EXIT_OK if result.ok else EXIT_FAILED)


def _executor(args: argparse.Namespace) -> Executor | None:
    """The executor chosen by ``--executor`` and ``--dask-address`` (``None``: the default).

    Raises:
        UsageError: ``--dask-address`` with another executor, or Dask on trio.
    """
    name = args.executor
    if args.dask_address is not None:
        if name not in (None, "dask"):
            raise UsageError(f"--dask-address needs --executor dask, not --executor {name}")
        name = "dask"
    if name == "dask" and args.backend != "asyncio":
        raise UsageError(
            f"--executor dask needs --backend asyncio: Dask's client runs on asyncio, not "
            f"{args.backend} (--executor processes works on both)"
        )
    if name == "dask":
        if args.dask_address is not None:
            _check_dask_address(args.dask_address)
        return DaskExecutor(address=args.dask_address)
    return resolve_executor(name)


def _check_backend(backend: str) -> None:
    """Raise :class:`UsageError` when ``--backend trio`` is asked for and trio is not installed."""
    if backend != "trio":
        return
    try:
        import trio  # noqa: F401  (the run imports it anyway)
    except ImportError:
        raise UsageError(
            f"--backend trio needs trio, which is not installed: {install_hint('trio')}"
        ) from None


def _tracing(args: argparse.Namespace) -> list[Listener]:
    """The OpenTelemetry listener that ``--otel`` asks for (``[]`` without it).

    Raises:
        UsageError: its packages are missing or ``OTEL_*`` names an unsupported protocol.
    """
    if not args.otel:
        return []
    try:
        return [otel_cli.otlp_listener()]
    except otel_cli.OtelSetupError as exc:
        raise UsageError(str(exc)) from None


def _check_dask_address(address: str) -> None:
    """Raise :class:`UsageError` unless ``address`` looks like ``PROTOCOL://HOST:PORT``."""
    parts = urllib.parse.urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.scheme or not parts.hostname or port is None:
        raise UsageError(
            f"--dask-address {address!r} is not a scheduler address like tcp://HOST:PORT "
            "(e.g. tcp://127.0.0.1:8786)"
        )


def _selection(args: argparse.Namespace, graph: Graph) -> list[str] | None:
    """The tasks chosen by ``--only``/``--from``/``--until``, or ``None`` for all of them.

    Raises:
        UsageError: an unknown task name (with a suggestion), or an empty selection.
    """
    given = (("--only", args.only or []), ("--from", [args.from_task]), ("--until", [args.until]))
    for option, names in given:
        try:
            graph.indices(name for name in names if name is not None)
        except UnknownDependencyError as exc:
            raise UsageError(f"{option}: {exc}") from None
    try:
        return select(graph, only=args.only or (), start=args.from_task, end=args.until)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _inspect(
    args: argparse.Namespace,
    pipeline: Pipeline,
    graph: Graph,
    params: dict[str, Any],
    selected: list[str] | None,
) -> int:
    """``--list``, ``--graph`` and ``--dry-run``: print, run nothing, write nothing."""
    if args.list:
        listing = tasks_json(pipeline.name, graph, selected)
        print(json.dumps(listing) if args.json else render_tasks(graph, selected))
        return EXIT_OK
    if args.graph == "mermaid":
        print(render_mermaid(graph, selected))
        return EXIT_OK
    if args.graph == "dot":
        print(render_dot(graph, pipeline.name, selected))
        return EXIT_OK
    add_cli_sinks(level=args.log_level, log_file=None, json_lines=args.log_json)
    plan = anyio.run(
        functools.partial(
            make_plan,
            graph,
            pipeline=pipeline.name,
            params=params,
            store=default_file_store(args.workdir, pipeline.name),
            force=args.no_skip,
            selected=selected,
            workdir=args.workdir.resolve(),
            serializer=pipeline.serializer,
        ),
        backend=args.backend,
    )
    print(json.dumps(plan_json(plan)) if args.json else render_plan(plan))
    if plan.missing:
        _fail(str(MissingCheckpointError(plan.missing)), EXIT_USAGE)
    return EXIT_OK

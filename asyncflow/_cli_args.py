"""The command line's parser and option parsing: ``build_parser`` and the helpers that turn
option values into arguments of :meth:`asyncflow.Pipeline.run`.

Every helper raises :class:`UsageError` (one line, exit code 2) for bad input; nothing here
runs a pipeline. Imported by :mod:`asyncflow._cli` (the flow) and :mod:`asyncflow._cli_inspect`
(the verbs that run nothing); it imports neither.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
import unicodedata
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from . import _history as history
from ._dask import DaskExecutor
from ._errors import UnknownDependencyError
from ._executors import EXECUTOR_NAMES, Executor, resolve_executor
from ._graph import Graph
from ._interrupt import DEFAULT_GRACE
from ._lock import LOCK_MODES
from ._pipeline import DEFAULT_WORKDIR, Pipeline
from ._plan import select
from ._watchdog import DEFAULT_WARN_BLOCKING

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LOG_LEVELS",
    "UsageError",
    "build_parser",
    "choose_executor",
    "fail",
    "parse_params",
    "parse_pools",
    "selection",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """A problem with the command line's input; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``asyncflow: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see python -m asyncflow --help)", EXIT_USAGE)


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
        "--threads",
        type=_positive_int,
        metavar="N",
        help="run at most N plain def tasks at once in worker threads of the run's own "
        "(default: --max-concurrency if given, else the number of plain def tasks, at least "
        "40 and at most 256); a task's timeout starts once it has a thread",
    )
    parser.add_argument(
        "--warn-blocking",
        type=_seconds,
        default=DEFAULT_WARN_BLOCKING,
        metavar="SECONDS",
        help="warn, naming the task and the line, when a coroutine task holds the event loop "
        f"longer than SECONDS without awaiting (default: {DEFAULT_WARN_BLOCKING:g}; 0 turns "
        "the watchdog off)",
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
        help="the anyio event loop backend (default: asyncio)",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTOR_NAMES,
        help="where plain def tasks compute: local (worker threads; the default), processes "
        "(a pool of local worker processes, one per CPU), dask (a Dask cluster: the one at "
        "--dask-address, else a local cluster started for the run; needs pip install "
        "'.[dask]' from a checkout, and --backend asyncio). Coroutine tasks always run on the event "
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
        action="append",
        metavar="TASK",
        help="run TASK and every task downstream of it (upstream results come from checkpoints); "
        "repeatable: the tasks downstream of any of them",
    )
    parser.add_argument(
        "--until",
        action="append",
        metavar="TASK",
        help="run TASK and every task upstream of it; repeatable: the tasks upstream of any of them",
    )
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


def fail(message: str, code: int) -> NoReturn:
    """Print ``asyncflow: error: <message>`` on stderr and exit with ``code`` (``SystemExit``)."""
    print(f"asyncflow: error: {message}", file=sys.stderr)
    raise SystemExit(code)


# -- options that need the graph ---------------------------------------------------------------


def choose_executor(args: argparse.Namespace) -> Executor | None:
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


def _names(given: list[str] | None) -> list[str]:
    """Task names typed on the command line, in NFKC like every task name (see ``_task``)."""
    return [unicodedata.normalize("NFKC", name) for name in given or ()]


def selection(args: argparse.Namespace, graph: Graph) -> list[str] | None:
    """The tasks chosen by ``--only``/``--from``/``--until``, or ``None`` for all of them.

    Each option may be repeated: ``--until B --until C`` selects the tasks upstream of B or
    of C (and ``--from`` likewise downstream); different options narrow each other, as in
    :func:`asyncflow._plan.select`.

    Raises:
        UsageError: an unknown task name (with a suggestion), or an empty selection.
    """
    only, starts, ends = (_names(args.only), _names(args.from_task), _names(args.until))
    for option, names in (("--only", only), ("--from", starts), ("--until", ends)):
        try:
            graph.indices(names)
        except UnknownDependencyError as exc:
            raise UsageError(f"{option}: {exc}") from None
    if len(starts) <= 1 and len(ends) <= 1:
        try:
            return select(graph, only=only, start=next(iter(starts), None), end=next(iter(ends), None))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    chosen = set(range(len(graph.nodes)))
    if only:
        chosen &= graph.indices(only)
    if starts:
        chosen &= graph.downstream_closure(graph.indices(starts))
    if ends:
        chosen &= graph.upstream_closure(graph.indices(ends))
    if not chosen:
        raise UsageError("the selection is empty: no task is selected by all of the given options")
    return [graph.nodes[i].name for i in sorted(chosen)]

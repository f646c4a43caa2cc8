"""The command line's parser: ``build_parser``, the types of its option values, the exit
codes and the one-line usage error.

Add a new option here, in :func:`build_parser`; turn its value into an argument of
:meth:`asyncflow.Pipeline.run` in :mod:`asyncflow._cli_options` if that needs the loaded
pipeline. Nothing here runs a pipeline. Imported by :mod:`asyncflow._cli` (the flow),
:mod:`asyncflow._cli_options` and :mod:`asyncflow._cli_inspect` (the verbs that run
nothing); it imports none of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__
from . import _history as history
from . import _otel_cli as otel_cli
from ._dist import install_hint
from ._executors import EXECUTOR_NAMES
from ._interrupt import DEFAULT_GRACE
from ._lock import LOCK_MODES
from ._pipeline import DEFAULT_WORKDIR
from ._watchdog import DEFAULT_WARN_BLOCKING

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LOG_LEVELS",
    "UsageError",
    "build_parser",
    "fail",
    "positive_int",
    "seconds",
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
        "parameter's default (int, float, bool, str); for another default (list, dict) it "
        "must be JSON; for a default of None it is JSON if it parses, else the text",
    )
    parser.add_argument(
        "--workdir",
        type=_directory,
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
        type=positive_int,
        metavar="N",
        help="run at most N tasks at once (default: no limit)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="run at most N plain def tasks at once in worker threads of the run's own "
        "(default: --max-concurrency if given, else the number of plain def tasks, at least "
        "40 and at most 256); a task's timeout starts once it has a thread",
    )
    parser.add_argument(
        "--warn-blocking",
        type=seconds,
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
        type=seconds,
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
        help="run only these tasks; the tasks upstream of them are loaded from their checkpoints "
        "(a mapped task upstream, which has none of its own, runs: its instances are cached "
        "when their checkpoints match)",
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
        help="show for each task whether it would run or be cached, and why (for a mapped "
        "task: how many instances would run or be cached, when its items are known from "
        "checkpoints); run nothing",
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


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds >= 0 (``argparse.ArgumentTypeError`` else)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _directory(text: str) -> Path:
    """``--workdir``: a non-empty path (``''`` would silently mean the current directory).

    Raises:
        argparse.ArgumentTypeError: the path is empty.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    return Path(text)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``argparse.ArgumentTypeError`` else)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# -- output -----------------------------------------------------------------------------------


def fail(message: str, code: int) -> NoReturn:
    """Print ``asyncflow: error: <message>`` on stderr and exit with ``code`` (``SystemExit``)."""
    print(f"asyncflow: error: {message}", file=sys.stderr)
    raise SystemExit(code)

"""Option values turned into the arguments of :meth:`asyncflow.Pipeline.run`: parameters,
pools, the selection of tasks and the executor, checked against the loaded pipeline.

Every helper raises :class:`~asyncflow._cli_args.UsageError` (one line, exit code 2) for
bad input. Imported by :mod:`asyncflow._cli`; it imports :mod:`asyncflow._cli_args` only.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import unicodedata
import urllib.parse
from collections.abc import Sequence
from typing import Any

from . import _otel_cli as otel_cli
from ._cli_args import UsageError, positive_int
from ._dask import DaskExecutor
from ._dist import install_hint
from ._errors import UnknownDependencyError
from ._events import Listener
from ._executors import Executor, resolve_executor
from ._graph import Graph
from ._pipeline import Pipeline
from ._selection import select

__all__ = ["choose_executor", "parse_params", "parse_pools", "selection"]


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
            limit = positive_int(raw.strip())
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
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except ValueError:
        if default is not None:
            raise ValueError(f"expected JSON like the default {json.dumps(default)}") from None
        return raw
    return value


def _no_constant(name: str) -> Any:
    """``json.loads``'s hook for ``NaN`` and ``Infinity``: strict JSON has neither."""
    raise ValueError(f"expected strict JSON: {name} is not a JSON value (use null or a string)")


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


def check_backend(backend: str) -> None:
    """Raise :class:`UsageError` when ``--backend trio`` is asked for and trio is not installed."""
    if backend != "trio":
        return
    try:
        import trio  # noqa: F401  (the run imports it anyway)
    except ImportError:
        raise UsageError(
            f"--backend trio needs trio, which is not installed: {install_hint('trio')}"
        ) from None


def tracing(args: argparse.Namespace) -> list[Listener]:
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

"""Cache keys: when may a checkpoint stand in for running a task?

A task's cache key is the SHA-256 (``hashlib``) of a canonical JSON document holding:

* ``code``: the digest of the task function's code (see :func:`code_digest`);
* ``params``: the run's parameters, only if the task declares a ``params`` parameter;
* ``extra``: the value of the task's ``cache_key_fn(params)``, if it has one (use it for the
  content of input files: ``cache_key_fn=lambda p: file_digest(p["csv"])``);
* ``upstream``: the cache keys of its upstream tasks, by parameter (or ``after``) name.

Because upstream keys are folded in, a change anywhere upstream (code, parameters, an input
file's content) changes the key of every task downstream of it, the way a Merkle tree does.
Code that a task calls but does not contain (helper functions, imported modules) is not
part of the key; bump a constant in the task or use ``cache_key_fn`` when that matters.

:func:`node_cache_key` is the one place that computes a task's key: the runner calls it
when a task becomes ready, and the planner (``--dry-run``) calls it for every task in
topological order. It also returns the key's parts as a :class:`CacheKey` (digests of the
code, parameters and ``cache_key_fn`` value, and the upstream pairs), which checkpoints
store so that the planner can tell *why* a key changed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import textwrap
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._graph import Node

__all__ = ["CacheKey", "code_digest", "file_digest", "node_cache_key", "task_cache_key", "volatile_key"]

_SIMPLE = (str, int, float, bool, type(None))


def _simple(value: Any) -> Any:
    """``value`` if it is immutable plain data, else its type's name.

    Mutable containers (a list that a task appends to, say) are left out: their content
    changes between runs, which would make the task's cache key change on every run.
    """
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, tuple) and all(isinstance(v, _SIMPLE) for v in value):
        return list(value)
    return f"<{type(value).__qualname__}>"


def _code_fallback(code: types.CodeType) -> str:
    parts = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames)]
    for const in code.co_consts:
        parts.append(_code_fallback(const) if isinstance(const, types.CodeType) else repr(const))
    return "|".join(parts)


@functools.lru_cache(maxsize=4096)
def _body_digest(code: types.CodeType) -> str:
    """The digest of a function body, cached per code object (one per ``def`` statement)."""
    try:
        source = textwrap.dedent(inspect.getsource(code))
        node = ast.parse(source).body[0]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.decorator_list = []
        text = ast.dump(node)
    except (OSError, TypeError, SyntaxError, IndexError):
        text = _code_fallback(code)
    return hashlib.sha256(text.encode()).hexdigest()


def code_digest(fn: Callable[..., Any]) -> str:
    """A hex SHA-256 digest of what ``fn`` computes, for cache keys.

    The function's source is parsed with :mod:`ast` and dumped without line numbers or
    decorators, so reformatting, comments, moving the function or changing its decorator's
    options (retries, timeout, ...) keep the digest; changing its body, signature or
    docstring changes it. Default values and closure variables that are plain data (str,
    int, float, bool, None, flat tuples of those) are included, so one function
    registered once per ticker with ``ticker=ticker`` gets one digest per ticker. When
    the source is not available (functions built with ``exec``), the bytecode is used.
    """
    target = inspect.unwrap(fn)
    while hasattr(target, "func") and callable(target.func):  # functools.partial
        target = target.func
    code = getattr(target, "__code__", None)
    body = _body_digest(code) if code is not None else repr(target)
    defaults = getattr(target, "__defaults__", None) or ()
    kwdefaults = getattr(target, "__kwdefaults__", None) or {}
    closure = getattr(target, "__closure__", None) or ()
    cells = []
    for cell in closure:
        try:
            cells.append(_simple(cell.cell_contents))
        except ValueError:  # an empty cell
            cells.append(None)
    extra = {
        "defaults": [_simple(v) for v in defaults],
        "kwdefaults": {k: _simple(v) for k, v in sorted(kwdefaults.items())},
        "closure": cells,
        "partial": _partial_args(fn),
    }
    payload = body + json.dumps(extra, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _partial_args(fn: Any) -> Any:
    args = []
    while hasattr(fn, "func") and hasattr(fn, "args") and hasattr(fn, "keywords"):
        args.append([[_simple(a) for a in fn.args], {k: _simple(v) for k, v in fn.keywords.items()}])
        fn = fn.func
    return args


def task_cache_key(
    *,
    code: str,
    params: Mapping[str, Any] | None,
    extra: Any,
    upstream: Sequence[tuple[str, str]],
) -> str:
    """The hex SHA-256 cache key of one task; see the module docstring for its parts.

    Args:
        code: the task's :func:`code_digest`.
        params: the run's parameters if the task declares ``params``, else ``None``.
        extra: the value of the task's ``cache_key_fn``, or ``None``.
        upstream: ``(upstream task, its cache key)`` pairs, then pairs that record which
            task feeds which parameter (see :class:`CacheKey`).

    Values that are not JSON are hashed by ``repr``; avoid reprs that change between runs
    (object addresses) in parameters and in ``cache_key_fn`` values.
    """
    document = {"code": code, "params": params, "extra": extra, "upstream": list(upstream)}
    return _digest(document)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheKey:
    """A task's cache key and what it was computed from.

    Attributes:
        key: the cache key (hex SHA-256), as :func:`task_cache_key` computes it.
        code: the task's :func:`code_digest`.
        params: the digest of the run parameters the task sees (of ``null`` when it does
            not declare ``params``).
        extra: the digest of its ``cache_key_fn`` value (of ``null`` when it has none).
        upstream: the ``upstream`` pairs of :func:`task_cache_key`: ``(upstream task,
            its cache key)`` for each upstream task, then ``(parameter, task name)`` for
            each parameter fed by one task and ``(parameter, "a,b,...")`` for each fan-in.
    """

    key: str
    code: str
    params: str
    extra: str
    upstream: tuple[tuple[str, str], ...]

    def parts(self) -> dict[str, Any]:
        """The parts as a JSON object, as stored in a checkpoint's ``key_parts``."""
        return {
            "code": self.code,
            "params": self.params,
            "extra": self.extra,
            "upstream": [list(pair) for pair in self.upstream],
        }


async def node_cache_key(
    node: Node, nodes: Sequence[Node], keys: Sequence[str | None], params: Mapping[str, Any]
) -> CacheKey:
    """The :class:`CacheKey` of ``node``'s task in a run with ``params``.

    Args:
        node: the task's node.
        nodes: every node of the graph, indexed like ``keys``.
        keys: the cache keys already known, by node index (``None`` counts as ``""``);
            those of ``node``'s upstream tasks must be set.
        params: the run's parameters.

    Raises:
        Exception: whatever the task's ``cache_key_fn`` raises (e.g. ``OSError`` for a
            missing input file).
    """
    task = node.task
    extra = None
    if task.cache_key_fn is not None:
        extra = task.cache_key_fn(dict(params))
        if inspect.isawaitable(extra):
            extra = await extra
    upstream = (
        [(nodes[u].name, keys[u] or "") for u in node.upstream]
        + [(param, nodes[u].name) for param, u in node.inputs]
        + [(param, ",".join(nodes[u].name for u in group)) for param, group in node.gathers]
    )
    code = code_digest(task.fn)
    task_params = params if task.wants_params else None
    return CacheKey(
        key=task_cache_key(code=code, params=task_params, extra=extra, upstream=upstream),
        code=code,
        params=_digest(task_params),
        extra=_digest(extra),
        upstream=tuple(upstream),
    )


def volatile_key(key: str, run_id: str) -> str:
    """The key a task with ``checkpoint=False`` hands downstream after it ran in ``run_id``.

    Such a task runs on every run and its result may change, so the tasks downstream of
    it must run again too: a key that differs on every run sees to that.
    """
    return hashlib.sha256(f"{key}:{run_id}".encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """The hex SHA-256 digest of a file's content (``hashlib.file_digest``).

    Made for ``cache_key_fn``, so that changing an input file re-runs the task that
    reads it and everything downstream.

    Raises:
        OSError: the file cannot be read (e.g. ``FileNotFoundError``).
    """
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

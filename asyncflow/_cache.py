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
from pathlib import Path
from typing import Any

__all__ = ["code_digest", "file_digest", "task_cache_key"]

_SIMPLE = (str, int, float, bool, type(None))


def _simple(value: Any) -> Any:
    """``value`` if it is plain data with a stable repr, else its type's name."""
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, _SIMPLE) for v in value):
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
    int, float, bool, None, flat lists/tuples of those) are included, so one function
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
        upstream: ``(parameter or "after:NAME", upstream cache key)`` pairs.

    Values that are not JSON are hashed by ``repr``; avoid reprs that change between runs
    (object addresses) in parameters and in ``cache_key_fn`` values.
    """
    document = {"code": code, "params": params, "extra": extra, "upstream": list(upstream)}
    text = json.dumps(document, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """The hex SHA-256 digest of a file's content (``hashlib.file_digest``).

    Made for ``cache_key_fn``, so that changing an input file re-runs the task that
    reads it and everything downstream.

    Raises:
        OSError: the file cannot be read (e.g. ``FileNotFoundError``).
    """
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

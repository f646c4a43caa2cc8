"""Code and value digests for cache keys (interim: the function's own code only)."""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import textwrap
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CodeDigest", "code_digest", "describe_change", "value_digest", "warn_left_out"]


@dataclass(frozen=True, slots=True)
class CodeDigest:
    """What a function computes, as a digest and its parts."""

    digest: str
    parts: Mapping[str, str] = field(default_factory=dict)
    left_out: tuple[str, ...] = ()


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


def _old_digest(fn: Callable[..., Any]) -> str:
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


def code_digest(fn: Callable[..., Any]) -> CodeDigest:
    """The :class:`CodeDigest` of ``fn``."""
    d = _old_digest(fn)
    return CodeDigest(d, {"body": d})


def value_digest(value: Any) -> str | None:
    """A digest of plain data, or ``None``."""
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def describe_change(old: Mapping[str, str] | None, new: CodeDigest) -> str:
    """Words for what changed."""
    return "cache key changed" if old is None else "its code changed"


def warn_left_out(task: str, digest: CodeDigest) -> None:
    """Warn about values left out."""

"""Code and value digests for cache keys: what a task computes, hashed exactly.

:func:`code_digest` hashes a task function *together with the user code it reaches*:

* **What is followed.** From the function's code object (and the code objects nested in
  its ``co_consts``: inner functions, lambdas, comprehensions), every name in ``co_names``
  is looked up in the function's ``__globals__``. A name bound to a function, a class, a
  module, an enum member or plain data *of the user's own code* is followed: functions
  transitively, classes through every method, property, static and class method and user
  base class, modules by looking up the same names as attributes (``helpers.scale``). The
  cells of closures that hold functions are followed the same way, decorators through
  ``__wrapped__``, ``functools.partial`` (nested too) through ``.func``, bound methods
  through ``__func__`` and their class. Cycles and recursion end because each object is
  visited once per digest. Attribute names are over-approximated: any name in
  ``co_names`` is looked up in every user module the code reaches, so an unrelated
  attribute of the same name can only cause a needless rerun, never a stale result.
* **What is not followed.** Code whose file is in the standard library, installed
  packages or asyncflow itself (the rule is :func:`asyncflow._values.is_user_file`), and
  built-ins. Module-level objects that are neither code nor plain data (a logger, a client
  made at import time) are not part of the digest and not warned about; their class is
  followed when it is user code. An object that raises when looked at (a context-local
  proxy used outside its context) is skipped, so a digest never fails.
* **How code is hashed.** Never from source: from bytecode (``co_code``, the exception
  table, ``co_consts`` with nested code by its own digest, ``co_names``, ``co_varnames``,
  ``co_freevars``, ``co_cellvars``, argument counts, flags and ``co_name``, in one
  :mod:`marshal` encoding: see :mod:`asyncflow._shape`), plus ``sys.version_info[:2]``,
  since bytecode differs between Python versions. Line numbers
  and file names are left out, so moving a function or editing comments elsewhere keeps
  its digest, and editing its body changes it. Docstrings are constants, so editing one
  changes the digest. Defaults, keyword defaults, closure cells and ``partial`` arguments
  are hashed by value (:func:`value_digest`); module constants that are plain data too.
* **What is left out, loudly.** A bound value with no stable encoding (an open file, a
  client, an object whose ``repr`` is its address) goes into :attr:`CodeDigest.left_out`,
  and :func:`warn_left_out` says so once per task.

The one remaining way to be wrong: behaviour that lives outside the user's modules
(an upgraded library, a changed file or database a task reads behind asyncflow's back, a
module-level object mutated in place during the process). The remedy is the task's
``cache_key_fn=``, whose value is part of the key.

Caches, the only state here besides the warned-once set: the digest of each code object
met as a helper or nested code (:mod:`asyncflow._shape`); the *node* of each user function
met as a helper or method (:mod:`asyncflow._nodes`: its digest and what its code reaches
directly, shared by every walk that reaches it, reused while the function and every name
it looked up are unchanged, so a helper called by 10,000 task functions is hashed once);
and the walk of each root (its parts and the global bindings it followed,
:mod:`asyncflow._roots`), all keyed by ``id`` with a weak reference that drops the entry
with the object. The first digest of a module-level function walks, in the same pass, every
function of its module not walked yet (:mod:`asyncflow._pass`: what they look up in common
is followed once, and the results are exactly their own walks); for those functions that
pass is their first digest. A cached walk is
reused while every binding it followed is unchanged (re-importing or rebinding a helper
or a constant starts a new walk), so a 10,000-task ``partial`` fan-out of one function
walks it once and then pays only for each partial's bound values. (A fourth cache, in
:mod:`asyncflow._nodes`, keeps the digest of each value met, with the value.) The values
a walk reaches (module constants, defaults, closure cells) are thus a snapshot taken when
they are first digested in the process: a closure over a counter or a list that the task
itself updates keeps its key from run to run, and a run in a new process sees the values
as the module builds them. What a cached walk does not notice: a container mutated in
place; the root's ``__defaults__``, or a helper's ``__code__`` or ``__defaults__``,
reassigned; a name that was unbound (or bound to what is not followed, a library function)
becoming bound to user code; all after that first digest in the same process. Rebinding a
global it followed is noticed, and a new walk (of another root) notices all but the first.
"""

from __future__ import annotations

import functools
import hashlib
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loguru import logger

from ._pass import module_pass
from ._roots import CodeDigest, Walked, lookup, make_digest, store, walks
from ._shape import sha
from ._values import Unhashable, describe, encode
from ._walk import walk_root

__all__ = ["CodeDigest", "code_digest", "describe_change", "value_digest", "warn_left_out"]


def code_digest(fn: Callable[..., Any]) -> CodeDigest:
    """The :class:`CodeDigest` of what ``fn`` computes, for cache keys.

    Args:
        fn: a function (``def``, ``async def``, lambda, closure, decorated), a
            ``functools.partial`` of one (nested too), a bound method, a class, or any
            other callable (its class is followed and the object hashed as ``bound self``).

    The walk through the user code ``fn`` reaches is cached per function (see the module
    docstring), with the function's own defaults and closure cells hashed by value when
    it is walked (like module constants: a snapshot per process); what ``partial`` or a
    bound method binds is hashed on every call. Never raises for a callable; values that
    cannot be hashed are listed in ``left_out``.
    """
    args: Sequence[Any]
    kind = type(fn)
    if kind is types.FunctionType:
        return _walked(fn).result  # the common case, a plain function: no peeling
    target: Any = fn
    if kind is functools.partial and type(target.func) is types.FunctionType:
        args, keywords = target.args, target.keywords  # a fan-out: no loop
        target = target.func
    else:
        target, args, keywords = _peel(fn)
    walked = _walked(target)
    if args or not isinstance(walked.inner, types.FunctionType):
        values = _bound(target, walked.inner, args, keywords)
    else:  # the fan-out case: keywords only
        values = list(keywords.items())
    if not values:
        return walked.result
    extra: dict[str, str] = {}
    left_out = walked.left_out
    for name, value in values:
        try:
            extra["bound " + name] = _bound_digest(value)
        except Unhashable as exc:
            what = f"bound argument {name!r}" if name != "self" else "bound self"
            nested = "" if exc.value is value else "holds "
            left_out += (f"{what} ({nested}{describe(exc.value)})",)
    if not extra:
        return make_digest(walked.result.digest, walked.result.parts, left_out)
    bound = "\n" + "\n".join(sorted(map("=".join, extra.items())))
    digest = _sha256(walked.lines + bound.encode("utf-8", "surrogatepass")).hexdigest()
    return make_digest(digest, _proxy({**walked.parts, **extra}), left_out)


_sha256 = hashlib.sha256
_proxy = types.MappingProxyType
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
_by_encoding: dict[str, str] = {}
"""``{encoding: its digest}`` for the containers and objects bound by ``partial``, which a
fan-out often binds again and again (the same configuration for every item); cleared
when it reaches :data:`_BY_ENCODING_SIZE` entries. Exact: a digest is a function of the
encoding."""
_BY_ENCODING_SIZE = 4096


def _bound_digest(value: Any) -> str:
    """The digest of a value bound by ``partial`` (or a bound method's object): hashed on
    every call, never a snapshot. Raises :class:`Unhashable` as :func:`encode` does."""
    text = encode(value, _code_token)
    if type(value) in _SCALARS:  # an item of a fan-out: seldom the same twice
        return _sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    digest = _by_encoding.get(text)
    if digest is None:
        if len(_by_encoding) >= _BY_ENCODING_SIZE:
            _by_encoding.clear()
        digest = _by_encoding[text] = _sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return digest


_warned: set[str] = set()


def _module_level(fn: types.FunctionType) -> bool:
    return fn.__globals__.get(fn.__name__) is fn


def _walked(root: Any) -> Walked:
    """The walk from ``root`` (a function, class or other callable): the cached one while
    valid; for a module-level function never walked, that of the pass over its module."""
    walked = lookup(root)
    if walked is not None:
        return walked
    if type(root) is types.FunctionType and id(root) not in walks and _module_level(root):
        module_pass(root)
        walked = walks.get(id(root))
        if walked is not None and walked() is root:
            return walked
    walk = walk_root(root)
    return store(root, walk.parts, walk.left_out, walk.witnesses)


def _bound(
    target: Any, inner: Any, args: Sequence[Any], keywords: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    """``(name, value)`` for every value bound to the root by ``partial`` (positional ones
    named after the parameters they fill) or as a bound method's or callable's object."""
    if isinstance(inner, types.FunctionType):
        code = inner.__code__
        positional = code.co_varnames[: code.co_argcount]
        bound = [(positional[i] if i < len(positional) else f"#{i}", v) for i, v in enumerate(args)]
    else:
        bound = [(f"#{i}", v) for i, v in enumerate(args)]
        if not isinstance(target, (type, types.BuiltinFunctionType)):
            bound.append(("self", target))
    return bound + list(keywords.items())


def _peel(fn: Any) -> tuple[Any, list[Any], dict[str, Any]]:
    """``fn`` without its partials and bound-method layers, with what they bind."""
    args: list[Any] = []
    keywords: dict[str, Any] = {}
    while True:
        if isinstance(fn, functools.partial):
            args[:0] = fn.args
            for key, value in fn.keywords.items():
                keywords.setdefault(key, value)  # an outer partial's keyword wins
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            args[:0] = [fn.__self__]
            fn = fn.__func__
        else:
            return fn, args, keywords


def _code_token(obj: Any) -> str:
    """A function or class met inside a bound value: the digest of its walk (its code and
    the user code it reaches), not of its own bound values, so that two functions that
    hold each other in their defaults cannot recurse forever."""
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    return _walked(obj).result.digest


def value_digest(value: Any) -> str | None:
    """The hex SHA-256 of ``value``'s canonical encoding; ``None`` if it has none.

    Plain data is hashed by value, recursively: dict and set order are irrelevant; ``1``,
    ``1.0`` and ``True`` differ, as do a tuple and a list. Functions and classes inside it
    count as their code (the walk of :func:`code_digest`, without their own defaults and
    closure values); enum members as qualified name and value; user
    dataclass instances by fields. See :mod:`asyncflow._values` for the full list.
    Returns ``None`` (never raises) for values with no stable encoding: objects whose
    ``repr`` holds an address, open files, clients, self-containing containers.
    """
    try:
        return sha(encode(value, _code_token))
    except Unhashable:
        return None


_KIND_ORDER = ("helper", "class", "constant", "bound", "default", "closure", "body", "python")


def _phrase(label: str, verb: str) -> str:
    kind, _, rest = label.partition(" ")
    where, _, name = rest.rpartition(":")
    if kind == "helper":
        return f"helper {name}() {verb} ({where})"
    if kind == "class":
        return f"class {name} {verb} ({where})"
    if kind == "constant":
        return f"constant {name} {verb}"
    if kind == "bound":
        return f"bound argument {rest} {verb}" if rest != "self" else f"bound object {verb}"
    if kind in ("default", "closure"):
        return f"{'closure variable' if kind == 'closure' else 'default'} {rest} {verb}"
    if kind == "body":
        return f"its code {verb}"
    if kind == "python":
        return f"Python version {verb}"
    return f"{label} {verb}"


def describe_change(old: Mapping[str, str] | None, new: CodeDigest) -> str:
    """Words for ``--dry-run`` naming what differs between stored parts and ``new``.

    Args:
        old: the :attr:`CodeDigest.parts` stored with a checkpoint, or ``None`` when the
            checkpoint has none (written by an older asyncflow).
        new: the digest of the task now.

    Returns:
        ``"cache key changed"`` when ``old`` is ``None``; ``"code unchanged"`` when the
        parts are equal; else phrases joined by ``"; "``, most specific first (helpers,
        classes, constants, bound arguments, defaults, closure variables, the body),
        e.g. ``"helper scale() changed (pipelines/prices.py); constant RATE changed"``.
        Parts only in ``new`` read ``"... added"``, parts only in ``old`` ``"... removed"``.
    """
    if old is None:
        return "cache key changed"
    changes: list[tuple[int, str, str]] = []
    for label in set(old) | set(new.parts):
        before, after = old.get(label), new.parts.get(label)
        if before == after:
            continue
        verb = "added" if before is None else "removed" if after is None else "changed"
        kind = label.partition(" ")[0]
        rank = _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
        changes.append((rank, label, _phrase(label, verb)))
    return "; ".join(phrase for _, _, phrase in sorted(changes)) or "code unchanged"


def warn_left_out(task: str, digest: CodeDigest) -> None:
    """Log, once per task name per process, which of ``task``'s values its key leaves out.

    A loguru warning (``logger.warning``) from ``asyncflow._digest``, so it is silent
    unless the application enabled ``"asyncflow"`` logging; nothing happens when
    ``digest.left_out`` is empty. Never raises.
    """
    if not digest.left_out or task in _warned:
        return
    _warned.add(task)
    logger.warning(
        "task {task!r}: {values} cannot be hashed stably, so it is left out of the cache key and "
        "a change to it will not re-run the task; pass cache_key_fn= to make it part of the key",
        task=task,
        values=", ".join(digest.left_out),
    )

"""The definition of one task: its function, its dependencies and its options.

A :class:`Task` is immutable and knows nothing about other tasks; which upstream task feeds
which parameter is resolved against the whole pipeline in :mod:`asyncflow._graph`.
"""

from __future__ import annotations

import functools
import inspect
import os
import types
import unicodedata
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import InvalidTaskNameError, PipelineDefinitionError
from ._frozen import become, layout_twin
from ._retry import RetryPolicy
from ._serializers import Serializer, resolve_serializer

__all__ = ["RESERVED_PARAMETERS", "Each", "Task", "each", "make_task", "missing_outputs"]

RESERVED_PARAMETERS = frozenset({"params", "context"})
"""Parameter names a task may declare to receive the run's parameters (a read-only mapping
that records which it reads) or its :class:`asyncflow.RunContext`; they never name an
upstream task."""


@dataclass(frozen=True, slots=True)
class Each:
    """A mapped input: see :func:`each`.

    Attributes:
        task: the name of the upstream task whose result's items the parameter receives.
    """

    task: str


def each(task: str) -> Each:
    """Map a task over the items of an upstream task's result (run-time fan-out).

    Used in ``inputs=``: ``@pipeline.task(inputs={"url": asyncflow.each("urls")})`` runs
    the task once per item of ``urls``' result (a list; a tuple is taken as one), as the *instances*
    ``fetch[0]``, ``fetch[1]``, ... Each instance is a task of its own: its own attempts,
    retries, timeout, pool slot, events and checkpoint, keyed on its item's *value*, so
    adding an item runs one more instance and reordering the list runs none. The task's
    other parameters are passed whole to every instance; several ``each`` inputs of one
    task are zipped (their lengths must be equal). Mapping over a mapped task
    (``each("fetch")``) chains the two: instance ``k`` starts the moment instance ``k`` of
    the upstream is done, with no barrier. A task that takes a mapped task as an ordinary
    parameter receives the list of its instances' results, in item order (``[]`` for no
    items), once all of them are done (like Airflow's ``expand`` or Prefect's ``.map``).

    Args:
        task: the upstream task's name.

    Raises:
        PipelineDefinitionError: ``task`` is not a string (when the task is declared);
            ``UnknownDependencyError`` when no task has that name (when the pipeline is
            validated). At run time, an upstream result that is not a list, or zipped
            inputs of unequal lengths, fail the mapped task with an error naming them.
    """
    if not isinstance(task, str):
        raise PipelineDefinitionError(
            f"asyncflow.each() takes the name of a task, not {task!r}"
            + (f"; write each({task.__name__!r})" if callable(task) and hasattr(task, "__name__") else "")
        )
    return Each(task)


@dataclass(frozen=True, slots=True)
class Task:
    """One task of a pipeline, as declared with ``@pipeline.task``.

    Attributes:
        name: the task's name, a Python identifier, unique in its pipeline.
        fn: the function; ``async def`` runs on the event loop, plain ``def`` in a worker
            thread (``anyio.to_thread.run_sync``).
        is_async: whether ``fn`` is a coroutine function.
        parameters: ``(parameter name, has a default)`` for each parameter of ``fn`` that
            is not reserved, in signature order.
        inputs: explicit ``{parameter: upstream task name}`` mapping; a value that is a
            tuple of names feeds the parameter a list of those tasks' results, in that
            order (fan-in), and an :class:`Each` maps the task over the items of that
            task's result (see :func:`each`). Any other parameter is fed by the task of
            the same name.
        after: names of upstream tasks that must finish first but pass no data.
        wants_params: ``fn`` declares a ``params`` parameter.
        wants_context: ``fn`` declares a ``context`` parameter.
        retry: the :class:`RetryPolicy`.
        timeout: limit on each attempt, in seconds; ``None`` for no limit.
        checkpoint: whether the result is checkpointed and the task skipped on a rerun
            whose cache key matches.
        cache_key_fn: optional callable ``(params: dict) -> JSON-able value`` whose value
            is mixed into the cache key (e.g. the digest of an input file).
        tags: free-form labels, shown by listings.
        description: the first line of ``fn``'s docstring, or ``""``.
        executor: ``"local"`` to keep a plain ``def`` task in a worker thread of this
            process whatever the run's executor; ``None`` (default) to follow the run's
            executor (see :mod:`asyncflow._executors`).
        outputs: paths of files the task writes, as :meth:`str.format` templates over
            ``workdir`` and the run's parameters (``"{workdir}/report.md"``). A checkpoint
            stands in for the task only while all of them exist (see
            :func:`missing_outputs`).
        serializer: how its checkpoint stores the result (see
            :mod:`asyncflow._serializers`); ``None`` follows the pipeline's.
    """

    name: str
    fn: Callable[..., Any]
    is_async: bool
    parameters: tuple[tuple[str, bool], ...]
    inputs: Mapping[str, str | tuple[str, ...] | Each] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    wants_params: bool = False
    wants_context: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    checkpoint: bool = True
    cache_key_fn: Callable[[Mapping[str, Any]], Any] | None = None
    tags: tuple[str, ...] = ()
    description: str = ""
    executor: str | None = None
    outputs: tuple[str, ...] = ()
    serializer: Serializer | None = None


def missing_outputs(task: Task, workdir: Path, params: Mapping[str, Any]) -> list[str]:
    """The paths among ``task.outputs`` that do not exist, formatted; ``[]`` when all do.

    Like Luigi's output targets or Snakemake's ``output:``: a task whose output file was
    deleted is run again even though its checkpoint matches, so its files come back.

    Raises:
        PipelineDefinitionError: a template names a field that is neither ``workdir`` nor
            a run parameter, or is malformed.
    """
    missing = []
    for template in task.outputs:
        try:
            path = template.format_map({**params, "workdir": workdir})
        except (KeyError, IndexError, ValueError) as exc:
            raise PipelineDefinitionError(
                f"task {task.name!r}: output {template!r} cannot be formatted ({type(exc).__name__}: "
                f"{exc}); use {{workdir}} and the run's parameters"
            ) from None
        if not os.path.exists(path):
            missing.append(path)
    return missing


_REJECTED_KINDS = frozenset(
    {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY}
)
_NO_INPUTS: Mapping[str, str | tuple[str, ...] | Each] = types.MappingProxyType({})
"""Shared by every task without ``inputs`` (most of them), so a big fan-out holds no empty dicts."""


@dataclass(frozen=True, slots=True)
class _Analysis:
    """What :func:`make_task` reads from a callable, the same for every task made from it.

    ``parameters``, ``wants_params``, ``wants_context``, ``is_async``, ``description``: as
    in :class:`Task` (shared by all its tasks, so a fan-out holds one copy); ``rejected``:
    the first ``*args``, ``**kwargs`` or positional-only parameter, or ``None``.
    """

    parameters: tuple[tuple[str, bool], ...]
    wants_params: bool
    wants_context: bool
    rejected: str | None
    is_async: bool
    description: str


_analyses: dict[int, tuple[weakref.ref[Any], dict[Any, _Analysis]]] = {}
"""``{id(function): (weak reference to it, {how a partial binds it: analysis})}``; ``how`` is
``None`` for the function itself, else ``(number of positional arguments, keyword names)``.
An entry goes with its function (a ``WeakKeyDictionary`` costs a weak reference per look-up)."""


_PARTIAL, _FUNCTION = functools.partial, types.FunctionType  # no module attribute look-ups per task


def _analyse(fn: Callable[..., Any], task_name: str) -> _Analysis:
    """The :class:`_Analysis` of ``fn``, cached per function and way of binding it.

    ``inspect.signature`` dominated building a pipeline (once per task); a 10,000-task
    ``partial`` fan-out of one function now calls it once.

    Raises:
        PipelineDefinitionError: the signature cannot be read.
    """
    base: Any = fn
    how: Any = None
    if type(fn) is _PARTIAL:
        base, how = fn.func, (len(fn.args), tuple(fn.keywords))
    cacheable = type(base) is _FUNCTION
    if cacheable:
        entry = _analyses.get(id(base))
        if entry is not None and entry[0]() is base:
            found = entry[1].get(how)
            if found is not None:
                return found
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise PipelineDefinitionError(f"task {task_name!r}: cannot read its signature") from exc
    documented = fn
    while isinstance(documented, functools.partial):  # not partial's own docstring
        documented = documented.func
    doc = inspect.getdoc(documented) or ""
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    params = signature.parameters.values()
    ordinary = tuple((p.name, p.default is not p.empty) for p in params if p.name not in RESERVED_PARAMETERS)
    analysis = _Analysis(
        parameters=ordinary,
        wants_params="params" in signature.parameters,
        wants_context="context" in signature.parameters,
        rejected=next((p.name for p in params if p.kind in _REJECTED_KINDS), None),
        is_async=inspect.iscoroutinefunction(inner),
        description=doc.splitlines()[0] if doc else "",
    )
    if cacheable:
        entry = _analyses.get(id(base))
        if entry is None or entry[0]() is not base:
            key = id(base)
            entry = _analyses[key] = (weakref.ref(base, lambda _: _analyses.pop(key, None)), {})
        entry[1][how] = analysis
    return analysis


def make_task(
    fn: Callable[..., Any],
    *,
    name: str | None,
    inputs: Mapping[str, str | Sequence[str] | Each] | None,
    after: tuple[str, ...],
    retry: RetryPolicy,
    timeout: float | None,
    checkpoint: bool,
    cache_key_fn: Callable[[Mapping[str, Any]], Any] | None,
    tags: tuple[str, ...],
    executor: str | None = None,
    outputs: Sequence[str] = (),
    serializer: str | Serializer | None = None,
) -> Task:
    """Build a :class:`Task` from a function and the decorator's options.

    Raises:
        InvalidTaskNameError: the name is not a Python identifier. A valid name is
            normalized to Unicode NFKC (as Python normalizes identifiers), so two
            spellings of one name are one task name (then a ``DuplicateTaskError``).
        PipelineDefinitionError: ``fn`` is not callable, takes ``*args``/``**kwargs`` or
            positional-only parameters, ``inputs`` names a parameter ``fn`` lacks,
            ``timeout`` is not a positive number of seconds, or ``executor`` is neither
            ``None`` nor ``"local"``, or ``serializer`` is not ``"json"``, ``"pickle"``,
            ``None`` or a :class:`~asyncflow.Serializer`.
    """
    if not callable(fn):
        raise PipelineDefinitionError(f"a task must be a function, not {fn!r}")
    task_name = name if name is not None else getattr(fn, "__name__", None)
    if not isinstance(task_name, str) or not task_name.isidentifier():
        raise InvalidTaskNameError(
            f"task name {task_name!r} is not a Python identifier; "
            "pass name='...' with letters, digits and underscores only"
        )
    # One spelling per name: Python reads identifiers as NFKC (so a parameter naming this
    # task is NFKC), and an NFC and an NFD spelling of one name print identically.
    task_name = unicodedata.normalize("NFKC", task_name)
    if task_name in RESERVED_PARAMETERS:
        raise InvalidTaskNameError(
            f"task name {task_name!r} is reserved: a parameter named {task_name!r} receives the "
            "run's " + ("parameters" if task_name == "params" else "context") + ", so no task could "
            "depend on this one; pass name='...'"
        )
    analysis = _analyse(fn, task_name)
    if analysis.rejected is not None:
        raise PipelineDefinitionError(
            f"task {task_name!r}: parameter {analysis.rejected!r} must be an ordinary named "
            "parameter (no *args, **kwargs or positional-only parameters)"
        )
    mapping = _checked_inputs(task_name, fn, inputs, analysis.parameters) if inputs else _NO_INPUTS
    if timeout is not None and not timeout > 0:
        raise PipelineDefinitionError(
            f"task {task_name!r}: timeout must be a positive number of seconds or None, not {timeout!r}"
        )
    if executor not in (None, "local"):
        raise PipelineDefinitionError(
            f"task {task_name!r}: executor must be 'local' (always run in this process) or None "
            f"(follow the run's executor), not {executor!r}"
        )
    try:
        chosen = (
            resolve_serializer(serializer, where=f"task {task_name!r}") if serializer is not None else None
        )
    except ValueError as exc:
        raise PipelineDefinitionError(str(exc)) from None
    return _new_task(
        task_name,
        fn,
        analysis,
        mapping,
        after,
        retry,
        timeout,
        checkpoint,
        cache_key_fn,
        tags,
        executor,
        tuple(outputs),
        chosen,
    )


def _checked_inputs(
    task_name: str,
    fn: Callable[..., Any],
    inputs: Mapping[str, str | Sequence[str] | Each],
    parameters: tuple[tuple[str, bool], ...],
) -> Mapping[str, str | tuple[str, ...] | Each]:
    """``inputs`` as :attr:`Task.inputs` holds them (a list of names made a tuple).

    Raises:
        PipelineDefinitionError: a value is not a name, names or ``each(name)``, or a key
            is not one of ``parameters``.
    """
    mapping: dict[str, str | tuple[str, ...] | Each] = {}
    for param_name, source in inputs.items():
        if isinstance(source, str | Each):
            mapping[param_name] = source
        elif isinstance(source, Sequence) and all(isinstance(s, str) for s in source):
            mapping[param_name] = tuple(source)
        else:
            raise PipelineDefinitionError(
                f"task {task_name!r}: inputs[{param_name!r}] must be a task name, a list of "
                f"task names or asyncflow.each(task name), not {source!r}"
            )
    declared = {p for p, _ in parameters}
    for param_name in mapping:
        if param_name not in declared:
            raise PipelineDefinitionError(
                f"task {task_name!r}: inputs maps {param_name!r}, which is not a parameter "
                f"of {getattr(fn, '__qualname__', fn)!r} (its parameters: "
                f"{', '.join(sorted(declared)) or 'none'})"
            )
    return mapping or _NO_INPUTS


_TaskFields = layout_twin(Task)


def _new_task(
    name: str,
    fn: Callable[..., Any],
    analysis: _Analysis,
    inputs: Mapping[str, str | tuple[str, ...] | Each],
    after: tuple[str, ...],
    retry: RetryPolicy,
    timeout: float | None,
    checkpoint: bool,
    cache_key_fn: Callable[[Mapping[str, Any]], Any] | None,
    tags: tuple[str, ...],
    executor: str | None,
    outputs: tuple[str, ...],
    serializer: Serializer | None,
) -> Task:
    """``Task(...)`` of checked values, about ten times faster (see :mod:`asyncflow._frozen`):
    the frozen ``__init__`` was the largest cost of registering a task. Sets every field."""
    t = _TaskFields()
    t.name = name
    t.fn = fn
    t.is_async = analysis.is_async
    t.parameters = analysis.parameters
    t.inputs = inputs
    t.after = after
    t.wants_params = analysis.wants_params
    t.wants_context = analysis.wants_context
    t.retry = retry
    t.timeout = timeout
    t.checkpoint = checkpoint
    t.cache_key_fn = cache_key_fn
    t.tags = tags
    t.description = analysis.description
    t.executor = executor
    t.outputs = outputs
    t.serializer = serializer
    return become(t, Task)

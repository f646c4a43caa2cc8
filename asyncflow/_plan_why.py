"""Why a checkpoint no longer matches its task: the planner's reasons, in words.

When a checkpoint's key does not match, the parts stored beside it (``key_parts``, see
:class:`asyncflow._cache.CacheKey`) tell why, naming what changed: a helper, a constant,
a bound argument, the task's own code, a parameter it reads, its ``cache_key_fn`` input,
an upstream result, or its serializer. Checkpoints of asyncflow 0.1 give ``cache key
changed``. A mapped task's reason counts its instances' plans (:func:`mapped_reason`).
Used by :mod:`asyncflow._plan`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._cache import CacheKey
from ._digest import CodeDigest, describe_change
from ._graph import Node
from ._planned import MAYBE, PLANNED, Action, PlannedTask
from ._store import Checkpoint

__all__ = ["mapped_reason", "why_changed"]


def why_changed(checkpoint: Checkpoint, new: CacheKey, node: Node) -> str:
    """Why ``new``, the key ``node``'s task would have, differs from ``checkpoint``'s key.

    In words naming what changed (see the module docstring); ``cache key changed`` when
    the parts do not tell.
    """
    stored = checkpoint.key_parts
    if stored is None or "code_parts" not in stored:
        return "cache key changed (checkpoint of an older asyncflow)"
    if stored.get("serializer") != new.serializer:
        return f"serializer changed: {stored.get('serializer')} -> {new.serializer}"
    if stored.get("code") != new.code:
        old_parts = stored.get("code_parts")
        return describe_change(old_parts if isinstance(old_parts, dict) else None, _code_of(new))
    old_params = stored.get("params")
    if isinstance(old_params, dict) and old_params != dict(new.params):
        changed = sorted(k for k in new.params if old_params.get(k) != new.params[k])
        if changed:
            noun = "parameter" if len(changed) == 1 else "parameters"
            return f"{noun} {', '.join(changed)} changed"
    if stored.get("extra") != new.extra:
        return "input changed (its cache_key_fn value)"
    old_upstream = stored.get("upstream")
    if old_upstream != [list(pair) for pair in new.upstream]:
        old = {}
        if isinstance(old_upstream, list):
            old = {p[0]: p[1] for p in old_upstream if isinstance(p, list) and len(p) == 2}
        changed = [pair[0] for pair in new.upstream[: len(node.upstream)] if old.get(pair[0]) != pair[1]]
        if changed:
            return f"upstream result changed ({', '.join(changed)})"
        return "upstream wiring changed"
    return "cache key changed"


def _code_of(key: CacheKey) -> CodeDigest:
    return CodeDigest(key.code, key.code_parts)


def mapped_reason(label: str, instances: Sequence[PlannedTask]) -> tuple[Action, str]:
    """A mapped task's action and reason, from its instances' plans (see :class:`PlannedTask`).

    ``label`` (``mapped over urls``), the number of instances, and how many of them
    would run, be cached, fail or be skipped; when every one would run only if an
    upstream result changes, that instance's reason (ending in :data:`MAYBE`).
    """
    n = len(instances)
    head = f"{label}: {n} {'instance' if n == 1 else 'instances'}"
    counts: dict[Action, int] = {}
    maybe = [t for t in instances if t.action is Action.RUN and t.reason.endswith(MAYBE)]
    for t in instances:
        if not (t.action is Action.RUN and t.reason.endswith(MAYBE)):
            counts[t.action] = counts.get(t.action, 0) + 1
    action = next((a for a in (Action.FAIL, Action.SKIP, Action.RUN) if a in counts), Action.CACHED)
    if maybe and not counts:  # all run only if an upstream result changes (one same reason)
        return Action.RUN, f"{head}; {maybe[0].reason}"
    parts = [f"{counts[a]} {PLANNED[a]}" for a in Action if a in counts]
    why = {t.reason for t in instances if t.action is Action.RUN and not t.reason.endswith(MAYBE)}
    if len(why) == 1:  # the instances that would run all would for one reason: say it
        at = [a for a in Action if a in counts].index(Action.RUN)
        parts[at] += f" ({why.pop()})"
    if maybe:
        action = Action.RUN if action is Action.CACHED else action
        parts.append(f"{len(maybe)} would run unless their upstream results come out unchanged")
    return action, f"{head}: {', '.join(parts)}" if parts else head

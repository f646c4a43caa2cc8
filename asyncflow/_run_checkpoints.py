"""The runner's checkpoint side: cache keys, group commits and stale-checkpoint warnings.

When the run has a store, a checkpointed task's key is computed when it becomes ready
(:meth:`CheckpointedRun.base_key`; see :mod:`asyncflow._cache`: code, the parameters it
read last time, its ``cache_key_fn`` value and its upstream tasks' *result digests*); a
task whose stored key matches is CACHED without running (:mod:`asyncflow._checkpointing`).
A task declared ``checkpoint=False`` computes no key at all; its result is hashed by value
only when a task below it needs the digest. An instance of a mapped task is stored under
its items' digest (:func:`~asyncflow._instances.instance_checkpoint`). With a store that stages
(the :class:`~asyncflow.FileStore`), saving is a group commit: the task's journal line is
queued, its worker moves on, and :meth:`CheckpointedRun.commit_staged` (one committer
task per run) makes each batch durable with one fsync and only then reports its tasks
SUCCEEDED and readies their downstream.

:class:`CheckpointedRun` adds these to :class:`~asyncflow._outcomes.RunState`; the
scheduler, :class:`asyncflow._runner.Run`, is its subclass.
"""

from __future__ import annotations

from loguru import logger

from ._cache import (
    DigestView,
    KeyBase,
    base_key,
    effect_edges,
    finish_key,
    result_digest,
    volatile_key,
)
from ._checkpointing import recorded_reads, write_failed
from ._context import log_safely
from ._events import TaskState
from ._graph import Node
from ._mapping import KEYED
from ._outcomes import RunState
from ._serializers import Serializer
from ._store import Checkpoint
from ._task import missing_outputs

__all__ = ["CheckpointedRun"]


class CheckpointedRun(RunState):
    """A run's state with the methods that key, commit and check checkpoints."""

    def spawn(self, wanted: int) -> None:
        """Have ``wanted`` workers waiting to start (the scheduler's; see ``Run.spawn``)."""
        raise NotImplementedError

    async def commit_staged(self) -> None:
        """Make the staged checkpoints durable, a batch at a time, then succeed their tasks.

        Runs in the run's task group while checkpoints are staged. Each commit is shielded,
        so a result computed before a cancellation is still checkpointed (its task then
        ends CANCELLED with the rest, and a rerun finds it cached).
        """
        assert self.stager is not None
        try:
            while self.staged:
                batch, self.staged = self.staged, []
                try:
                    await self.stager.commit()
                except OSError as exc:
                    for i, _, _ in batch:
                        self.fail(i, write_failed(self.nodes[i].name, exc))
                    continue
                for i, checkpoint, key in batch:
                    self.keys[i] = key.key
                    self.digests[i] = checkpoint.cutoff
                    self.marks[i] = KEYED
                    self.sizes[i] = checkpoint.size
                    self.succeed(i, checkpoint.result, TaskState.SUCCEEDED)
                if self.ready:
                    self.spawn(len(self.ready))
        finally:
            self.committing = False

    async def warn_if_stale(self, node: Node, checkpoint: Checkpoint) -> None:
        """Warn when a checkpoint loaded for a partial run no longer matches its task."""
        try:
            base = await self.base_key(node, node.task.serializer or self.serializer)
            stale = finish_key(base, recorded_reads(checkpoint), self.params).key != checkpoint.cache_key
        except Exception:
            stale = True
        if stale:
            log_safely(
                logger.bind(run_id=self.run_id, task=node.name),
                "WARNING",
                "using a stale checkpoint: the task or its upstream changed since it was saved",
            )

    async def base_key(
        self, node: Node, serializer: Serializer, items: tuple[tuple[str, str], ...] = ()
    ) -> KeyBase:
        """What ``node``'s key is built from, once its upstream tasks are done; ``items``:
        an instance's :func:`~asyncflow._instances.item_digests`."""
        digests, results, nodes, expansions = self.digests, self.results, self.nodes, self.expansions
        for u in node.upstream:
            if digests[u] is None:  # not checkpointed: hash its result by value, if it can be
                if u in expansions:
                    self.mapped_digest(u)
                else:
                    digests[u] = result_digest(results[u]) or volatile_key(nodes[u].name, self.run_id)
        # Across an after= edge or below a task that writes files, this task may depend on
        # what the upstream did, not on what it returned: no early cutoff there.
        over = {
            u: self.mark(u)
            or (self.mapped_mark(u) if u in expansions else volatile_key(f"{nodes[u].name}:ran", self.run_id))
            for u in effect_edges(node, nodes)
        }
        view = digests if not over else DigestView(digests, over)
        return await base_key(node, nodes, view, self.params, serializer.name, items)

    def outputs_missing(self, i: int) -> bool:
        """Whether an output file of task ``i`` is missing (so its checkpoint is not enough)."""
        task = self.nodes[i].task
        missing = missing_outputs(task, self.workdir, self.params)
        if missing:
            log_safely(
                logger.bind(run_id=self.run_id, task=self.nodes[i].name),
                "INFO",
                "checkpoint matches but output {} is missing: running it again",
                missing[0],
            )
        return bool(missing)

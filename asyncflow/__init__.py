"""asyncflow: a small async, event-driven DAG runner.

A :class:`Pipeline` holds tasks (coroutine functions, or plain functions run in worker
threads); dependencies are declared by parameter name. Each task starts the moment all of
its upstream tasks have finished, failed attempts are retried with exponential backoff,
and each result is checkpointed (JSON by default; see :class:`Serializer`) so that a rerun
skips exactly the work whose inputs did not change::

    import asyncflow

    pipeline = asyncflow.Pipeline("hello")

    @pipeline.task
    async def numbers() -> list[int]:
        return [1, 2, 3]

    @pipeline.task(retries=2)
    async def total(numbers: list[int]) -> int:
        return sum(numbers)

    result = pipeline.run_sync()          # or: await pipeline.run()
    assert result.tasks["total"].result == 6

The library logs through loguru but adds no sink and is disabled until the application
calls ``logger.enable("asyncflow")``; the command line (``python -m asyncflow``) does that.
"""

from loguru import logger as _logger

from ._cache import file_digest
from ._context import RunContext, TaskLogger
from ._dask import DaskExecutor
from ._digest import code_digest
from ._errors import (
    AsyncflowError,
    CheckpointError,
    CheckpointReadError,
    CycleError,
    DuplicateTaskError,
    ExecutorError,
    ForgottenAwaitError,
    InvalidTaskNameError,
    MappingError,
    MissingCheckpointError,
    ParamError,
    PipelineDefinitionError,
    RunFailedError,
    TaskError,
    TaskPicklingError,
    TaskTimeoutError,
    UnboundParameterError,
    UnknownDependencyError,
    WorkdirLockedError,
)
from ._events import (
    AttemptFailed,
    Event,
    Listener,
    RunFinished,
    RunStarted,
    TaskCached,
    TaskCancelled,
    TaskFailed,
    TaskMapped,
    TaskSkipped,
    TaskStarted,
    TaskState,
    TaskSucceeded,
)
from ._executors import Executor, LocalExecutor, ProcessExecutor
from ._files import read_json, read_text, write_json
from ._files import write_text_atomic as write_text
from ._graph import Graph, Node
from ._pipeline import DEFAULT_WORKDIR, Pipeline
from ._progress import ProgressDisplay
from ._record_files import list_records, read_record
from ._recorder import RunRecorder
from ._records import AttemptRecord, AttemptState, RunRecord, TaskRecord
from ._result import RunResult, TaskRun
from ._retry import RetryPolicy
from ._serializers import JSON, PICKLE, Serializer
from ._store import Checkpoint, CheckpointStore, FileStore, MemoryStore
from ._stream import EventStream
from ._task import Each, Task, each
from ._timeline import render_timeline

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_WORKDIR",
    "JSON",
    "PICKLE",
    "AsyncflowError",
    "AttemptFailed",
    "AttemptRecord",
    "AttemptState",
    "Checkpoint",
    "CheckpointError",
    "CheckpointReadError",
    "CheckpointStore",
    "CycleError",
    "DaskExecutor",
    "DuplicateTaskError",
    "Each",
    "Event",
    "EventStream",
    "Executor",
    "ExecutorError",
    "FileStore",
    "ForgottenAwaitError",
    "Graph",
    "InvalidTaskNameError",
    "Listener",
    "LocalExecutor",
    "MappingError",
    "MemoryStore",
    "MissingCheckpointError",
    "Node",
    "ParamError",
    "Pipeline",
    "PipelineDefinitionError",
    "ProcessExecutor",
    "ProgressDisplay",
    "RetryPolicy",
    "RunContext",
    "RunFailedError",
    "RunFinished",
    "RunRecord",
    "RunRecorder",
    "RunResult",
    "RunStarted",
    "Serializer",
    "Task",
    "TaskCached",
    "TaskCancelled",
    "TaskError",
    "TaskFailed",
    "TaskLogger",
    "TaskMapped",
    "TaskPicklingError",
    "TaskRecord",
    "TaskRun",
    "TaskSkipped",
    "TaskStarted",
    "TaskState",
    "TaskSucceeded",
    "TaskTimeoutError",
    "UnboundParameterError",
    "UnknownDependencyError",
    "WorkdirLockedError",
    "__version__",
    "code_digest",
    "each",
    "file_digest",
    "list_records",
    "read_json",
    "read_record",
    "read_text",
    "render_timeline",
    "write_json",
    "write_text",
]

_logger.disable("asyncflow")

"""The run context a task receives when it declares a ``context`` parameter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunContext"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunContext:
    """Facts about the current run, for a task that declares ``context``.

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        task: the name of the task receiving this context.
        attempt: the number of the current attempt, starting at 1.
        workdir: the run's working directory (created before the first task starts); write
            outputs such as reports here.
        params: the run's parameters (read-only).
        logger: loguru's logger bound with ``run_id`` and ``task`` in ``record["extra"]``.
            Its lines go wherever the host application's loguru configuration sends them.
    """

    run_id: str
    pipeline: str
    task: str
    attempt: int
    workdir: Path
    params: Mapping[str, Any]
    logger: Any

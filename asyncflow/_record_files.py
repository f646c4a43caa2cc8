"""Run records on disk: reading ``<workdir>/runs/<run id>/record.json`` files back.

The format is :mod:`asyncflow._records`; :class:`~asyncflow.RunRecorder` writes the files.
"""

from __future__ import annotations

import os

import anyio
from loguru import logger

from ._files import read_json
from ._records import RECORD_FILE, RunRecord

__all__ = ["list_records", "read_record"]


async def read_record(path: str | os.PathLike[str]) -> RunRecord:
    """Read a ``record.json`` file.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it does not exist).
        ValueError: it is not valid JSON or not a run record (the message names the field).
    """
    return RunRecord.from_json(await read_json(path))


async def list_records(workdir: str | os.PathLike[str]) -> list[RunRecord]:
    """Every readable run record under ``<workdir>/runs/``, newest first (by start time).

    Run folders without a readable ``record.json`` are left out (and logged at DEBUG).
    Returns an empty list when there is no ``runs`` folder.
    """
    runs = anyio.Path(workdir) / "runs"
    records = []
    paths = sorted([path async for path in runs.glob(f"*/{RECORD_FILE}")])
    for path in paths:
        try:
            records.append(await read_record(path))
        except (OSError, ValueError) as exc:
            logger.debug("skipping run record {}: {}", path, exc)
    records.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
    return records

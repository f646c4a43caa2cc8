"""A serializer for pandas DataFrames as Parquet files (the ``[parquet]`` extra).

Install with ``pip install 'asyncflow-dag[parquet]'`` (pandas and pyarrow), then::

    from asyncflow.parquet import ParquetSerializer

    @pipeline.task(serializer=ParquetSerializer())
    def prices(params) -> pandas.DataFrame: ...

The checkpoint is ``<stem>.<digest>.parquet`` beside the pipeline's journal; downstream
tasks receive the DataFrame that ``pandas.read_parquet`` returns, on the first run and
on a rerun alike. Parquet keeps column types (and the index, through pyarrow's pandas
metadata); it does not keep arbitrary Python objects in ``object`` columns. This module
is also the worked example of the :class:`~asyncflow.Serializer` protocol: a name, a
suffix, ``dumps`` and ``loads``.
"""

from __future__ import annotations

import io
from typing import Any

__all__ = ["ParquetSerializer"]


class ParquetSerializer:
    """Stores a ``pandas.DataFrame`` as Parquet through pyarrow.

    Args:
        compression: Parquet compression codec (``"snappy"``, pandas' default; ``"zstd"``,
            ``None``...).

    Raises:
        ImportError: pandas or pyarrow is not installed (the message names the extra).
    """

    name = "parquet"
    suffix = ".parquet"

    def __init__(self, compression: str | None = "snappy") -> None:
        try:
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"ParquetSerializer needs pandas and pyarrow ({exc.name} is missing): "
                "pip install 'asyncflow-dag[parquet]'"
            ) from exc
        self.compression = compression

    def dumps(self, value: Any) -> bytes:
        """The Parquet bytes of DataFrame ``value``.

        Raises:
            TypeError: ``value`` is not a DataFrame.
            Exception: pyarrow cannot convert a column (e.g. mixed Python objects).
        """
        import pandas

        if not isinstance(value, pandas.DataFrame):
            raise TypeError(f"ParquetSerializer stores pandas DataFrames, not {type(value).__qualname__}")
        buffer = io.BytesIO()
        value.to_parquet(buffer, engine="pyarrow", compression=self.compression)
        return buffer.getvalue()

    def loads(self, data: bytes) -> Any:
        """The DataFrame whose Parquet bytes are ``data``.

        Raises:
            Exception: ``data`` is not Parquet (pyarrow's error).
        """
        import pandas

        return pandas.read_parquet(io.BytesIO(data), engine="pyarrow")

    def __repr__(self) -> str:
        return f"ParquetSerializer(compression={self.compression!r})"

"""Files as the ends of a stream, through fsspec: any local path or URL (``s3://``, ``gs://``).

* :class:`FileSource` (type ``file``) reads JSON lines or CSV records from a path or glob, the
  files in name order, line by line. It ends when they run out and keeps no position: a
  restarted stream reads them from the start. A line that is not JSON stops the stream with a
  :class:`StreamError` naming the file and the line.
* :class:`FileSink` (type ``file``) writes one file per batch under a folder, JSON lines or
  Parquet, through the result store's atomic write (:meth:`FsStore.write
  <xlibrary.pipeline.store.fs.FsStore.write>`): a reader sees a whole file or none.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from .base import Batch, StreamError, not_json
from .config import SinkConfig, SourceConfig

if TYPE_CHECKING:
    from ..store.fs import FsStore

__all__ = ["FileSink", "FileSinkConfig", "FileSource", "FileSourceConfig"]


@dataclass(frozen=True)
class FileSourceConfig(SourceConfig):
    """Type ``file``: ``path`` (required), ``format`` (default: from each file's suffix,
    ``.csv`` is CSV, anything else JSON lines), ``storage_options`` (fsspec's)."""

    path: str = field(metadata={"doc": "an fsspec path or glob"})
    format: Literal["jsonl", "csv"] | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)


class FileSource:
    """JSON lines or CSV records from files: an fsspec path or glob (``s3://b/in/*.jsonl``)."""

    config_type = FileSourceConfig

    def __init__(self, name: str, config: FileSourceConfig) -> None:
        self.name = name
        self.config = config
        self._records: Iterator[Any] | None = None
        self.read_count = 0

    def open(self) -> None:
        import fsspec

        files = fsspec.open_files(self.config.path, "rt", **self.config.storage_options)
        if not files:
            raise StreamError(f"source {self.name!r}: no file matches {self.config.path!r}")
        self._records = itertools.chain.from_iterable(self._lines(f) for f in files)

    def _lines(self, opened: Any) -> Iterator[Any]:
        fmt = self.config.format or ("csv" if opened.path.endswith(".csv") else "jsonl")
        with opened as handle:
            text = handle.read()
        if fmt == "csv":
            yield from csv.DictReader(io.StringIO(text))
            return
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    what = f"source {self.name!r}: line {number} of {opened.path}"
                    raise not_json(what, exc) from exc

    def read(self, max_records: int, timeout: float) -> Batch | None:
        if self._records is None:
            raise StreamError(f"source {self.name!r}: call open() before reading")
        chunk = list(itertools.islice(self._records, max_records))
        if not chunk:
            return None
        self.read_count += len(chunk)
        return Batch(chunk, position=self.read_count)

    def commit(self, batch: Batch) -> None:
        pass

    def lag(self) -> int | None:
        return None

    def close(self) -> None:
        self._records = None


@dataclass(frozen=True)
class FileSinkConfig(SinkConfig):
    """Type ``file``: ``path`` (a folder, required), ``format`` (``jsonl``, the default, or
    ``parquet``), ``storage_options`` (fsspec's)."""

    path: str = field(metadata={"doc": "an fsspec folder"})
    format: Literal["jsonl", "parquet"] = "jsonl"
    storage_options: dict[str, Any] = field(default_factory=dict)


class FileSink:
    """One file per batch under an fsspec folder: ``part-<stream run>-<batch>.<format>``,
    written whole (see the module docstring)."""

    config_type = FileSinkConfig

    def __init__(self, name: str, config: FileSinkConfig) -> None:
        self.name = name
        self.config = config
        self._store: FsStore | None = None
        self._run = uuid.uuid4().hex[:8]
        self._count = 0

    def open(self) -> None:
        from ..store.fs import FsStore

        try:
            store = FsStore(self.config.path, self.config.storage_options)
        except ConfigError as exc:
            raise StreamError(f"sink {self.name!r}: {exc}") from exc
        store.fs.makedirs(store.root, exist_ok=True)
        self._store = store

    def write(self, records: list[Any]) -> None:
        if not records:
            return
        if self._store is None:
            raise StreamError(f"sink {self.name!r}: call open() before writing")
        name = f"part-{self._run}-{self._count:08d}.{self.config.format}"
        self._store.write(name, self._encode(records))
        self._count += 1

    def _encode(self, records: list[Any]) -> bytes:
        if self.config.format == "jsonl":
            return "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
        import pandas as pd

        buffer = io.BytesIO()
        pd.DataFrame.from_records(records).to_parquet(buffer, index=False)
        return buffer.getvalue()

    def close(self) -> None:
        self._store = None

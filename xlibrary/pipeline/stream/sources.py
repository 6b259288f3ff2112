"""Sources of a stream: Kafka, Redis Streams, files (fsspec), and any iterable.

``make_source(name, config)`` turns what ``StreamPipeline.add_source`` was given into a
:class:`~.base.Source`: a dict with a ``type`` (``kafka``, ``redis``, ``file``), or an iterable.
Files and iterables end when they run out; they keep no position across restarts (a restarted
stream reads them from the start). Kafka and Redis Streams never end, and commit positions.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .base import Batch, Source, StreamError

__all__ = ["FileSource", "IterableSource", "make_source"]

SOURCE_TYPES = ("kafka", "redis", "file", "iterable")


def check_keys(config: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Raise StreamError for a key ``config`` should not have, with the closest valid one."""
    allowed = list(allowed)
    for key in config:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise StreamError(
                f"{where}: unknown key {key!r}{hint} (valid keys: {', '.join(sorted(allowed))})"
            )


def make_source(name: str, config: Any) -> Source:
    """The source ``add_source(name, config)`` describes."""
    if isinstance(config, Mapping):
        kind = config.get("type")
        if kind == "kafka":
            from .kafka import KafkaSource

            return KafkaSource(name, config)
        if kind == "redis":
            from .redis_streams import RedisStreamSource

            return RedisStreamSource(name, config)
        if kind == "file":
            return FileSource(name, config)
        if kind == "iterable":
            check_keys(config, ("type", "records", "batch_size", "batch_timeout"), name)
            return IterableSource(name, config.get("records", ()))
        close = difflib.get_close_matches(str(kind), SOURCE_TYPES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise StreamError(
            f"source {name!r}: unknown type {kind!r}{hint}; use one of {', '.join(SOURCE_TYPES)} "
            "(or pass an iterable)"
        )
    if isinstance(config, Iterable) and not isinstance(config, str | bytes):
        return IterableSource(name, config)
    raise StreamError(
        f"source {name!r} must be a config dict with a 'type' (kafka, redis, file) or an "
        f"iterable of records, got {type(config).__name__}"
    )


class IterableSource:
    """Records from an iterable (a list, a generator): for notebooks and tests."""

    def __init__(self, name: str, records: Iterable[Any]) -> None:
        self.name = name
        self._records: Iterator[Any] = iter(records)
        self._done = False
        self.read_count = 0

    def open(self) -> None:
        pass

    def read(self, max_records: int, timeout: float) -> Batch | None:
        """Up to ``max_records``; a slow generator's batch goes once ``timeout`` has passed
        (checked between records: one ``next()`` that blocks is waited for)."""
        if self._done:
            return None
        deadline = time.monotonic() + timeout
        chunk: list[Any] = []
        for record in self._records:
            chunk.append(record)
            if len(chunk) >= max_records or time.monotonic() >= deadline:
                break
        else:
            self._done = True
            if not chunk:
                return None
        self.read_count += len(chunk)
        return Batch(chunk, position=self.read_count)

    def commit(self, batch: Batch) -> None:
        pass

    def lag(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class FileSource:
    """JSON lines or CSV records from files: an fsspec path or glob (``s3://b/in/*.jsonl``).

    Config: ``path`` (required), ``format`` (``jsonl`` or ``csv``; default from the suffix),
    ``storage_options``. Files are read in name order, line by line.
    """

    KEYS = ("type", "path", "format", "storage_options", "batch_size", "batch_timeout")

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        check_keys(config, self.KEYS, f"source {name!r}")
        if not isinstance(config.get("path"), str):
            raise StreamError(f"source {name!r}: 'path' (an fsspec path or glob) is required")
        self.name = name
        self.path: str = config["path"]
        self.format = config.get("format")
        if self.format not in (None, "jsonl", "csv"):
            raise StreamError(f"source {name!r}: format must be 'jsonl' or 'csv'")
        self.storage_options = dict(config.get("storage_options") or {})
        self._records: Iterator[Any] | None = None
        self.read_count = 0

    def open(self) -> None:
        import fsspec

        files = fsspec.open_files(self.path, "rt", **self.storage_options)
        if not files:
            raise StreamError(f"source {self.name!r}: no file matches {self.path!r}")
        self._records = itertools.chain.from_iterable(self._lines(f) for f in files)

    def _lines(self, opened: Any) -> Iterator[Any]:
        fmt = self.format or ("csv" if opened.path.endswith(".csv") else "jsonl")
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
                    raise StreamError(
                        f"source {self.name!r}: line {number} of {opened.path} is not JSON: {exc}"
                    ) from exc

    def read(self, max_records: int, timeout: float) -> Batch | None:
        assert self._records is not None, "open() first"
        chunk = list(itertools.islice(self._records, max_records))
        if not chunk:
            return None
        self.read_count += len(chunk)
        return Batch(chunk, position=self.read_count, read_at=time.time())

    def commit(self, batch: Batch) -> None:
        pass

    def lag(self) -> int | None:
        return None

    def close(self) -> None:
        self._records = None

"""The parts of a stream: what a source, a sink and a stage task promise.

A **source** hands out micro-batches and commits them when told: the runner calls
``commit(batch)`` only after every sink has durably written what the batch became, so a
source whose commits survive a crash (Kafka consumer offsets, Redis Streams acknowledgements)
gives at-least-once delivery: a batch read but not committed is read again after a restart.
A source may be called from one thread only (the runner's source thread): ``read``,
``commit`` and ``close`` all come from it.

A **sink** writes a list of records and returns only once they are durable (committed to the
database, flushed to Kafka, written to the file); it is called from the runner's sink thread.

Records are plain Python values, usually dicts (decoded JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import PipelineError

__all__ = ["Batch", "Sink", "Source", "StreamError", "StreamTask"]


class StreamError(PipelineError):
    """A stream cannot start, or stopped on a record it could not process."""


@dataclass
class Batch:
    """A micro-batch: its records, and what the source needs to commit it."""

    records: list[Any]
    position: Any = None
    """Source-specific: Kafka offsets by partition, Redis stream entry ids, a file line."""
    seq: int = 0
    """The batch's number in this run, from 0 (set by the runner)."""
    read_at: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    """Where records come from."""

    name: str

    def open(self) -> None:
        """Connect (and join a consumer group); called once, before the first read."""
        ...

    def read(self, max_records: int, timeout: float) -> Batch | None:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first.

        An empty batch means nothing arrived in time; ``None`` means the source has ended
        (files and iterables end; Kafka and Redis never do).
        """
        ...

    def commit(self, batch: Batch) -> None:
        """Mark ``batch`` done for good: it will not be read again after a restart."""
        ...

    def lag(self) -> int | None:
        """Records waiting at the source that this consumer has not read, if it can tell."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where results go."""

    name: str

    def open(self) -> None: ...

    def write(self, records: list[Any]) -> None:
        """Write ``records`` durably; return only once they are committed."""
        ...

    def close(self) -> None: ...


class StreamTask:
    """A stage of a stream: subclass it and implement ``process_batch``.

    ``process_batch(batch)`` takes a list of records and returns a list (any length: a stage
    may filter, expand or aggregate). ``setup()`` runs once before the first batch and
    ``teardown()`` once after the last. State lives on the instance: a stage added with
    ``parallelism=1`` is one instance that sees every batch in order, so its state carries
    across the whole stream; a stage with ``parallelism=N`` runs N independent copies, one per
    chunk of each batch, and must not rely on state.
    """

    def __init__(self) -> None:
        pass

    def setup(self) -> None:
        """Called once, before the first batch (on each copy of a parallel stage)."""

    def teardown(self) -> None:
        """Called once, after the last batch."""

    def process_batch(self, batch: list[Any]) -> list[Any]:
        raise StreamError(f"{type(self).__name__} must implement process_batch(batch) -> list")

    @property
    def name(self) -> str:
        return type(self).__name__


def option(config: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    """``config[key]`` checked against ``kind`` (or ``default``), for source/sink configs."""
    value = config.get(key, default)
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    raise StreamError(
        f"{where}: {key!r} must be {kind.__name__}, got {type(value).__name__} {value!r}"
    )

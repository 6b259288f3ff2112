"""The parts of a stream: what a source, a sink and a stage task promise.

A **source** hands out micro-batches and commits them when told: the engine calls
``commit(batch)`` only after every sink has durably written what the batch became, so a
source whose commits survive a crash (Kafka consumer offsets, Redis Streams acknowledgements)
gives at-least-once delivery: a batch read but not committed is read again after a restart.
A source may be called from one thread only (the engine's source thread): ``read``,
``commit`` and ``close`` all come from it.

A **sink** writes a list of records and returns only once they are durable (committed to the
database, flushed to Kafka, written to the file); it is called from the engine's sink thread.
It raises :class:`StreamError` for records it can never take as they are (the stream stops
there), and :class:`StreamDeliveryError` (or any other exception) for a failure that may pass,
such as a broker or database out of reach: the batch is tried again first.

Records are plain Python values, usually dicts (decoded JSON).

New source and sink types are registered by name (:mod:`~xlibrary.pipeline.stream.registry`);
instances are also taken as they are by ``add_source``/``add_sink``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from ..errors import StreamDeliveryError, StreamError, missing_extra

__all__ = ["Batch", "Sink", "Source", "StreamDeliveryError", "StreamError", "StreamTask"]


@dataclass
class Batch:
    """A micro-batch: its records, and what the source needs to commit it."""

    records: list[Any]
    position: Any = None
    """Source-specific: Kafka offsets by partition, Redis stream entry ids, a file line."""
    seq: int = 0
    """The batch's number in this run, from 0 (set by the engine)."""
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
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


@runtime_checkable
class Sink(Protocol):
    """Where results go."""

    name: str

    def open(self) -> None: ...

    def write(self, records: list[Any]) -> None:
        """Write ``records`` durably; return only once they are committed. Raise
        :class:`StreamError` for records that can never be written as they are,
        :class:`StreamDeliveryError` for a failure worth trying again."""
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


def import_extra(module: str, *, package: str, extra: str, feature: str) -> ModuleType:
    """The optional dependency ``module``, or :class:`MissingExtraError` naming the extra
    that brings it (``package`` is its name on PyPI)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(package, extra, feature) from exc


def not_json(what: str, error: ValueError, fix: str = "") -> StreamError:
    """The error for a record that is not JSON: ``what`` names it, ``fix`` says what to do."""
    return StreamError(f"{what} is not JSON ({error}){f'; {fix}' if fix else ''}")

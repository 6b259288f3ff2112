"""In-process ends of a stream: records from an iterable, results to a callable.

For notebooks, tests and glue code: ``add_source(name, records)`` with a list or a generator,
``add_sink(name, results.extend)`` with a function (or their dict forms, types ``iterable``
and ``callable``). An iterable ends when it runs out and keeps no position: a restarted stream
reads a list again from its start (a generator, once spent, is empty).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .base import Batch
from .config import SinkConfig, SourceConfig

__all__ = ["CallableSink", "CallableSinkConfig", "IterableSource", "IterableSourceConfig"]


@dataclass(frozen=True)
class IterableSourceConfig(SourceConfig):
    """Type ``iterable``: ``records``, any iterable (a list, a generator)."""

    records: Iterable[Any] = ()


class IterableSource:
    """Records from an iterable (a list, a generator): for notebooks and tests."""

    config_type = IterableSourceConfig

    def __init__(self, name: str, config: IterableSourceConfig | Iterable[Any]) -> None:
        self.name = name
        records = config.records if isinstance(config, IterableSourceConfig) else config
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


@dataclass(frozen=True)
class CallableSinkConfig(SinkConfig):
    """Type ``callable``: ``function``, called with each batch's list of records."""

    function: Callable[[list[Any]], object] = field(
        metadata={"doc": "a callable taking a list of records"}
    )


class CallableSink:
    """Calls a function with each batch's list of records (``results.extend`` works)."""

    config_type = CallableSinkConfig

    def __init__(
        self, name: str, config: CallableSinkConfig | Callable[[list[Any]], object]
    ) -> None:
        self.name = name
        if not isinstance(config, CallableSinkConfig):
            config = CallableSinkConfig.from_mapping(name, {"function": config})
        self.function = config.function

    def open(self) -> None:
        pass

    def write(self, records: list[Any]) -> None:
        self.function(records)

    def close(self) -> None:
        pass

"""Stream processing: micro-batches from a source, through stages, into sinks.

Source and sink types are registered by name in ``sources`` and ``sinks`` (see
:mod:`~xlibrary.pipeline.stream.registry`); a type's config is a :class:`SourceConfig` or
:class:`SinkConfig` dataclass, read from the dict once, when the stream is declared.
"""

from __future__ import annotations

from .base import Batch, Sink, Source, StreamDeliveryError, StreamError, StreamTask
from .config import SinkConfig, SourceConfig
from .engine import StreamRun
from .pipeline import StreamPipeline
from .registry import sinks, sources

__all__ = [
    "Batch",
    "Sink",
    "SinkConfig",
    "Source",
    "SourceConfig",
    "StreamDeliveryError",
    "StreamError",
    "StreamPipeline",
    "StreamRun",
    "StreamTask",
    "sinks",
    "sources",
]

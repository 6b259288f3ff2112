"""Stream processing: micro-batches from a source, through stages, into sinks."""

from __future__ import annotations

from .base import Batch, Sink, Source, StreamError, StreamTask
from .pipeline import StreamPipeline
from .runner import StreamRun

__all__ = ["Batch", "Sink", "Source", "StreamError", "StreamPipeline", "StreamRun", "StreamTask"]

"""``StreamPipeline``: declare a stream (a source, stages, sinks) and run it.

::

    stream = StreamPipeline("real_time_analytics")
    stream.add_source("data_stream", {"type": "kafka", "topic": "sensor_data", "batch_size": 100})
    stream.add_stage(DataProcessor(), parallelism=2)
    stream.add_stage(Aggregator(), parallelism=1)
    stream.add_sink("results", {"type": "database", "connection": "postgresql://localhost/analytics"})
    stream.start()                       # until the source ends, stop() or Ctrl-C
    handle = stream.start(background=True); ...; handle.stop()

See :mod:`~xlibrary.pipeline.stream.engine` for the guarantees (order, at-least-once,
backpressure, draining on stop, bad records), and :mod:`~xlibrary.pipeline.stream.registry`
for what ``add_source``/``add_sink`` take (a config dict of a registered type, an instance).
Configs are checked when added, into value objects: a run reads nothing else.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import StreamError, StreamTask
from .engine import StreamRun
from .registry import SinkSpec, SourceSpec, sink_spec, source_spec
from .stages import DaskStage, Stage, StageExecutor

if TYPE_CHECKING:
    from ..manager import PipelineManager

__all__ = ["StreamPipeline"]

logger = logging.getLogger("xlibrary.pipeline.stream")

ON_ERROR = ("fail", "skip", "dead_letter")


class StreamPipeline:
    """A stream: one source, stages in order, one or more sinks.

    ``batch_size`` (default 100, or the source config's ``batch_size``) and ``batch_timeout``
    (seconds to wait before a short batch goes, default 1.0) shape the micro-batches;
    ``max_in_flight`` (default 4) bounds the batches between reading and committing;
    ``on_error`` is ``"fail"`` (default), ``"skip"`` or ``"dead_letter"`` (with ``dead_letter``,
    a sink config or callable, receiving ``{"record", "stage", "error", "batch"}``). With a
    ``manager`` whose runs go to a ``dask.distributed`` cluster, parallel stages run their
    chunks there; otherwise on local threads.
    """

    def __init__(
        self,
        name: str,
        *,
        batch_size: int | None = None,
        batch_timeout: float | None = None,
        max_in_flight: int = 4,
        on_error: str = "fail",
        dead_letter: Any = None,
        manager: PipelineManager | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise StreamError(f"a stream pipeline needs a name, got {name!r}")
        if on_error not in ON_ERROR:
            raise StreamError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        if on_error == "dead_letter" and dead_letter is None:
            raise StreamError(
                "on_error='dead_letter' needs dead_letter=: a sink config "
                '({"type": "file", "path": ...}) or a callable taking a list of records'
            )
        if max_in_flight < 1:
            raise StreamError(f"max_in_flight must be 1 or more, got {max_in_flight}")
        self.name = name
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.max_in_flight = max_in_flight
        self.on_error = on_error
        # checked now, like every sink: a bad config fails here, not when the stream starts
        self._dead_letter = sink_spec("dead_letter", dead_letter) if dead_letter else None
        self.manager = manager
        self._source: SourceSpec | None = None
        self._stages: list[Stage] = []
        self._sinks: list[SinkSpec] = []
        self._run: StreamRun | None = None

    # -- declaring ------------------------------------------------------------------------------
    def add_source(self, name: str, config: Any) -> StreamPipeline:
        """The source: a config dict of a registered type (``{"type": "kafka" | "redis" |
        "file", ...}``, checked now), a :class:`~.base.Source`, or an iterable of records."""
        if self._source is not None:
            raise StreamError(
                f"stream {self.name!r} already has source {self._source.name!r}; a stream reads "
                "one source (merge topics in the source config)"
            )
        self._source = source_spec(name, config)  # checks the config now, connects at start
        return self

    def add_stage(
        self, task: StreamTask, parallelism: int = 1, *, name: str | None = None
    ) -> StreamPipeline:
        """A stage: ``task.process_batch`` on every micro-batch, split into ``parallelism``
        chunks processed at once by independent copies (1: one instance, state kept)."""
        if not isinstance(task, StreamTask):
            raise StreamError(
                f"add_stage takes a StreamTask instance, got {task!r}; subclass StreamTask and "
                "implement process_batch(batch)"
            )
        if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
            raise StreamError(
                f"parallelism must be a whole number of 1 or more, got {parallelism!r}"
            )
        stage_name = name or task.name
        taken = {stage.name for stage in self._stages}
        if stage_name in taken:
            stage_name = f"{stage_name}_{len(self._stages)}"
        self._stages.append(Stage(task, parallelism, stage_name))
        return self

    def add_sink(self, name: str, config: Any) -> StreamPipeline:
        """A sink: a config dict of a registered type (``{"type": "database" | "kafka" |
        "file", ...}``, checked now), a :class:`~.base.Sink`, or a callable taking a list of
        records."""
        if any(existing.name == name for existing in self._sinks):
            raise StreamError(f"stream {self.name!r} already has a sink named {name!r}")
        self._sinks.append(sink_spec(name, config))  # checks the config now, connects at start
        return self

    # -- running --------------------------------------------------------------------------------
    def start(self, *, background: bool = False) -> Any:
        """Run the stream: until the source ends, ``stop()`` is called, or Ctrl-C.

        Blocking (the default), it returns the run's metrics, and raises ``StreamError`` when
        the stream stopped on an error. With ``background=True`` it returns the running
        :class:`StreamRun` at once (``stop()``, ``join()``, ``metrics()``, ``error``).
        """
        if self._run is not None and self._run.running:
            raise StreamError(f"stream {self.name!r} is already running; stop() it first")
        run = self._prepare()
        self._run = run.start()
        if background:
            return run
        try:
            while not run.join(0.2):
                pass
        except KeyboardInterrupt:
            logger.info("stream %r: interrupted; draining the batches in flight", self.name)
            run.stop()
        if run.error is not None:
            raise run.error
        return run.metrics()

    def stop(self, timeout: float | None = None) -> None:
        """Stop reading; the batches in flight go through the stages and sinks and are
        committed before this returns (or ``timeout`` passes)."""
        if self._run is not None:
            self._run.stop(timeout)

    def metrics(self) -> dict[str, Any]:
        """Per stage: records in and out, batch latency, throughput; for the stream: records
        read and written, batches in flight, consumer lag (Kafka, Redis), dead letters."""
        if self._run is None:
            return {"pipeline": self.name, "running": False}
        return self._run.metrics()

    def _prepare(self) -> StreamRun:
        if self._source is None:
            raise StreamError(f"stream {self.name!r} has no source; add one with add_source")
        if not self._sinks:
            raise StreamError(f"stream {self.name!r} has no sink; add one with add_sink")
        options = self._source.options
        batch_size = self.batch_size or options.batch_size or 100
        batch_timeout = self.batch_timeout or options.batch_timeout or 1.0
        chunked: Callable[[Stage], StageExecutor] | None = None
        client = self.manager.client if self.manager is not None else None
        if client is not None:
            prefix = f"{self.name}-{secrets.token_hex(3)}"

            def chunked(stage: Stage) -> StageExecutor:
                return DaskStage(stage, client, prefix)

        return StreamRun(
            self.name,
            self._source.make(),
            self._stages,
            [sink.make() for sink in self._sinks],
            batch_size=int(batch_size),
            batch_timeout=float(batch_timeout),
            max_in_flight=self.max_in_flight,
            on_error=self.on_error,
            dead_letter=self._dead_letter.make() if self._dead_letter else None,
            chunked=chunked,
        )

    def __repr__(self) -> str:
        stages = ", ".join(f"{s.name}x{s.parallelism}" for s in self._stages)
        source = self._source.name if self._source else None
        sinks = [sink.name for sink in self._sinks]
        return f"StreamPipeline({self.name!r}, source={source!r}, stages=[{stages}], sinks={sinks})"

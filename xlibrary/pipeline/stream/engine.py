"""The stream engine: micro-batches from a source, through the stages, into the sinks.

:class:`StreamRun` is one run of a stream. Threads and their order:

* the **source thread** reads micro-batches (``batch_size`` records, or fewer once
  ``batch_timeout`` passes) and is the only thread that touches the source: it also commits;
* one **stage thread** per stage takes batches in order and passes them on in order. A stage of
  ``parallelism=N`` splits each batch into N contiguous chunks, processed at once by N copies of
  the task (threads here, or Dask tasks on a cluster) and put back together in order; a stage of
  parallelism 1 is one instance seeing every batch in order, so its state is exact (how a stage
  does it: :mod:`~xlibrary.pipeline.stream.stages`);
* the **sink thread** writes each batch to every sink, then asks the source to commit it. A
  write that fails is tried again (``SINK_RETRIES`` times in all, with a growing pause) unless
  the sink raised a plain :class:`StreamError`: records it can never take as they are.

Guarantees:

* **Order**: records leave in the order they arrived, batch after batch, chunk after chunk.
* **At-least-once**: a batch is committed at the source only after every sink has written it
  durably, and batches are committed in order. A crash between the sink and the commit makes
  the source deliver the batch again after a restart (a sink with an upsert key then writes the
  same rows again, leaving no duplicates).
* **Bounded memory**: at most ``max_in_flight`` batches exist between reading and committing;
  when a sink is slow the source waits (backpressure).
* **Stop drains**: ``stop()`` stops reading; the batches in flight go through and are committed.
* **Bad records**: with ``on_error="fail"`` (default) a batch whose processing raises stops the
  stream and neither it nor any later batch is committed (they are read again next time); with
  ``"skip"`` the batch is retried record by record and the records that raise are dropped,
  counted and logged; with ``"dead_letter"`` they also go to the dead-letter sink, with the
  stage and the error. A stateful stage's state is restored before the retry, so a failed
  record leaves no trace in it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .base import Batch, Sink, Source, StreamDeliveryError, StreamError
from .stages import SerialStage, Stage, StageExecutor, ThreadedStage

__all__ = ["BatchStats", "DeadLetter", "StreamRun", "write_with_retries"]

logger = logging.getLogger("xlibrary.pipeline.stream")

_END = object()
SINK_RETRIES = 3
LAG_EVERY = 1.0
"""Seconds between two lag readings while batches come (one per read when idle)."""
LAG_IDLE_EVERY = 0.1
"""Seconds between two lag readings when reads come back empty (at most one per read)."""


@dataclass
class BatchStats:
    """What one part of a stream (the source, a stage, the sinks) did with its batches."""

    records_in: int = 0
    records_out: int = 0
    batches: int = 0
    busy: float = 0.0
    last_latency: float = 0.0
    skipped: int = 0

    def add(self, records_in: int, records_out: int, seconds: float) -> None:
        self.records_in += records_in
        self.records_out += records_out
        self.batches += 1
        self.busy += seconds
        self.last_latency = seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "records_out": self.records_out,
            "batches": self.batches,
            "batch_latency": self.last_latency,
            "mean_batch_latency": self.busy / self.batches if self.batches else 0.0,
            "throughput": self.records_out / self.busy if self.busy else 0.0,
            "skipped": self.skipped,
        }


@dataclass
class DeadLetter:
    """A record a stage raised on, set aside (``on_error="skip"`` or ``"dead_letter"``)."""

    record: Any
    stage: str
    error: str


class StreamRun:
    """One run of a stream pipeline (see the module docstring)."""

    def __init__(
        self,
        pipeline: str,
        source: Source,
        stages: Sequence[Stage],
        sinks: Sequence[Sink],
        *,
        batch_size: int,
        batch_timeout: float,
        max_in_flight: int,
        on_error: str,
        dead_letter: Sink | None,
        chunked: Callable[[Stage], StageExecutor] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.stages = list(stages)
        self.sinks = list(sinks)
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.max_in_flight = max_in_flight
        self.on_error = on_error
        self.dead_letter = dead_letter
        self._chunked: Callable[[Stage], StageExecutor] = chunked or ThreadedStage
        self._stop = threading.Event()
        self._done = threading.Event()
        self._slots = threading.Semaphore(max_in_flight)
        self._queues: list[queue.Queue[Any]] = [queue.Queue() for _ in range(len(stages) + 1)]
        self._commits: queue.Queue[Batch] = queue.Queue()
        self._sink_done = threading.Event()
        self._lock = threading.Lock()
        self._failed_seq: int | None = None
        self.error: BaseException | None = None
        self.in_flight = 0
        self.max_seen_in_flight = 0
        self.counters = {stage.name: BatchStats() for stage in self.stages}
        self.source_counter = BatchStats()
        self.sink_counter = BatchStats()
        self.dead_letters = 0
        self.lag: int | None = None
        self.started = 0.0
        self.first_read: float | None = None
        """When the first record came (not when the run started: a group join is no work)."""
        self.last_written: float | None = None
        """When the sinks last wrote a batch; throughput counts from first_read to this."""
        self.finished: float | None = None
        self._threads: list[threading.Thread] = []
        self._executors: list[StageExecutor] = []

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> StreamRun:
        self.started = time.time()
        executors = [self._executor(stage) for stage in self.stages]
        for sink in [*self.sinks, *([self.dead_letter] if self.dead_letter else [])]:
            sink.open()
        for executor in executors:
            executor.setup()
        self._executors = executors
        self._threads = [threading.Thread(target=self._read_loop, name="stream-source")]
        for i, stage in enumerate(self.stages):
            self._threads.append(
                threading.Thread(
                    target=self._stage_loop, args=(i, stage), name=f"stream-stage-{stage.name}"
                )
            )
        self._threads.append(threading.Thread(target=self._sink_loop, name="stream-sink"))
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop reading; the batches in flight go through and are committed."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True when it has."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def _finish(self) -> None:
        for executor in self._executors:
            try:
                executor.teardown()
            except Exception:
                logger.exception("stream %r: a stage's teardown failed", self.pipeline)
        for sink in [*self.sinks, *([self.dead_letter] if self.dead_letter else [])]:
            try:
                sink.close()
            except Exception:
                logger.exception("stream %r: closing sink %r failed", self.pipeline, sink.name)
        self.finished = time.time()
        self._done.set()

    def _fail(self, seq: int, error: BaseException, cause: BaseException | None = None) -> None:
        error.__cause__ = cause
        with self._lock:
            if self._failed_seq is None or seq < self._failed_seq:
                self._failed_seq = seq
            if self.error is None:
                self.error = error
        self._stop.set()

    def _abandoned(self, batch: Batch) -> bool:
        """A batch after a failed one: it must not be committed (it is read again later)."""
        failed = self._failed_seq
        return failed is not None and batch.seq >= failed

    # -- source -------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        source = self.source
        try:
            source.open()
            seq = 0
            last_lag = 0.0  # monotonic
            while not self._stop.is_set():
                self._commit_ready()
                if not self._slots.acquire(blocking=False):
                    # backpressure: max_in_flight batches are on their way; only this thread
                    # commits (and so frees a slot), so wait for the next one to be written
                    self._commit_ready(wait=0.05)
                    continue
                started = time.time()
                batch = source.read(self.batch_size, self.batch_timeout)
                if batch is None or not (batch.records or batch.position):
                    self._slots.release()
                    if batch is None:
                        break
                    # idle: a lag reading per poll, so it reaches 0 a poll after the last read
                    last_lag = self._read_lag(last_lag, LAG_IDLE_EVERY)
                    continue
                # no records but a position (entries deleted while pending): it goes through,
                # past the stages and sinks, to be committed in its turn
                batch.seq = seq
                seq += 1
                with self._lock:
                    self.in_flight += 1
                    self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
                self.source_counter.add(0, len(batch.records), time.time() - started)
                if self.first_read is None and batch.records:
                    self.first_read = time.time()  # after the count: never before a record
                self._queues[0].put(batch)
                last_lag = self._read_lag(last_lag, LAG_EVERY)
        except BaseException as exc:
            self._fail(-1, StreamError(f"source {source.name!r} failed: {exc}"), exc)
            logger.error("stream %r: source %r failed: %s", self.pipeline, source.name, exc)
        finally:
            self._queues[0].put(_END)
            while not (self._sink_done.is_set() and self._commits.empty()):
                self._commit_ready(wait=0.05)
            try:
                self.lag = source.lag()
                source.close()
            except Exception:
                logger.exception("stream %r: closing source %r failed", self.pipeline, source.name)
            self._finish()

    def _read_lag(self, last: float, every: float) -> float:
        """Read the source's lag when ``every`` seconds have passed since ``last``; when it
        was read last."""
        now = time.monotonic()
        if now - last < every:
            return last
        self.lag = self.source.lag()
        return now

    def _commit_ready(self, wait: float = 0.0) -> None:
        """Commit, in order, the batches the sinks have written."""
        while True:
            try:
                batch = self._commits.get(timeout=wait) if wait else self._commits.get_nowait()
            except queue.Empty:
                return
            wait = 0.0
            try:
                if batch.meta.get("commit", True):
                    self.source.commit(batch)
            except Exception as exc:
                self._fail(batch.seq, StreamError(f"committing batch {batch.seq} failed: {exc}"))
            finally:
                with self._lock:
                    self.in_flight -= 1
                self._slots.release()

    # -- stages -------------------------------------------------------------------------------
    def _executor(self, stage: Stage) -> StageExecutor:
        if stage.parallelism > 1:
            return self._chunked(stage)
        return SerialStage(stage)

    def _stage_loop(self, index: int, stage: Stage) -> None:
        inbox, outbox = self._queues[index], self._queues[index + 1]
        while True:
            batch = inbox.get()
            if batch is _END:
                outbox.put(_END)
                return
            try:
                if batch.records and not self._abandoned(batch):  # no records: no call
                    self._process(index, stage, batch)
            except BaseException as exc:  # a bug, not a record: stop, but keep draining
                self._fail(batch.seq, StreamError(f"stage {stage.name!r} broke: {exc}"), exc)
            outbox.put(batch)  # an abandoned batch goes on too: the sink thread releases it

    def _process(self, index: int, stage: Stage, batch: Batch) -> None:
        executor = self._executors[index]
        started = time.time()
        records = batch.records
        state = executor.snapshot() if self.on_error != "fail" else None
        try:
            batch.records = executor.process(records)
        except Exception as exc:
            if self.on_error == "fail":
                self._fail(
                    batch.seq,
                    StreamError(
                        f"stage {stage.name!r} of stream {self.pipeline!r} failed on batch "
                        f"{batch.seq}: {type(exc).__name__}: {exc}; nothing of it was "
                        "committed (on_error='skip' or 'dead_letter' keeps going)"
                    ),
                    exc,
                )
                return
            executor.restore(state)
            batch.records = self._isolate(executor, stage, batch, records)
        self.counters[stage.name].add(len(records), len(batch.records), time.time() - started)

    def _isolate(
        self, executor: StageExecutor, stage: Stage, batch: Batch, records: list[Any]
    ) -> list[Any]:
        """Process ``records`` one by one, setting aside those that raise; a stateful stage's
        state is put back as it was before each record that raised."""
        out: list[Any] = []
        dead = batch.meta.setdefault("dead", [])
        for record in records:
            state = executor.snapshot()
            try:
                out.extend(executor.process([record]))
            except Exception as exc:
                executor.restore(state)
                dead.append(DeadLetter(record, stage.name, f"{type(exc).__name__}: {exc}"))
                self.counters[stage.name].skipped += 1
                logger.warning(
                    "stream %r: stage %r %s a record that raised %s: %s",
                    self.pipeline,
                    stage.name,
                    "dead-lettered" if self.on_error == "dead_letter" else "skipped",
                    type(exc).__name__,
                    exc,
                )
        return out

    # -- sinks --------------------------------------------------------------------------------
    def _sink_loop(self) -> None:
        inbox = self._queues[-1]
        try:
            while True:
                batch = inbox.get()
                if batch is _END:
                    return
                if self._abandoned(batch):
                    batch.meta["commit"] = False
                    self._commits.put(batch)
                    continue
                started = time.time()
                try:
                    self._write(batch)
                except Exception as exc:
                    self._fail(
                        batch.seq,
                        StreamError(
                            f"writing batch {batch.seq} of stream {self.pipeline!r} failed: "
                            f"{exc}; it was not committed"
                        ),
                    )
                    batch.meta["commit"] = False
                    self._commits.put(batch)
                    continue
                self.last_written = time.time()  # before the count: never after a record
                self.sink_counter.add(len(batch.records), len(batch.records), time.time() - started)
                self._commits.put(batch)
        finally:
            self._sink_done.set()

    def _write(self, batch: Batch) -> None:
        dead = batch.meta.get("dead") or []
        if dead and self.dead_letter is not None:
            letters = [
                {"record": d.record, "stage": d.stage, "error": d.error, "batch": batch.seq}
                for d in dead
            ]
            write_with_retries(self.dead_letter, letters)
            self.dead_letters += len(letters)
        if batch.records:
            for sink in self.sinks:
                write_with_retries(sink, batch.records)

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        end = self.finished or time.time()
        elapsed = max(end - self.started, 1e-9) if self.started else 0.0
        written = self.sink_counter.records_in
        # from the first record read to the last written: not a group join, not an idle end
        first, last = self.first_read, self.last_written
        busy = max(last - first, 1e-9) if first is not None and last is not None else 0.0
        return {
            "pipeline": self.pipeline,
            "running": self.running,
            "elapsed": elapsed,
            "records_read": self.source_counter.records_out,
            "records_written": written,
            "throughput": written / busy if busy else 0.0,
            "batches_committed": self.sink_counter.batches,
            "batches_in_flight": self.in_flight,
            "max_batches_in_flight": self.max_seen_in_flight,
            "consumer_lag": self.lag,
            "dead_letters": self.dead_letters,
            "stages": {name: counter.to_dict() for name, counter in self.counters.items()},
            "error": None if self.error is None else str(self.error),
        }


def write_with_retries(sink: Sink, records: list[Any]) -> None:
    """Write, trying again after a failure that may pass (a dropped connection, a
    :class:`StreamDeliveryError`); a plain :class:`StreamError` (records the sink cannot take)
    fails at once."""
    for attempt in range(1, SINK_RETRIES + 1):
        try:
            sink.write(records)
            return
        except Exception as exc:
            permanent = isinstance(exc, StreamError) and not isinstance(exc, StreamDeliveryError)
            if attempt == SINK_RETRIES or permanent:
                raise
            logger.warning(
                "sink %r failed (%s: %s); attempt %d of %d in %.1fs",
                sink.name,
                type(exc).__name__,
                exc,
                attempt + 1,
                SINK_RETRIES,
                0.5 * attempt,
            )
            time.sleep(0.5 * attempt)

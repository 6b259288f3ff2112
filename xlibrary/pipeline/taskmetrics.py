"""What a task reports about itself while it runs: custom metrics and peak memory.

``log_metric(name, value)`` inside a task adds to that task's metrics, which travel back with
its outcome (the task's own result, through Dask): the same on every backend. On a cluster,
with ``monitoring.real_time``, each value is also sent at once on the worker's Dask event
topic ``xlibrary-metrics``, which the client subscribes to. Outside a task it is a metric of
the driver program.

Peak memory comes from one sampler thread per process (started by the first monitored task),
which reads the process's resident memory every 10 ms. A task's peak is the highest sample
while it ran (or the latest sample, for a task shorter than the interval); a task tracked
with ``@pm.track_performance`` / ``@pipeline.monitor_performance`` also reads it exactly at
its start and end. Tasks that share a process share its memory: with threads, a peak
includes what the other tasks running beside it held.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = [
    "TaskContext",
    "add_driver_listener",
    "current_task",
    "log_metric",
    "rss_bytes",
    "sampler",
    "summarize",
]

logger = logging.getLogger("xlibrary.pipeline.monitoring")

METRICS_TOPIC = "xlibrary-metrics"


class TaskContext:
    """The task running in this context: where ``log_metric`` puts its values."""

    __slots__ = ("metrics", "name", "real_time", "run_id")

    def __init__(self, name: str, run_id: str, real_time: bool = False) -> None:
        self.name = name
        self.run_id = run_id
        self.real_time = real_time
        self.metrics: dict[str, float] = {}


current_task: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "xlibrary_pipeline_task", default=None
)

_driver_listeners: list[weakref.WeakMethod[Callable[[str, float], None]]] = []


def add_driver_listener(method: Callable[[str, float], None]) -> None:
    """Call ``method`` (a bound method, held weakly) for metrics logged outside tasks."""
    _driver_listeners.append(weakref.WeakMethod(method))


def log_metric(name: str, value: float) -> None:
    """Record metric ``name`` of the running task (or of the driver, outside a task)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a metric name must be a non-empty string, got {name!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"metric {name!r} must be a number, got {type(value).__name__} {value!r}; "
            "log numbers (a count, seconds, bytes) so they can be compared across runs"
        )
    context = current_task.get()
    if context is None:
        alive = [ref for ref in _driver_listeners if ref() is not None]
        _driver_listeners[:] = alive
        for ref in alive:
            listener = ref()
            if listener is not None:
                listener(name, float(value))
        if not alive:
            logger.warning(
                "log_metric(%r) outside a monitored task, with no PipelineManager here to "
                "keep it: turn monitoring on (monitoring_enabled) so tasks record metrics",
                name,
            )
        return
    context.metrics[name] = float(value)
    if context.real_time:
        _emit(context, name, float(value))


def _emit(context: TaskContext, name: str, value: float) -> None:
    """Send a metric at once on the worker's Dask event topic (cluster runs only)."""
    if "distributed" not in sys.modules:
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:  # not on a dask worker: the outcome carries the value
        return
    worker.log_event(
        METRICS_TOPIC,
        {"task": context.name, "run_id": context.run_id, "name": name, "value": value},
    )


# -- memory -----------------------------------------------------------------------------------
def _rss_reader() -> Callable[[], int]:
    try:
        import psutil

        process = psutil.Process()
        return lambda: int(process.memory_info().rss)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        import resource

        return lambda: int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


rss_bytes = _rss_reader()


class MemorySampler:
    """Samples this process's resident memory in a daemon thread."""

    def __init__(self, interval: float = 0.01, keep: int = 100_000) -> None:
        self.interval = interval
        self._samples: deque[tuple[float, int]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._samples.append((time.time(), rss_bytes()))
                self._thread = threading.Thread(
                    target=self._run, name="xlibrary-memory-sampler", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self._samples.append((time.time(), rss_bytes()))

    def peak_between(self, start: float, end: float | None = None) -> int | None:
        """The highest sample taken from ``start`` to ``end`` (default: now); when none fell
        in that window, the last sample before it."""
        samples = self._samples
        if not samples:
            return None
        peak = None
        before = None
        for stamp, rss in reversed(samples):  # newest first: short windows stop at once
            if end is not None and stamp > end:
                continue
            if stamp < start:
                before = rss
                break
            peak = rss if peak is None or rss > peak else peak
        return peak if peak is not None else before


sampler = MemorySampler()


# -- detailed logging -------------------------------------------------------------------------
def summarize(value: Any) -> str:
    """A short description of a value for log lines: its type and size, never its content."""
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        return f"{kind}{'x'.join(map(str, shape)) and '(' + 'x'.join(map(str, shape)) + ')'}"
    if isinstance(value, dict):
        return f"dict({len(value)} keys)"
    if isinstance(value, list | tuple | set | frozenset):
        return f"{kind}[{len(value)}]"
    if isinstance(value, str | bytes):
        return f"{kind}(len {len(value)})"
    if value is None or isinstance(value, int | float | bool):
        return repr(value)
    return kind

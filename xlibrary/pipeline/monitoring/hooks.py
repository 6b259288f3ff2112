"""How a manager monitors its runs: what tasks measure and what finishing a run adds
(:class:`RunInstruments`), what it remembers across runs (:class:`MonitoringHistory`), and who
hears of each run (:class:`RecordWriter`: the store's run records; :class:`DashboardPublisher`:
the dashboard's Pipelines page).

Log lines go to the ``xlibrary.pipeline`` loggers; the library adds no handler of its own (a
``NullHandler``), so the application decides where they go. ``detailed_logging`` turns the
task lines (logger ``xlibrary.pipeline.tasks``) on at INFO."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ..records import Alert, RunRecord
from ..result import PipelineResult
from ..states import TaskStatus
from ..store import RunStore
from ..taskmetrics import METRICS_TOPIC, sampler
from ..wrapper import Measures
from .alerts import WebhookSender, dispatch, durations_by_task, evaluate
from .config import MonitoringPolicy

__all__ = ["DashboardPublisher", "MonitoringHistory", "RecordWriter", "RunInstruments"]

logger = logging.getLogger("xlibrary.pipeline.monitoring")


class MonitoringHistory:
    """What one manager remembers across runs: callbacks, latest metrics, durations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.callbacks: list[Callable[[Alert], object]] = []
        self.metrics: dict[str, Any] = {"latest": {}, "by_task": {}}
        self.last_runs: dict[str, dict[str, Any]] = {}
        self.history: dict[str, dict[str, deque[float]]] = {}
        self.webhooks: dict[tuple[str, float], WebhookSender] = {}

    def webhook(self, url: str | None, timeout: float) -> WebhookSender | None:
        """The sender of alerts to ``url`` (one per webhook, started on first use)."""
        if url is None:
            return None
        with self.lock:
            sender = self.webhooks.get((url, timeout))
            if sender is None:
                sender = self.webhooks[url, timeout] = WebhookSender(url, timeout=timeout)
            return sender

    def close(self) -> None:
        """Send the alerts still queued for webhooks (each within its timeout), then stop."""
        with self.lock:
            senders = list(self.webhooks.values())
            self.webhooks.clear()
        for sender in senders:
            sender.close()

    def record_metric(self, task: str | None, name: str, value: float) -> None:
        self.record_metrics([(task, {name: value})])

    def record_metrics(self, by_task: list[tuple[str | None, Mapping[str, float]]]) -> None:
        with self.lock:
            latest, tasks = self.metrics["latest"], self.metrics["by_task"]
            for task, metrics in by_task:
                for name, value in metrics.items():
                    if name != "cpu_seconds":  # measured, not logged: it stays with its task
                        latest[name] = value
                if task is not None:
                    tasks.setdefault(task, {}).update(metrics)

    def on_metric_event(self, event: Any) -> None:
        """Handler for the ``xlibrary-metrics`` Dask event topic: ``(timestamp, msg)``."""
        _, msg = event
        if isinstance(msg, dict) and "name" in msg:
            self.record_metric(msg.get("task"), msg["name"], float(msg["value"]))

    def durations(self, runs: RunStore, pipeline: str, keep: int) -> dict[str, deque[float]]:
        with self.lock:
            known = self.history.get(pipeline)
        if known is not None:
            return known
        loaded = durations_by_task(runs.recent_records(pipeline, keep))
        history = {task: deque(values[-keep:], maxlen=keep) for task, values in loaded.items()}
        with self.lock:
            return self.history.setdefault(pipeline, history)


class RunInstruments:
    """The :class:`~xlibrary.pipeline.execute.Instruments` of one manager's runs."""

    def __init__(
        self,
        config: MonitoringPolicy,
        state: MonitoringHistory,
        runs: RunStore,
        *,
        local: bool,
        memory_limit: Callable[[str | None], int | None],
    ) -> None:
        self.config = config
        self.state = state
        self.runs = runs
        self.local = local
        self.memory_limit = memory_limit

    def for_run(self, run_id: str) -> Measures | None:
        config = self.config
        if config.detailed:
            ensure_task_logging()
        if not (config.enabled or config.detailed):
            return None
        return Measures(
            run_id=run_id,
            memory=config.enabled and config.memory,
            cpu=config.enabled and config.cpu,
            real_time=config.real_time,
            detailed=config.detailed,
        )

    def finish(self, result: PipelineResult) -> PipelineResult:
        config = self.config
        peak = result.peak_memory
        if config.enabled and config.memory and self.local:
            sampled = sampler.peak_between(result.started, result.finished)
            peak = max(peak or 0, sampled or 0) or None
        result = result.with_record(peak_memory=peak)
        alerts: list[Alert] = []
        if config.enabled:
            history: dict[str, deque[float]] = {}
            if "long_execution" in config.alerts:  # the only reader of past durations
                history = self.state.durations(self.runs, result.pipeline, config.history)
            alerts = evaluate(result, config, history, self.memory_limit)
            thresholds = config.thresholds
            webhook = (
                self.state.webhook(thresholds.webhook_url, thresholds.webhook_timeout)
                if alerts
                else None
            )
            dispatch(alerts, self.state.callbacks, webhook)
            if "long_execution" in config.alerts:
                with self.state.lock:
                    for run in result.tasks.values():
                        if run.status == TaskStatus.SUCCEEDED and run.duration is not None:
                            past = history.get(run.name)
                            if past is None:
                                past = history[run.name] = deque(maxlen=config.history)
                            past.append(run.duration)
        self.state.record_metrics(
            [(run.name, run.metrics) for run in result.tasks.values() if run.metrics]
        )
        with self.state.lock:
            self.state.last_runs[result.pipeline] = {
                "run_id": result.run_id,
                "status": str(result.status),
                "duration": result.duration,
                "finished": result.finished,
                "peak_memory_mb": None if peak is None else round(peak / 2**20, 1),
            }
        return result.with_record(alerts=tuple(alerts))


def ensure_task_logging() -> None:
    """Let detailed task log lines through: INFO on ``xlibrary.pipeline.tasks`` (where they go
    is the application's choice, as for every logger of the library)."""
    task_log = logging.getLogger("xlibrary.pipeline.tasks")
    if task_log.level == logging.NOTSET or task_log.level > logging.INFO:
        task_log.setLevel(logging.INFO)


class RecordWriter:
    """Writes each run's record to the store (in the background; see RunStore)."""

    def __init__(self, runs: RunStore) -> None:
        self.runs = runs

    def run_started(self, record: RunRecord) -> None:
        self.runs.write_record(record)

    def run_finished(self, result: PipelineResult) -> None:
        self.runs.write_record(result.record, latest=False)


class DashboardPublisher:
    """Tells the scheduler's Pipelines page about runs, through Dask's event channel."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def run_started(self, record: RunRecord) -> None:
        from .dashboard import RUNS_TOPIC, started_event

        self.client.log_event(RUNS_TOPIC, started_event(record))

    def run_finished(self, result: PipelineResult) -> None:
        from .dashboard import RUNS_TOPIC, finished_event

        self.client.log_event(RUNS_TOPIC, finished_event(result.record))


def subscribe_metrics(client: Any, state: MonitoringHistory) -> None:
    """Receive metrics logged in tasks on the cluster as they are logged (real_time)."""
    client.subscribe_topic(METRICS_TOPIC, state.on_metric_event)

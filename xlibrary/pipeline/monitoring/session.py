"""What monitoring is for one manager: its policy (from the settings and
``enable_monitoring``), what it remembers across runs, and what it adds to each run.

:class:`MonitoringSession` gives a run its :class:`~.hooks.RunInstruments` (what tasks measure,
alerts at the end) and its observers (the store's run records, the dashboard's Pipelines
page); it adds the Pipelines page and the real-time metrics feed to a cluster's client when
one connects; it answers ``get_monitoring_dashboard`` (current metrics, with the cluster's
workers, memory and queue when there is one) and writes performance reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import PipelineError
from ..records import Alert
from ..redact import redact_url
from ..settings import Settings
from ..store import RunStore
from ..taskmetrics import add_driver_listener
from .config import MonitoringPolicy
from .hooks import (
    DashboardPublisher,
    MonitoringHistory,
    RecordWriter,
    RunInstruments,
    subscribe_metrics,
)
from .report import MonitoringDashboard, PerformanceReport, performance_report

if TYPE_CHECKING:
    from distributed import Client

    from ..execute import RunObserver

__all__ = ["MonitoringSession"]

logger = logging.getLogger("xlibrary.pipeline")


class MonitoringSession:
    """One manager's monitoring (see the module docstring)."""

    def __init__(self, settings: Settings, store: Callable[[], RunStore]) -> None:
        self.settings = settings
        self.policy = MonitoringPolicy.from_settings(settings)
        self.history = MonitoringHistory()
        self._store = store
        self._client: Client | None = None
        self._pages = False  # the dashboard's Pipelines page is registered on our client
        add_driver_listener(self._driver_metric)

    # -- what the user asks ---------------------------------------------------------------
    def enable(
        self, metrics: Collection[str] | None, alerts: Collection[str] | None, dashboard: bool
    ) -> None:
        policy = dataclasses.replace(self.policy, enabled=True)
        policy = policy.measuring(metrics or ()).alerting(alerts or ())
        if dashboard:
            policy = dataclasses.replace(policy, dashboard=True)
        self.policy = policy

    def on_alert(self, callback: Callable[[Alert], object]) -> None:
        self.history.callbacks.append(callback)

    def _driver_metric(self, name: str, value: float) -> None:
        self.history.record_metric(None, name, value)

    # -- what a run gets ------------------------------------------------------------------
    def instruments(self, *, local: bool) -> RunInstruments:
        return RunInstruments(
            self.policy,
            self.history,
            self._store(),
            local=local,
            memory_limit=self._memory_limits(local),
        )

    def observers(self, *, local: bool) -> list[RunObserver]:
        """Who hears of a run: the store's records, and the Pipelines page on a cluster."""
        observers: list[RunObserver] = []
        if self.settings.store.record_runs:
            observers.append(RecordWriter(self._store()))
        if self._pages and not local and self._client is not None:
            observers.append(DashboardPublisher(self._client))
        return observers

    def connected(self, client: Client) -> None:
        """A cluster client is ready: add the Pipelines page and the metrics feed."""
        self._client = client
        policy = self.policy
        if policy.enabled or policy.dashboard:
            try:
                from .dashboard import PipelinesPlugin

                client.register_plugin(PipelinesPlugin())
                self._pages = True
                logger.info(
                    "Dask dashboard: %s (pipelines: %s)",
                    client.dashboard_link,
                    client.dashboard_link.replace("/status", "/pipelines"),
                )
            except Exception as exc:  # a scheduler without xlibrary cannot load the page
                logger.warning("could not add the Pipelines page to the dashboard: %s", exc)
        else:  # a scheduler started with the page (`xlibrary-pipeline dashboard`, --preload)
            from .dashboard import serves_pipelines

            self._pages = serves_pipelines(client)
        if policy.enabled and policy.real_time:
            subscribe_metrics(client, self.history)

    # -- what it answers ------------------------------------------------------------------
    def dashboard(self, client: Callable[[], Client | None]) -> MonitoringDashboard:
        """The dashboard; ``client()`` is the cluster's client when one has started."""

        def cluster() -> dict[str, Any] | None:
            found = client()
            return None if found is None else self._cluster_metrics(found)

        return MonitoringDashboard(
            self._store(),
            self.history.metrics,
            self.history.last_runs,
            cluster,
            self.policy.history,
        )

    def report(self, pipeline: str, run_id: str | None) -> PerformanceReport:
        """The performance report of the latest (or ``run_id``) recorded run of ``pipeline``."""
        store = self._store()
        record = store.read_record(pipeline, run_id)
        if record is None or record.finished is None:
            raise PipelineError(
                f"no finished run of pipeline {pipeline!r} is recorded in the store "
                f"{redact_url(store.url)}; run it first (with store.record_runs on)"
            )
        return performance_report(record)

    @contextlib.contextmanager
    def report_runs(self, filename: str, client: Client | None) -> Iterator[None]:
        """Write a report of the runs inside the block to ``filename``: Dask's own on a
        cluster, this manager's report of the last run otherwise."""
        if client is not None:
            from distributed import performance_report as dask_report

            report = dask_report(filename=filename, mode="inline")  # type: ignore[no-untyped-call]
            with client.as_current(), report:
                yield
            return
        before = dict(self.history.last_runs)
        yield
        store = self._store()
        for name, last in self.history.last_runs.items():
            if before.get(name) != last:
                record = store.read_record(name, last["run_id"])
                if record is not None:
                    performance_report(record).save_html(filename)

    def _memory_limits(self, local: bool) -> Callable[[str | None], int | None]:
        """The memory limit of each process that ran tasks, looked up when an alert asks."""
        limits: dict[str, int] | None = None

        def limit(worker: str | None) -> int | None:
            nonlocal limits
            if local:
                import psutil

                return int(psutil.virtual_memory().total)
            if limits is None:
                client = self._client
                info = client.scheduler_info() if client is not None else {}
                limits = {
                    address: int(w.get("memory_limit") or 0)
                    for address, w in info.get("workers", {}).items()
                }
            return limits.get(worker or "") or None

        return limit

    def _cluster_metrics(self, client: Client) -> dict[str, Any]:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        metrics = [w.get("metrics", {}) for w in workers.values()]
        # a lambda travels by value: the scheduler needs no xlibrary to run it
        running, waiting = client.run_on_scheduler(  # type: ignore[no-untyped-call]
            lambda dask_scheduler: (
                sum(min(len(ws.processing), ws.nthreads) for ws in dask_scheduler.workers.values()),
                len(dask_scheduler.queued)
                + len(dask_scheduler.unrunnable)
                + sum(
                    max(0, len(ws.processing) - ws.nthreads)
                    for ws in dask_scheduler.workers.values()
                ),
            )
        )
        current = {
            "workers": len(workers),
            "memory_mb": round(sum(m.get("memory", 0) for m in metrics) / 2**20, 1),
            "memory_limit_mb": round(
                sum(int(w.get("memory_limit") or 0) for w in workers.values()) / 2**20, 1
            ),
            "cpu": sum(m.get("cpu", 0.0) for m in metrics) / max(1, len(metrics)),
            "tasks_processing": running,
        }
        if self.policy.queue_depth:
            current["tasks_queued"] = waiting
        return current

    def close(self) -> None:
        """Alerts queued for a webhook go out (within its timeout)."""
        self.history.close()

"""Performance reports and trends, read from run records so they work across processes."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..records import RunRecord
from ..store import RunStore
from .alerts import durations_by_task, summary

__all__ = ["MonitoringDashboard", "PerformanceReport", "performance_report"]

MB = 2**20


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value / MB, 1)


class PerformanceReport(dict[str, Any]):
    """A run's performance as a dict: ``total_time`` (s), ``peak_memory_mb``, ``tasks`` (per
    task: ``duration``, ``attempts``, ``status``, ``peak_memory_mb``, ``metrics``,
    ``worker``), ``alerts``. Memory is in MB (2**20 bytes) wherever it is shown; ``peak_memory``
    (the guide's key, run and tasks) is the same number. ``save_html(path)`` writes it as a
    page."""

    def save_html(self, path: str | Path) -> Path:
        """Write the report as a self-contained HTML page; returns its path."""
        rows = []
        for name, task in self["tasks"].items():
            metrics = ", ".join(f"{k}={v:g}" for k, v in (task.get("metrics") or {}).items())
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(str(cell))}</td>"
                    for cell in (
                        name,
                        task["status"],
                        "" if task["duration"] is None else f"{task['duration']:.3f}",
                        task["attempts"],
                        "" if task["peak_memory_mb"] is None else task["peak_memory_mb"],
                        metrics,
                        task.get("worker") or "",
                    )
                )
                + "</tr>"
            )
        alerts = "".join(f"<li>{html.escape(a['message'])}</li>" for a in self.get("alerts", []))
        title = f"{self['pipeline']} run {self['run_id']}"
        peak = self["peak_memory_mb"]
        page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
tr:nth-child(even){{background:#f3f3f3}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Status: {html.escape(self["status"])}. Total time: {self["total_time"]:.3f} s.
Peak memory: {"n/a" if peak is None else f"{peak} MB"}.</p>
<table><tr><th>task</th><th>status</th><th>duration s</th><th>attempts</th>
<th>peak MB</th><th>metrics</th><th>worker</th></tr>{"".join(rows)}</table>
<h2>Alerts</h2><ul>{alerts or "<li>none</li>"}</ul></body></html>"""
        target = Path(path)
        target.write_text(page)
        return target


def performance_report(record: RunRecord) -> PerformanceReport:
    """The performance report of one run record."""
    tasks = {}
    for name, task in record.tasks.items():
        peak = _mb(task.peak_memory)  # bytes in the record
        tasks[name] = {
            "status": str(task.status),
            "duration": task.duration,
            "attempts": task.attempts,
            "peak_memory_mb": peak,
            "peak_memory": peak,
            "metrics": dict(task.metrics or {}),
            "worker": task.worker,
        }
    peak = _mb(record.peak_memory)
    return PerformanceReport(
        pipeline=record.pipeline,
        run_id=record.run_id,
        status=str(record.status),
        total_time=record.duration or 0.0,
        peak_memory_mb=peak,
        peak_memory=peak,
        tasks=tasks,
        alerts=[alert.to_dict() for alert in record.alerts],
    )


class MonitoringDashboard:
    """What is going on now, and how runs went lately.

    ``get_current_metrics()``: the metrics logged last (by tasks and by this program), the
    last run of each pipeline this manager ran (``peak_memory_mb``) and, on a cluster, its
    ``workers``, ``memory_mb`` and ``memory_limit_mb`` (summed over them), ``cpu`` (mean
    percent), ``tasks_processing`` (running on a worker thread now) and, when ``queue_depth``
    is measured, ``tasks_queued`` (waiting: for a thread on a worker, in the scheduler's
    queue, or for a worker that can run them). ``get_performance_trends()``: per pipeline and task,
    durations over the last runs with their mean, 95th percentile and direction, read from
    the run records of the store (so it sees runs made by other processes).
    """

    def __init__(
        self,
        runs: RunStore,
        metrics: Mapping[str, Any],
        last_runs: Mapping[str, Any],
        cluster: Callable[[], dict[str, Any] | None],
        history: int,
    ) -> None:
        self._runs = runs
        self._metrics = metrics
        self._last_runs = last_runs
        self._cluster = cluster
        self._history = history

    def get_current_metrics(self) -> dict[str, Any]:
        current: dict[str, Any] = {
            "time": time.time(),
            "metrics": dict(self._metrics.get("latest", {})),
            "by_task": {k: dict(v) for k, v in self._metrics.get("by_task", {}).items()},
            "last_runs": dict(self._last_runs),
        }
        cluster = self._cluster()
        if cluster is not None:
            current["cluster"] = cluster
        return current

    def get_performance_trends(
        self, pipeline: str | None = None, *, last: int | None = None
    ) -> dict[str, dict[str, Any]]:
        count = last or self._history
        names = [pipeline] if pipeline is not None else self._runs.pipelines()
        trends: dict[str, dict[str, Any]] = {}
        for name in names:
            records = [r for r in self._runs.recent_records(name, count) if r.finished]
            durations = durations_by_task(records)
            totals = [r.duration for r in records if r.duration is not None]
            if not totals:
                continue
            trends[name] = {
                "runs": len(records),
                "total": summary(totals),
                "tasks": {task: summary(values) for task, values in durations.items()},
            }
        return trends

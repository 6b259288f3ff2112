"""Alerts: what a finished run did that someone should know about, and telling them.

Kinds: ``task_failure`` (a task failed), ``long_execution`` (a task ran longer than
``monitoring.alerts.task_timeout``, or far over its own history: more than twice the 95th
percentile of its last runs and more than a second over it), ``memory_threshold`` (the peak
memory of a process that ran the run went over that fraction of its limit: the machine's
memory, or a Dask worker's memory limit), ``error_rate_threshold`` (the fraction of the run's
tasks that failed went over it).

Each alert is logged as a WARNING, passed to every callback registered with
``pm.on_alert(fn)`` (a callback that raises is logged, never raised), POSTed as JSON to
``monitoring.alerts.webhook_url`` when set, and kept in the run record and the report.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..result import PipelineResult, TaskStatus
from .config import MonitorConfig

__all__ = ["Alert", "dispatch", "evaluate"]

logger = logging.getLogger("xlibrary.pipeline.alerts")

WEBHOOK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Alert:
    kind: str
    pipeline: str
    run_id: str
    message: str
    task: str | None = None
    value: float | None = None
    threshold: float | None = None
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def evaluate(
    result: PipelineResult,
    config: MonitorConfig,
    history: Mapping[str, Sequence[float]],
    memory_limit: Callable[[str | None], int | None],
) -> list[Alert]:
    """The alerts ``result`` raises under ``config``; ``history`` holds earlier durations."""
    now = time.time()
    alerts: list[Alert] = []

    def add(kind: str, message: str, **fields: Any) -> None:
        alerts.append(Alert(kind, result.pipeline, result.run_id, message, created=now, **fields))

    kinds = config.alerts
    ran = [run for run in result.tasks.values() if run.started is not None and run.attempts]
    if "task_failure" in kinds:
        for run in result.tasks.values():
            if run.status == TaskStatus.FAILED:
                add(
                    "task_failure",
                    f"task {run.name!r} of pipeline {result.pipeline!r} failed after "
                    f"{run.attempts} attempt(s): {type(run.error).__name__}: {run.error}",
                    task=run.name,
                )
    if "long_execution" in kinds:
        limit = config.thresholds.task_timeout
        for run in ran:
            duration = run.duration or 0.0
            past = history.get(run.name, ())
            if limit is not None and duration > limit:
                add(
                    "long_execution",
                    f"task {run.name!r} ran {duration:.1f}s, over the {limit:g}s limit",
                    task=run.name, value=duration, threshold=limit,
                )  # fmt: skip
            elif len(past) >= 3:
                usual = p95(past)
                if duration > 2 * usual and duration - usual > 1.0:
                    add(
                        "long_execution",
                        f"task {run.name!r} ran {duration:.1f}s, far over its usual "
                        f"{usual:.1f}s (95th percentile of its last {len(past)} runs)",
                        task=run.name, value=duration, threshold=2 * usual,
                    )  # fmt: skip
    fraction = config.thresholds.memory_threshold
    if "memory_threshold" in kinds and fraction is not None:
        for worker, peak in _peaks_by_worker(result).items():
            limit_bytes = memory_limit(worker)
            if limit_bytes and peak / limit_bytes > fraction:
                add(
                    "memory_threshold",
                    f"peak memory {peak / 2**20:.0f} MB on {worker} is "
                    f"{peak / limit_bytes:.0%} of its {limit_bytes / 2**20:.0f} MB limit "
                    f"(threshold {fraction:.0%})",
                    value=peak / limit_bytes, threshold=fraction,
                )  # fmt: skip
    rate = config.thresholds.error_rate_threshold
    if "error_rate_threshold" in kinds and rate is not None and ran:
        failed = sum(run.status == TaskStatus.FAILED for run in ran)
        if failed / len(ran) > rate:
            add(
                "error_rate_threshold",
                f"{failed} of {len(ran)} tasks failed ({failed / len(ran):.0%}, threshold "
                f"{rate:.0%})",
                value=failed / len(ran), threshold=rate,
            )  # fmt: skip
    return alerts


def _peaks_by_worker(result: PipelineResult) -> dict[str, int]:
    peaks: dict[str, int] = {}
    for run in result.tasks.values():
        if run.peak_memory:
            where = run.worker or "local"
            peaks[where] = max(peaks.get(where, 0), run.peak_memory)
    return peaks


def dispatch(
    alerts: Iterable[Alert],
    callbacks: Iterable[Callable[[Alert], object]],
    webhook_url: str | None,
) -> None:
    """Log each alert, call the callbacks, and POST them to the webhook."""
    alerts = list(alerts)
    for alert in alerts:
        logger.warning("ALERT %s: %s (run %s)", alert.kind, alert.message, alert.run_id)
        for callback in list(callbacks):
            try:
                callback(alert)
            except Exception:
                logger.exception("alert callback %r raised", callback)
    if webhook_url and alerts:
        body = json.dumps({"alerts": [alert.to_dict() for alert in alerts]}).encode()
        request = urllib.request.Request(
            webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
                response.read()
        except Exception as exc:  # an unreachable webhook must not fail the run
            logger.warning("could not POST %d alert(s) to %s: %s", len(alerts), webhook_url, exc)


def durations_by_task(records: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Durations of each task over ``records`` (oldest first) that ran and finished."""
    out: dict[str, list[float]] = {}
    for record in records:
        for name, task in record.get("tasks", {}).items():
            if task.get("status") == "succeeded" and task.get("started") is not None:
                out.setdefault(name, []).append(task["finished"] - task["started"])
    return out


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean, 95th percentile and direction of a series of durations."""
    third = max(1, len(values) // 3)
    early, late = statistics.fmean(values[:third]), statistics.fmean(values[-third:])
    if len(values) < 3 or abs(late - early) <= 0.1 * max(early, 1e-9):
        direction = "flat"
    else:
        direction = "up" if late > early else "down"
    return {
        "durations": list(values),
        "runs": len(values),
        "mean": statistics.fmean(values),
        "p95": p95(values),
        "direction": direction,
    }

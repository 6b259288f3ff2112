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

Webhook POSTs go out on a thread of their own (:class:`WebhookSender`), so a slow or silent
webhook never holds up a run: at most ``WEBHOOK_QUEUE`` POSTs wait (more are dropped with a
warning), each gives up after ``monitoring.alerts.webhook_timeout`` seconds, and a failure is
logged with the webhook's path, query and password hidden (they often hold its token).
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import statistics
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..records import Alert, RunRecord
from ..redact import redact_url, redact_urls_in
from ..result import PipelineResult
from ..states import TaskStatus
from .config import MonitoringPolicy

__all__ = ["Alert", "WebhookSender", "dispatch", "evaluate"]

logger = logging.getLogger("xlibrary.pipeline.alerts")

WEBHOOK_TIMEOUT = 5.0
"""Seconds a webhook POST may take (``monitoring.alerts.webhook_timeout``)."""
WEBHOOK_QUEUE = 100
"""Alert POSTs that may wait for a slow webhook; more are dropped, with a warning."""


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def evaluate(
    result: PipelineResult,
    config: MonitoringPolicy,
    history: Mapping[str, Sequence[float]],
    memory_limit: Callable[[str | None], int | None],
) -> list[Alert]:
    """The alerts ``result`` raises under ``config``; ``history`` holds earlier durations."""
    now = time.time()
    alerts: list[Alert] = []

    def add(kind: str, message: str, **fields: Any) -> None:
        alerts.append(
            Alert(
                kind=kind,
                pipeline=result.pipeline,
                run_id=result.run_id,
                message=message,
                created=now,
                **fields,
            )
        )

    kinds = config.alerts
    ran = [run for run in result.tasks.values() if run.started is not None and run.attempts]
    if "task_failure" in kinds:
        for run in result.tasks.values():
            if run.status == TaskStatus.FAILED:
                add(
                    "task_failure",
                    f"task {run.name!r} of pipeline {result.pipeline!r} failed after "
                    f"{run.attempts} attempt(s): {run.error_type}: {run.error_message}",
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
    webhook: WebhookSender | None,
) -> None:
    """Log each alert, call the callbacks, and queue them for the webhook (never waits)."""
    alerts = list(alerts)
    for alert in alerts:
        logger.warning(
            "ALERT %s: %s (run %s)", alert.kind, redact_urls_in(alert.message), alert.run_id
        )
        for callback in list(callbacks):
            try:
                callback(alert)
            except Exception:
                logger.exception("alert callback %r raised", callback)
    if webhook is not None and alerts:
        webhook.send([alert.to_dict() for alert in alerts])


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is answered as an error, not followed (a POST turned GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


class WebhookSender:
    """POSTs alert bodies as JSON to one webhook, on its own daemon thread.

    :meth:`send` never waits: it queues the body (at most ``maxsize`` wait; when the queue is
    full, the body is dropped, with one warning until the queue empties again). Each POST
    gives up after ``timeout`` seconds; a failure is a warning naming the webhook with its
    path and credentials hidden. :meth:`close` sends what is queued, waiting at most
    ``timeout`` seconds for the queue (and for the POST under way to end); the manager's
    ``close`` and interpreter exit call it.
    """

    def __init__(
        self, url: str, *, timeout: float = WEBHOOK_TIMEOUT, maxsize: int = WEBHOOK_QUEUE
    ) -> None:
        self.url, self._headers = _without_credentials(url)
        self.shown = redact_url(url, keep_path=False)
        self.timeout = timeout
        self.maxsize = maxsize
        self._pending: deque[tuple[bytes, int]] = deque()
        self._busy = False
        self._closed = False
        self._warned_full = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        _senders.add(self)

    def send(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Queue one POST of ``{"alerts": alerts}``; drop it (warning once) when the queue is
        full."""
        body = json.dumps({"alerts": list(alerts)}).encode()
        with self._changed:
            if self._closed:
                logger.warning("not POSTing alerts to %s: its sender is closed", self.shown)
                return
            if len(self._pending) >= self.maxsize:
                if not self._warned_full:
                    self._warned_full = True
                    logger.warning(
                        "the webhook %s is not keeping up: its queue of %d alert POSTs is "
                        "full, so further alerts are dropped until it catches up",
                        self.shown,
                        len(self._pending),
                    )
                return
            self._pending.append((body, len(alerts)))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="xlibrary-alert-webhook", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                body, count = self._pending.popleft()
                self._busy = True
                if not self._pending:
                    self._warned_full = False
            try:
                self._post(body, count)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _post(self, body: bytes, count: int) -> None:
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                response.read()
        except Exception as exc:  # an unreachable webhook must not fail the run
            reason = str(exc).replace(self.url, self.shown)
            path = urllib.parse.urlsplit(self.url).path
            if len(path) > 1:
                reason = reason.replace(path, "/***")
            logger.warning("could not POST %d alert(s) to %s: %s", count, self.shown, reason)

    def close(self, timeout: float | None = None) -> bool:
        """Send what is queued within ``timeout`` seconds (default: the POST timeout), drop
        the rest with a warning, and stop. Returns whether everything queued was sent."""
        wait = self.timeout if timeout is None else timeout
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            done = self._changed.wait_for(lambda: not self._pending and not self._busy, wait)
            dropped = len(self._pending)
            self._pending.clear()
            # the POST under way ends within its own timeout: its outcome is logged first
            self._changed.wait_for(lambda: not self._busy, self.timeout + 1.0)
        if dropped:
            logger.warning(
                "dropped %d alert POST(s) to %s: the webhook did not take them in %gs",
                dropped,
                self.shown,
                wait,
            )
        _senders.discard(self)
        return done


def _without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without ``user:password@``, and the headers of a POST to it: JSON, and HTTP
    Basic authentication with those credentials (urllib does not read them from the URL)."""
    headers = {"Content-Type": "application/json"}
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, headers
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers["Authorization"] = f"Basic {token}"
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), headers


_senders: weakref.WeakSet[WebhookSender] = weakref.WeakSet()


@atexit.register
def _close_senders() -> None:
    for sender in list(_senders):
        sender.close()


def durations_by_task(records: Iterable[RunRecord]) -> dict[str, list[float]]:
    """Durations of each task over ``records`` (oldest first) that ran and finished."""
    out: dict[str, list[float]] = {}
    for record in records:
        for name, task in record.tasks.items():
            duration = task.duration
            if task.status is TaskStatus.SUCCEEDED and duration is not None:
                out.setdefault(name, []).append(duration)
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

"""What monitoring does for one manager, resolved from its settings and ``enable_monitoring``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError, did_you_mean
from ..settings import ALERT_KINDS, METRIC_NAMES, MonitoringAlerts, Settings

__all__ = ["MonitoringPolicy"]

_THRESHOLD_KINDS = {
    "task_timeout": "long_execution",
    "memory_threshold": "memory_threshold",
    "error_rate_threshold": "error_rate_threshold",
}


_OPTIONAL = frozenset({"memory", "memory_usage", "cpu", "queue_depth"})
"""Metrics that cost something to measure; the others are always recorded."""


@dataclass(frozen=True)
class MonitoringPolicy:
    enabled: bool = False
    memory: bool = True
    cpu: bool = True
    queue_depth: bool = True
    real_time: bool = False
    detailed: bool = False
    dashboard: bool = False
    alerts: frozenset[str] = frozenset()
    thresholds: MonitoringAlerts = dataclasses.field(default_factory=MonitoringAlerts)
    history: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitoringPolicy:
        monitoring = settings.monitoring
        config = cls(
            enabled=settings.monitored,
            real_time=monitoring.real_time,
            detailed=settings.detailed_logging or settings.debug_mode,
            thresholds=monitoring.alerts,
            history=monitoring.history,
        )
        return config.measuring(monitoring.metrics).alerting(())

    def measuring(self, metrics: Iterable[str]) -> MonitoringPolicy:
        """Measure only the optional measurements in ``metrics`` (memory, CPU, queue depth);
        durations and statuses are always recorded, so a list of only those (or an empty
        one) keeps the default: memory and queue depth, not CPU."""
        names = set(_checked(metrics, METRIC_NAMES, "metric")) & _OPTIONAL
        if not names:  # the default: CPU seconds only when asked for
            return dataclasses.replace(self, memory=True, cpu=False, queue_depth=True)
        return dataclasses.replace(
            self,
            memory=bool(names & {"memory", "memory_usage"}),
            cpu="cpu" in names,
            queue_depth="queue_depth" in names,
        )

    def alerting(self, kinds: Iterable[str]) -> MonitoringPolicy:
        """Raise the alerts ``kinds``, besides those whose thresholds are set."""
        chosen = set(self.alerts) | set(_checked(kinds, ALERT_KINDS, "alert"))
        for key, kind in _THRESHOLD_KINDS.items():
            if getattr(self.thresholds, key) is not None:
                chosen.add(kind)
        if self.enabled and not chosen:
            chosen.add("task_failure")
        # the memory_threshold alert reads the peaks: measured even when metrics leave it out
        memory = self.memory or "memory_threshold" in chosen
        return dataclasses.replace(self, alerts=frozenset(chosen), memory=memory)


def _checked(names: Iterable[str], valid: tuple[str, ...], what: str) -> list[str]:
    out = []
    for name in names:
        if name not in valid:
            raise ConfigError(
                f"unknown {what} {name!r}{did_you_mean(str(name), valid)} "
                f"(known: {', '.join(valid)})"
            )
        out.append(name)
    return out

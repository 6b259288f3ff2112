"""Monitoring: task metrics and memory, performance reports, trends, alerts, the dashboard
page and progress bars. See the module of each part."""

from __future__ import annotations

from ..taskmetrics import log_metric

__all__ = ["log_metric"]

"""Typed, frozen settings: the only place a ``PipelineManager`` config dict is read.

Each config section of the user guide is a frozen dataclass below; :func:`load_settings` checks
a config mapping against them. An unknown or misspelt key raises :class:`ConfigError` naming the
key and the closest valid one; a value of the wrong type raises :class:`ConfigError` naming the
type expected. Nothing below the manager reads a dict.

General rules, besides each key's own range: every number is finite (``nan`` and ``inf`` are
rejected, except that ``inf`` in a timeout listed in :data:`INFINITE_MEANS_NONE` means no
limit, as ``null`` does), and no string is empty.

Environment, used when the config does not set the key: ``XLIBRARY_SCHEDULER_ADDRESS``
(``scheduler_address``), ``XLIBRARY_STORE`` (``store.url``), ``XLIBRARY_CACHE_SECRET``
(``caching.secret``).
"""

from __future__ import annotations

from .checks import without_effect
from .loading import SCHEDULER_ADDRESS_ENV, SECRET_ENV, STORE_ENV, load_settings
from .sections import (
    ALERT_KINDS,
    INFINITE_MEANS_NONE,
    METRIC_NAMES,
    Caching,
    FaultTolerance,
    KubernetesSettings,
    Monitoring,
    MonitoringAlerts,
    ResourceAllocation,
    ResourceLimits,
    Scaling,
    SecuritySettings,
    Settings,
    StoreSettings,
)

__all__ = [
    "ALERT_KINDS",
    "INFINITE_MEANS_NONE",
    "METRIC_NAMES",
    "SCHEDULER_ADDRESS_ENV",
    "SECRET_ENV",
    "STORE_ENV",
    "Caching",
    "FaultTolerance",
    "KubernetesSettings",
    "Monitoring",
    "MonitoringAlerts",
    "ResourceAllocation",
    "ResourceLimits",
    "Scaling",
    "SecuritySettings",
    "Settings",
    "StoreSettings",
    "load_settings",
    "without_effect",
]

"""The ranges of the config's values, beyond their types, and the keys that would do nothing
as set (:func:`without_effect`, which the manager warns about)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .. import extensions
from ..errors import ConfigError, did_you_mean
from ..redact import redact_url
from ..registry import Registry
from .sections import (
    Caching,
    FaultTolerance,
    KubernetesSettings,
    Monitoring,
    MonitoringAlerts,
    ResourceAllocation,
    ResourceLimits,
    Scaling,
    Settings,
)

__all__ = ["check_ranges", "without_effect"]


def check_ranges(settings: object, prefix: str) -> None:
    """Values of the right type but outside their meaningful range."""
    if isinstance(settings, FaultTolerance):
        _at_least(prefix, "max_retries", settings.max_retries, 0)
        _at_least(prefix, "retry_delay", settings.retry_delay, 0)
        _at_least(prefix, "retry_backoff", settings.retry_backoff, 1)
        if settings.task_timeout is not None and settings.task_timeout <= 0:
            raise ConfigError(
                f"config key '{prefix}task_timeout' must be more than 0 seconds (or null for no "
                f"limit), got {settings.task_timeout}"
            )
    elif isinstance(settings, ResourceLimits):
        if settings.max_cpu_cores is not None:
            _at_least(prefix, "max_cpu_cores", settings.max_cpu_cores, 1)
        _above_zero(prefix, "max_memory_gb", settings.max_memory_gb)
    elif isinstance(settings, Caching):
        _above_zero(prefix, "ttl", settings.ttl, " seconds (or null: until cleared)")
        _above_zero(prefix, "redis_timeout", settings.redis_timeout, " seconds")
        _at_least(prefix, "failure_threshold", settings.failure_threshold, 1)
        _at_least(prefix, "failure_cooldown", settings.failure_cooldown, 0)
        _registered(f"{prefix}cache_type", settings.cache_type, extensions.caches)
    elif isinstance(settings, KubernetesSettings):
        _above_zero(prefix, "resource_timeout", settings.resource_timeout, " seconds")
    elif isinstance(settings, Settings):
        if settings.num_workers is not None:
            _at_least(prefix, "num_workers", settings.num_workers, 1)
        if settings.worker_nodes is not None:
            _at_least(prefix, "worker_nodes", settings.worker_nodes, 1)
        _check_listen_address(f"{prefix}dashboard_address", settings.dashboard_address)
        _above_zero(prefix, "no_workers_timeout", settings.no_workers_timeout, " seconds")
        _registered(f"{prefix}scheduler", settings.scheduler, extensions.backends)
        _registered(f"{prefix}cluster_mode", settings.cluster_mode, extensions.cluster_kinds)
        _check_pools(f"{prefix}pools", settings.pools)
    elif isinstance(settings, MonitoringAlerts):
        _above_zero(prefix, "task_timeout", settings.task_timeout, " seconds")
        for key in ("memory_threshold", "error_rate_threshold"):
            value = getattr(settings, key)
            if value is not None and not 0 < value <= 1:
                raise ConfigError(
                    f"config key '{prefix}{key}' is a fraction between 0 and 1 (0.9 = 90%), "
                    f"got {value}"
                )
        if settings.webhook_timeout <= 0:
            raise ConfigError(
                f"config key '{prefix}webhook_timeout' must be more than 0 seconds, got "
                f"{settings.webhook_timeout}"
            )
        if settings.webhook_url is not None:
            _check_webhook(f"{prefix}webhook_url", settings.webhook_url)
    elif isinstance(settings, Monitoring):
        _at_least(prefix, "history", settings.history, 2)
    elif isinstance(settings, Scaling):
        _at_least(prefix, "minimum", settings.minimum, 0)
        if settings.maximum is not None:
            _at_least(prefix, "maximum", settings.maximum, max(1, settings.minimum))
    elif isinstance(settings, ResourceAllocation):
        if settings.cpu_per_worker is not None:
            _at_least(prefix, "cpu_per_worker", settings.cpu_per_worker, 1)
        _at_least(prefix, "gpu_per_worker", settings.gpu_per_worker, 0)


def _check_pools(dotted: str, pools: dict[str, Any]) -> None:
    """Pool names are non-empty strings; sizes whole numbers of 1 or more."""
    for name, size in pools.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"config key {dotted!r} names pools by non-empty strings, got {name!r}; for "
                'example pools: {"database": 2}'
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(
                f"config key '{dotted}.{name}' is how many tasks of pool {name!r} may run at "
                f"once: a whole number of 1 or more, got {size!r}"
            )


def _check_listen_address(dotted: str, address: str) -> None:
    """``host:port`` (IPv4 address or name; empty host: every interface), port 0 to 65535."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535 or any(c in host for c in ":/@ "):
        raise ConfigError(
            f"config key {dotted!r} must be host:port, such as '127.0.0.1:8787' (this machine "
            f"only) or '0.0.0.0:8787' (every interface; port 0: any free port), got {address!r}"
        )


def _check_webhook(dotted: str, url: str) -> None:
    """A webhook is an ``http(s)://`` URL with a host: alerts are POSTed to it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"config key {dotted!r} must be an http:// or https:// URL with a host (alerts are "
            f"POSTed to it as JSON), got {redact_url(url, keep_path=False)!r}"
        )


def _registered(dotted: str, name: str | None, registry: Registry[Any]) -> None:
    """A name that must be registered: a did-you-mean and the known ones when it is not."""
    if name is not None and name not in registry:
        raise ConfigError(
            f"config key {dotted!r} must be one of {', '.join(map(repr, registry.names()))}, "
            f"got {name!r}{did_you_mean(name, registry.names())}"
        )


def _above_zero(prefix: str, key: str, value: float | None, unit: str = "") -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"config key '{prefix}{key}' must be more than 0{unit}, got {value:g}")


def _at_least(prefix: str, key: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(f"config key '{prefix}{key}' must be {minimum} or more, got {value}")


def without_effect(settings: Settings, *, client: bool = False) -> list[str]:
    """Why keys set in ``settings`` would do nothing, one message each (the manager warns).

    ``client``: runs go to a ``Client`` handed to the manager.
    """
    notes: list[str] = []
    limits = settings.resource_limits
    layout_keys = [
        key
        for key, given in (
            ("resource_optimization", settings.resource_optimization),
            ("resource_limits", limits != ResourceLimits()),
        )
        if given
    ]
    if layout_keys and (client or settings.scheduler_address is not None):
        where = "your Client's" if client else f"the scheduler at {settings.scheduler_address}"
        notes.append(
            f"{' and '.join(layout_keys)} lay out the workers of a cluster this manager starts; "
            f"{where} cluster has its own workers, so they have no effect there"
        )
    elif "resource_limits" in layout_keys and not settings.is_distributed:
        notes.append(
            "resource_limits lays out the workers of a cluster this manager starts, and this "
            "config starts no cluster (runs use this process's threads), so it has no effect; "
            "add resource_optimization: true (or cluster_mode: local) to run on a cluster laid "
            "out from it"
        )
    allocation = settings.resource_allocation
    sized_by = [
        key
        for key, given in (
            ("worker_nodes", settings.worker_nodes is not None),
            (
                "resource_allocation",
                allocation.cpu_per_worker is not None or allocation.memory_per_worker is not None,
            ),
        )
        if given
    ]
    if limits.optimization_strategy is not None and sized_by:
        notes.append(
            "resource_limits.optimization_strategy decides how many workers there are and how "
            f"big; {' and '.join(sized_by)} already say that, so it has no effect"
        )
    return notes

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

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from . import extensions
from .errors import ConfigError, did_you_mean
from .redact import HIDDEN, redact_url
from .registry import Registry

__all__ = [
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


SCHEDULER_ADDRESS_ENV = "XLIBRARY_SCHEDULER_ADDRESS"
STORE_ENV = "XLIBRARY_STORE"
SECRET_ENV = "XLIBRARY_CACHE_SECRET"

INFINITE_MEANS_NONE = frozenset({"fault_tolerance.task_timeout", "no_workers_timeout"})
"""Timeouts where ``inf`` is read as ``null``: no limit."""


@dataclass(frozen=True)
class FaultTolerance:
    """``fault_tolerance``: the manager's defaults for every task without its own policy."""

    max_retries: int = 0
    """Extra attempts after the first failure (``@pipeline.retry_on_failure`` overrides it)."""
    retry_delay: float = 0.0
    """Seconds to wait before the first retry."""
    retry_backoff: float = 2.0
    """Each further retry waits this many times longer than the one before."""
    task_timeout: float | None = None
    """Seconds a task may run before it fails with ``TaskTimeoutError``; ``None`` (or ``inf``):
    no limit."""


@dataclass(frozen=True)
class ResourceAllocation:
    """``resource_allocation``: what each worker of a cluster we start has and offers."""

    cpu_per_worker: int | None = None
    """Threads per worker, also offered to tasks as the Dask resource ``cpu_cores``."""
    memory_per_worker: str | int | None = None
    """Memory limit per worker: ``"4Gi"``, ``"512Mi"``, ``"4GB"`` or bytes; also offered as
    the Dask resource ``memory_mb``."""
    gpu_per_worker: int = 0
    """GPUs per worker, offered as the Dask resource ``gpu`` (and requested from Kubernetes
    as ``nvidia.com/gpu``)."""


@dataclass(frozen=True)
class ResourceLimits:
    """``resource_limits``: what the workers of a cluster we start may have in total, and how
    that is laid out into workers (see ``backends.layout``)."""

    max_cpu_cores: int | None = None
    max_memory_gb: float | None = None
    optimization_strategy: Literal["balanced", "throughput", "memory"] | None = None
    """``throughput``: one-core workers, as many as the cores; ``balanced`` (the default): two
    workers sharing the cores and memory; ``memory``: one worker with all of them. Without
    ``max_cpu_cores`` it splits this machine's cores."""


@dataclass(frozen=True)
class Scaling:
    """``scaling``: bounds of adaptive scaling (``auto_scaling``)."""

    minimum: int = 1
    maximum: int | None = None
    """Default: the cluster's worker count (``worker_nodes`` or the layout's)."""


@dataclass(frozen=True)
class SecuritySettings:
    """``security``: TLS to a remote scheduler (distributed's ``Security``)."""

    tls_ca_file: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    require_encryption: bool = True


@dataclass(frozen=True)
class KubernetesSettings:
    """``kubernetes``: the Dask cluster started with dask-kubernetes' operator."""

    name: str = "xlibrary-pipeline"
    namespace: str | None = None
    image: str | None = None
    """A scheduler/worker image with xlibrary installed (build it from ``deploy/Dockerfile``);
    default ``ghcr.io/xlibrary/pipeline:<version>``."""
    env: dict[str, Any] = field(default_factory=dict)
    """Environment variables of the scheduler and worker containers."""
    resource_timeout: float = 60.0
    """Seconds to wait for the Dask operator to create the cluster."""


@dataclass(frozen=True)
class StoreSettings:
    """``store``: where cache entries, saved intermediates and run records live."""

    url: str | None = None
    """An fsspec URL or a directory; default ``./.xlibrary-pipeline`` (env ``XLIBRARY_STORE``)."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """Passed to fsspec (credentials, endpoint), e.g. ``{"anon": False}`` for s3fs."""
    record_runs: bool = True
    """Write a JSON record of every run to the store."""

    def __repr__(self) -> str:  # the URL's password and credentials in the options: hidden
        options = {
            k: HIDDEN if _SECRET_KEY.search(k) else v for k, v in self.storage_options.items()
        }
        return _shown(self, url=redact_url(self.url) if self.url else None, storage_options=options)


@dataclass(frozen=True)
class Caching:
    """``caching``: result caching."""

    enabled: bool = True
    """The master switch: off, no task reads or writes the cache."""
    cache_type: str = "fsspec"
    """``fsspec``: entries in the store; ``redis``: entries in Redis at ``redis_url``; or a
    cache backend registered in :data:`~xlibrary.pipeline.extensions.caches`."""
    ttl: float | None = None
    """Seconds an entry lives when its task sets no ``ttl``; ``None``: until cleared."""
    cache_results: bool = False
    """Cache every task under a derived key (name, code fingerprint, inputs)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout: float = 2.0
    """Seconds one Redis operation may wait (to connect, and for each answer); not retried."""
    failure_threshold: int = 3
    """After this many cache failures in a row (down, or past ``redis_timeout``), the cache is
    skipped: tasks run without it, with one warning."""
    failure_cooldown: float = 60.0
    """Seconds the cache is skipped for before it is asked again."""
    secret: str | None = None
    """Sign entries with HMAC-SHA256 and refuse unsigned or tampered ones (env
    ``XLIBRARY_CACHE_SECRET``). Use it whenever others can write to the store."""

    def __repr__(self) -> str:  # the Redis password and the secret: hidden
        secret = None if self.secret is None else HIDDEN
        return _shown(self, redis_url=redact_url(self.redis_url), secret=secret)


@dataclass(frozen=True, repr=False)
class MonitoringAlerts:
    """``monitoring.alerts``: thresholds that raise alerts (each one set turns its alert on)."""

    task_timeout: float | None = None
    """Seconds: a task that runs longer raises a ``long_execution`` alert (it is not stopped;
    ``fault_tolerance.task_timeout`` stops tasks)."""
    memory_threshold: float | None = None
    """Fraction of the memory limit (the machine's, or a worker's): a run whose peak goes over
    it raises a ``memory_threshold`` alert."""
    error_rate_threshold: float | None = None
    """Fraction of a run's tasks that failed: over it, an ``error_rate_threshold`` alert."""
    webhook_url: str | None = None
    """Alerts are also POSTed here as JSON (an ``http://`` or ``https://`` URL), off the run's
    thread. Shown with its path, query and password hidden: they often hold its token."""
    webhook_timeout: float = 5.0
    """Seconds a POST to the webhook may take; ``pm.close()`` waits this long for the POSTs
    still queued."""

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.webhook_url is not None:
            shown["webhook_url"] = redact_url(self.webhook_url, keep_path=False)
        return f"MonitoringAlerts({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


METRIC_NAMES = (
    "cpu",
    "memory",
    "task_duration",
    "queue_depth",
    "execution_time",
    "memory_usage",
    "task_status",
)
ALERT_KINDS = ("task_failure", "long_execution", "memory_threshold", "error_rate_threshold")


@dataclass(frozen=True)
class Monitoring:
    """``monitoring``: what monitored runs measure, and their alerts."""

    enabled: bool = False
    """Also on when ``monitoring_enabled`` is true or any other key of this section is set."""
    real_time: bool = False
    """On a cluster, send metrics logged in tasks to the client as they are logged."""
    metrics: tuple[Literal[METRIC_NAMES], ...] = ()  # type: ignore[valid-type]
    """What to measure: ``memory``/``memory_usage``: peak memory per task; ``cpu``: CPU
    seconds per task (metric ``cpu_seconds``); ``queue_depth``: tasks waiting for a thread on
    the cluster (``tasks_queued`` in ``get_current_metrics()``). ``task_duration``/
    ``execution_time`` and ``task_status`` are always recorded. A list naming none of memory,
    cpu and queue_depth (or none at all) measures the default: memory and queue depth."""
    alerts: MonitoringAlerts = field(default_factory=MonitoringAlerts)
    history: int = 20
    """Runs of each pipeline that trends and the ``long_execution`` history look back on."""


@dataclass(frozen=True)
class Settings:
    """Everything a ``PipelineManager`` reads from its config, typed and frozen.

    Derive a changed copy with ``dataclasses.replace(settings, debug_mode=True)``.
    """

    # -- where runs execute -------------------------------------------------------------
    scheduler: str | None = None
    """The backend runs go to: ``threads`` (the embedded default: Dask's threaded scheduler
    in this process), ``distributed`` (``dask.distributed``: the cluster the keys below
    name, else a LocalCluster the manager starts), or a name registered in
    :data:`~xlibrary.pipeline.extensions.backends`. Default: ``distributed`` when a cluster
    key, a ``client=`` or the dashboard asks for it, else ``threads``."""
    distributed_mode: bool = False
    """Run on a ``dask.distributed`` LocalCluster that the manager starts and closes."""
    scheduler_address: str | None = None
    """Run on the ``dask.distributed`` scheduler at this address (``tcp://host:8786``)."""
    num_workers: int | None = None
    """Threads of the embedded (local) backend; default ``min(32, cpu_count + 4)``."""
    cluster_mode: str | None = None
    """Start a cluster: ``local`` (a ``dask.distributed`` LocalCluster), ``kubernetes`` (the
    Dask operator's), or a kind registered in ``xlibrary.pipeline.extensions.cluster_kinds``."""
    worker_nodes: int | None = None
    """Workers of a cluster we start."""
    dashboard_address: str = "127.0.0.1:8787"
    """Where the dashboard of a LocalCluster we start listens, ``host:port`` (port 0: any
    free one): this machine only by default; ``0.0.0.0:8787`` opens it to the network. The
    cluster's other servers always listen on 127.0.0.1."""
    no_workers_timeout: float | None = 60.0
    """Seconds a run on ``dask.distributed`` waits while the cluster has no workers at all
    (they died or left, or none joined yet); then the run fails, naming the tasks that could
    not run. ``None`` (or ``inf``): wait for workers for ever."""
    auto_scaling: bool = False
    """Scale the cluster we start between ``scaling.minimum`` and ``scaling.maximum``."""
    scaling: Scaling = field(default_factory=Scaling)
    resource_allocation: ResourceAllocation = field(default_factory=ResourceAllocation)
    resource_optimization: bool = False
    """Run on a cluster this manager starts, its workers laid out from ``resource_limits`` and
    its ``optimization_strategy`` (this machine's cores and memory where no cap is given).
    ``resource_limits`` alone lays out a cluster that another key starts."""
    resource_limits: ResourceLimits = field(default_factory=ResourceLimits)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    keep_results: Literal["all", "final"] | None = None
    """``all``: every finished task's result comes back in ``results``; ``final``: only the
    final tasks' (the rest are released as soon as no later task needs them). Default: all
    on the embedded backend, final on a cluster."""

    # -- failures -------------------------------------------------------------------------
    fault_tolerance: FaultTolerance = field(default_factory=FaultTolerance)
    debug_mode: bool = False
    """Raise ``PipelineExecutionError`` when a run fails, instead of returning the result."""
    raise_on_failure: bool = False
    """Same as ``debug_mode`` for failures, without the rest of debug mode."""

    # -- persistence, monitoring, notebooks -----------------------------------------------
    store: StoreSettings = field(default_factory=StoreSettings)
    caching: Caching = field(default_factory=Caching)
    save_intermediate_results: bool = False
    """Save each finished task's result in the store under its run."""
    monitoring_enabled: bool = False
    """Monitor runs: peak memory and metrics per task, reports, trends, alerts."""
    monitoring: Monitoring = field(default_factory=Monitoring)
    detailed_logging: bool = False
    """Log one line per task start and end, with timing and a summary of inputs and output
    (also on with ``debug_mode``)."""
    interactive_mode: bool = False
    """In a notebook: show each task's result as it finishes (``show_intermediate``)."""
    display_progress: bool = False
    """Show a progress bar while a run goes (in a terminal or a notebook)."""
    inline_results: bool = False
    """In a notebook: show the result table after each run."""

    @property
    def monitored(self) -> bool:
        """Whether runs are monitored (any monitoring key set counts)."""
        return self.monitoring_enabled or self.monitoring != Monitoring()

    @property
    def is_distributed(self) -> bool:
        """Whether runs go to ``dask.distributed`` rather than the embedded local backend."""
        return (
            self.distributed_mode
            or self.scheduler_address is not None
            or self.cluster_mode is not None
            or self.auto_scaling
            or self.resource_optimization
        )


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


_SECRET_KEY = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)


def _shown(settings: object, **hidden: object) -> str:
    """The dataclass repr of ``settings``, with the values of ``hidden`` shown instead."""
    fields = ", ".join(
        f"{f.name}={hidden[f.name] if f.name in hidden else getattr(settings, f.name)!r}"
        for f in dataclasses.fields(settings)  # type: ignore[arg-type]
        if f.repr
    )
    return f"{type(settings).__name__}({fields})"


def load_settings(config: Mapping[str, Any] | Settings | None = None) -> Settings:
    """Check ``config`` against the guide's keys and return typed settings.

    >>> load_settings({"fault_tolerance": {"max_retries": 3}}).fault_tolerance.max_retries
    3
    """
    if isinstance(config, Settings):
        return config
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"config must be a dict of settings, got {type(config).__name__}; "
            'for example PipelineManager({"distributed_mode": True})'
        )
    values = dict(config)
    if "scheduler_address" not in values and os.environ.get(SCHEDULER_ADDRESS_ENV):
        values["scheduler_address"] = os.environ[SCHEDULER_ADDRESS_ENV]
    values = _from_env(values, "store", "url", STORE_ENV)
    values = _from_env(values, "caching", "secret", SECRET_ENV)
    return _build(Settings, values, "")


def _from_env(values: dict[str, Any], section: str, key: str, env: str) -> dict[str, Any]:
    """Fill ``section.key`` from the environment variable ``env`` when the config does not."""
    found = os.environ.get(env)
    current = values.get(section)
    if not found or (isinstance(current, Mapping) and current.get(key) is not None):
        return values
    if current is not None and not isinstance(current, Mapping):
        return values  # the type error is reported by _build
    return {**values, section: {**(current or {}), key: found}}


_T = typing.TypeVar("_T")


def _build(cls: type[_T], values: Mapping[str, Any], prefix: str) -> _T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(_unknown_key_message(dotted, str(key), list(fields), prefix))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key {dotted!r} must be a dict of settings, got "
                    f"{type(value).__name__} {value!r}"
                )
            kwargs[key] = _build(hint, value, f"{dotted}.")  # type: ignore[arg-type]
            continue
        if dotted in INFINITE_MEANS_NONE and _is_plus_infinity(value):
            value = None
        kwargs[key] = _checked(dotted, _convert(dotted, value, hint), hint)
    settings = cls(**kwargs)
    _check_ranges(settings, prefix)
    return settings


def _is_plus_infinity(value: Any) -> bool:
    return isinstance(value, float) and math.isinf(value) and value > 0


def _checked(dotted: str, value: Any, hint: Any) -> Any:
    """The general rules: numbers are finite, strings are not empty."""
    optional = type(None) in typing.get_args(hint)
    if isinstance(value, float) and not math.isfinite(value):
        none = " (or null)" if optional else ""
        raise ConfigError(f"config key {dotted!r} must be a finite number{none}, got {value}")
    if isinstance(value, str) and not value.strip():
        raise ConfigError(
            f"config key {dotted!r} must not be empty; give a value, or leave the key out for "
            "its default"
        )
    return value


def _unknown_key_message(dotted: str, key: str, valid: list[str], prefix: str) -> str:
    where = f"section {prefix[:-1]!r}" if prefix else "the config"
    hint = did_you_mean(key, valid).replace("mean '", f"mean '{prefix}", 1)
    return (
        f"unknown config key {dotted!r}{hint} (valid keys of {where}: {', '.join(sorted(valid))})"
    )


def _convert(dotted: str, value: Any, hint: Any) -> Any:
    """Return ``value`` checked against the type ``hint``, or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(dotted, value, option)
            except ConfigError:
                continue
        raise ConfigError(_type_message(dotted, value, hint))
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"config key {dotted!r} must be one of {', '.join(map(repr, choices))}, "
                f"got {value!r}{did_you_mean(str(value), map(str, choices))}"
            )
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(_type_message(dotted, value, hint))
        return dict(value)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(_type_message(dotted, value, hint))
        return tuple(_convert(f"{dotted}[{i}]", item, item_type) for i, item in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str and isinstance(value, str):
        return value
    raise ConfigError(_type_message(dotted, value, hint))


def _type_message(dotted: str, value: Any, hint: Any) -> str:
    expected = _describe(hint)
    return f"config key {dotted!r} must be {expected}, got {type(value).__name__} {value!r}"


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin is dict:
        return "a dict"
    if hint is type(None):
        return "null (None)"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _check_ranges(settings: object, prefix: str) -> None:
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

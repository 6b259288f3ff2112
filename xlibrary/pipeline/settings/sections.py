"""The sections of the config, each a frozen dataclass: the keys, their types, defaults and
meaning. :mod:`.loading` reads a config dict into them; :mod:`.checks` holds their ranges."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..redact import HIDDEN, redact_url

__all__ = [
    "ALERT_KINDS",
    "INFINITE_MEANS_NONE",
    "METRIC_NAMES",
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
    pools: dict[str, int] = field(default_factory=dict)
    """Concurrency pools, ``{"database": 2}``: how many tasks of each pool
    (``@pipeline.task(..., pool="database")``) run at once, across all runs of the manager on
    threads, and across all clients of the scheduler on a cluster (``distributed.Semaphore``)."""

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


_SECRET_KEY = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)


def _shown(settings: object, **hidden: object) -> str:
    """The dataclass repr of ``settings``, with the values of ``hidden`` shown instead."""
    fields = ", ".join(
        f"{f.name}={hidden[f.name] if f.name in hidden else getattr(settings, f.name)!r}"
        for f in dataclasses.fields(settings)  # type: ignore[arg-type]
        if f.repr
    )
    return f"{type(settings).__name__}({fields})"

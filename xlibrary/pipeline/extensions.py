"""The extension points of the engine, by name: backends (``scheduler``), the clusters a
manager starts (``cluster_mode``) and cache backends (``caching.cache_type``).

Each is a :class:`~.registry.Registry` of classes, the built-in ones registered by path (so
nothing is imported until used, and a missing optional dependency names its extra). The
settings check names against them, so a registered name is a valid config value::

    from xlibrary.pipeline.extensions import cluster_kinds

    cluster_kinds.register("slurm", "my_package.clusters:SlurmKind")
    PipelineManager({"cluster_mode": "slurm"})

* a backend has ``from_settings(settings, *, client, on_connect)`` and the three methods of
  :class:`~.backends.Backend` (``start``, ``run``, ``close``);
* a cluster kind has static ``layout(settings)`` and ``start(settings)``
  (:class:`~.backends.clusters.ClusterKind`);
* a cache backend has ``open(url, storage_options, timeout)`` and the methods of
  :class:`~.store.cache.CacheBackend`.

Stream sources and sinks have registries of their own (:mod:`xlibrary.pipeline.stream`).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .registry import Registry

__all__ = ["backends", "caches", "cluster_kinds"]

backends: Registry[Any] = Registry("scheduler", error=ConfigError)
backends.register("threads", "xlibrary.pipeline.backends.local:LocalBackend")
backends.register(
    "distributed",
    "xlibrary.pipeline.backends.distributed:DistributedBackend",
    extra="pipeline",
    package="distributed",
)

cluster_kinds: Registry[Any] = Registry("cluster_mode", error=ConfigError)
cluster_kinds.register("local", "xlibrary.pipeline.backends.clusters:LocalClusterKind")
cluster_kinds.register(
    "kubernetes",
    "xlibrary.pipeline.backends.kubernetes:KubernetesClusterKind",
    extra="kubernetes",
    package="dask_kubernetes",
)

caches: Registry[Any] = Registry("cache_type", error=ConfigError)
caches.register("fsspec", "xlibrary.pipeline.store.cache:FsCacheBackend")
caches.register("redis", "xlibrary.pipeline.store.redis:RedisCacheBackend", extra="redis")

"""Cluster layout: what the workers of a cluster we start look like, and what they offer.

Layout (:func:`layout`), for ``cluster_mode`` local or kubernetes, and ``auto_scaling``:

* ``resource_allocation`` (``cpu_per_worker``, ``memory_per_worker``, ``gpu_per_worker``) and
  ``worker_nodes`` say it directly;
* otherwise ``resource_limits`` (``max_cpu_cores``, ``max_memory_gb``; this machine's cores
  where not given) is split into workers by its ``optimization_strategy``: ``throughput`` makes
  one-core workers, as many as the cores (the most tasks at once); ``memory`` makes one worker
  with everything (the biggest task fits); ``balanced`` (the default) makes two workers sharing
  it all. This applies when any ``resource_limits`` key or ``resource_optimization`` is set;
* otherwise Dask's own choice for this machine (``worker_nodes`` workers if given).

A worker offers its threads as the Dask resource ``cpu_cores``, its memory limit in MiB as
``memory_mb`` and its GPUs as ``gpu``: the names tasks use in ``resource_requirements``, which
become Dask resource restrictions. With ``resource_limits`` the totals never exceed the caps.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..settings import ResourceLimits, Settings

__all__ = ["WorkerLayout", "layout", "parse_memory"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3, "kb": 10**3, "ki": 2**10, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mi": 2**20, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gi": 2**30, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "ti": 2**40, "tib": 2**40,
}  # fmt: skip


def parse_memory(value: str | int | float, *, key: str = "memory_per_worker") -> int:
    """Bytes from ``"4Gi"``, ``"512Mi"``, ``"4GB"``, ``"1.5 GiB"`` or a number of bytes."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"{key} must be more than 0 bytes, got {value}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"{key} {value!r} is not a memory size; write it like '4Gi', '512Mi', '4GB' or a "
            "number of bytes"
        )
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"{key} must be more than 0 bytes, got {value!r}")
    return size


@dataclass(frozen=True)
class WorkerLayout:
    """The workers of a cluster we start."""

    workers: int
    threads: int | None
    """Per worker; ``None``: Dask's choice."""
    memory: int | None
    """Memory limit per worker in bytes; ``None``: Dask's choice (the machine's share)."""
    gpus: int = 0
    adaptive: tuple[int, int] | None = None
    """``(minimum, maximum)`` workers when scaling adaptively."""
    resources: dict[str, float] = field(default_factory=dict)
    """What each worker offers to task resource restrictions."""


def layout(settings: Settings, *, machine_memory: int | None = None) -> WorkerLayout:
    """The workers of the cluster ``settings`` asks us to start (see the module docstring)."""
    allocation, limits = settings.resource_allocation, settings.resource_limits
    threads = allocation.cpu_per_worker
    memory = (
        parse_memory(allocation.memory_per_worker)
        if allocation.memory_per_worker is not None
        else None
    )
    workers = settings.worker_nodes
    capped = limits.max_cpu_cores is not None or limits.max_memory_gb is not None
    by_limits = settings.resource_optimization or limits != ResourceLimits()
    if threads is None and memory is None and by_limits:
        cores = limits.max_cpu_cores or os.cpu_count() or 1
        strategy = limits.optimization_strategy or "balanced"
        if workers is None:
            workers = {"throughput": cores, "memory": 1}.get(strategy, min(2, cores))
        threads = max(1, cores // workers)
        if limits.max_memory_gb is not None:
            memory = int(limits.max_memory_gb * 2**30 / workers)
    if workers is None:
        workers = _default_workers(threads)
    if capped:
        _check_caps(settings, workers, threads, memory)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    if memory is None and machine_memory is not None:
        memory = machine_memory // workers
    adaptive = None
    if settings.auto_scaling:
        maximum = settings.scaling.maximum or workers
        adaptive = (min(settings.scaling.minimum, maximum), maximum)
    resources: dict[str, float] = {"cpu_cores": threads}
    if memory is not None:
        resources["memory_mb"] = memory // 2**20
    if allocation.gpu_per_worker:
        resources["gpu"] = allocation.gpu_per_worker
    return WorkerLayout(workers, threads, memory, allocation.gpu_per_worker, adaptive, resources)


def _default_workers(threads: int | None) -> int:
    cores = os.cpu_count() or 1
    if threads is not None:
        return max(1, cores // threads)
    from dask.system import CPU_COUNT

    return max(1, min(CPU_COUNT, 4))


def _check_caps(settings: Settings, workers: int, threads: int | None, memory: int | None) -> None:
    limits = settings.resource_limits
    cores = limits.max_cpu_cores
    if cores is not None and threads is not None and threads * workers > cores:
        raise ConfigError(
            f"{workers} workers of {threads} cores make {threads * workers} cores, over "
            f"resource_limits.max_cpu_cores={limits.max_cpu_cores}; lower worker_nodes or "
            "resource_allocation.cpu_per_worker"
        )
    if limits.max_memory_gb is not None and memory is not None:
        total = memory * workers / 2**30
        if total > limits.max_memory_gb * 1.0001:
            raise ConfigError(
                f"{workers} workers of {memory / 2**30:g} GiB make {total:g} GiB, over "
                f"resource_limits.max_memory_gb={limits.max_memory_gb}; lower worker_nodes or "
                "resource_allocation.memory_per_worker"
            )

"""Concurrency pools: at most N tasks of a pool run at once.

A task declared with ``pool="database"`` takes a place in that pool around each call of its
function (each attempt: a task waiting to retry gives its place back), and the config's
``pools: {"database": 2}`` says how many places there are. The place is taken inside the
task wrapper, only for tasks with a pool: other tasks pay nothing. Waiting for a place does
not count against a task's timeout; a task abandoned at its timeout keeps its place until
its function really returns (it still uses what the pool protects).

* On threads (the embedded backend, or ``parallel=False``), a pool is a semaphore of this
  process, one per manager: it counts across all the runs of the manager.
* On ``dask.distributed``, a pool is Dask's own ``distributed.Semaphore`` named
  ``xlibrary-pool-<name>``, held by the scheduler: it counts across all the runs of every
  client of that scheduler. Its leases are kept alive by the workers while tasks hold them
  (``distributed.scheduler.locks.lease-timeout``, 30 s by default, for a worker that died).
  Managers sharing a scheduler must agree on each pool's size: a different one fails the
  task with a :class:`~.errors.ConfigError` naming both.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from .errors import ConfigError, did_you_mean

__all__ = ["SEMAPHORE_PREFIX", "ClusterPool", "LocalPool", "Pool", "Pools"]

SEMAPHORE_PREFIX = "xlibrary-pool-"
"""Pools on a cluster are the ``distributed.Semaphore`` of this name plus the pool's."""


class Pool(Protocol):
    """What the task wrapper holds around a call of a pool's task."""

    name: str

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class LocalPool:
    """A pool of this process: a semaphore shared by every run of one manager."""

    __slots__ = ("_semaphore", "name", "size")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._semaphore = threading.BoundedSemaphore(size)

    def acquire(self) -> None:
        self._semaphore.acquire()

    def release(self) -> None:
        self._semaphore.release()

    def __reduce__(self) -> tuple[Any, ...]:
        # Only threads of this process share it: sent to a cluster, it is the cluster's pool.
        return (ClusterPool, (self.name, self.size))

    def __repr__(self) -> str:
        return f"LocalPool({self.name!r}, {self.size})"


class ClusterPool:
    """A pool on ``dask.distributed``: the scheduler's ``distributed.Semaphore`` of its name,
    one ``Semaphore`` object per worker (its leases are refreshed from that worker)."""

    __slots__ = ("name", "size")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size

    def acquire(self) -> None:
        semaphore = _semaphore(self.name, self.size)
        try:
            semaphore.acquire()
        except ValueError as exc:
            if "Inconsistent max leases" not in str(exc):
                raise
            raise ConfigError(
                f"pool {self.name!r} has another size on this Dask scheduler ({exc}): another "
                f"manager using it set pools: {{{self.name!r}: ...}} differently from this "
                f"one's {self.size}; give every manager that shares the scheduler the same pools"
            ) from exc

    def release(self) -> None:
        _semaphore(self.name, self.size).release()

    def __repr__(self) -> str:
        return f"ClusterPool({self.name!r}, {self.size})"


_semaphores: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], Any]] = (
    weakref.WeakKeyDictionary()
)
_semaphores_lock = threading.Lock()


class _NoWorker:
    """Stands for "not in a worker" among the keys of ``_semaphores``."""


_HERE = _NoWorker()


def _semaphore(name: str, size: int) -> Any:
    """The ``distributed.Semaphore`` of pool ``name`` for the worker running this thread (one
    per worker and pool, so the leases it takes are the ones it gives back and refreshes)."""
    import distributed

    try:
        owner: Any = distributed.get_worker()
    except ValueError:  # a client-side call (not in a task): one per process
        owner = _HERE
    with _semaphores_lock:
        mine = _semaphores.setdefault(owner, {})
        found = mine.get((name, size))
        if found is None:
            found = mine[(name, size)] = distributed.Semaphore(  # type: ignore[no-untyped-call]
                max_leases=size, name=SEMAPHORE_PREFIX + name
            )
        return found


class Pools:
    """The pools of one manager, from its config's ``pools`` (name -> size)."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self.sizes = dict(sizes)
        self._local = {name: LocalPool(name, size) for name, size in self.sizes.items()}
        self._cluster = {name: ClusterPool(name, size) for name, size in self.sizes.items()}

    def check(self, used: Mapping[str, Collection[str]]) -> None:
        """Raise ConfigError when a task uses a pool the config does not define (``used``:
        pool -> the tasks that use it)."""
        for pool, tasks in used.items():
            if pool not in self.sizes:
                shown = ", ".join(repr(t) for t in list(tasks)[:3])
                known = ", ".join(map(repr, self.sizes)) or "none"
                raise ConfigError(
                    f"task {shown} uses pool {pool!r}, which the config's pools do not "
                    f"define{did_you_mean(pool, self.sizes)} (pools: {known}); add it, say "
                    f'pools: {{"{pool}": 2}} (how many of its tasks may run at once)'
                )

    def for_run(self, *, local: bool) -> Mapping[str, Pool]:
        """The pools of a run on threads (``local``) or on a cluster."""
        return self._local if local else self._cluster

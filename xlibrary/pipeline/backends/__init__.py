"""Execute: where a run's Dask graph is computed.

A backend takes the graph of one run and returns each task's :class:`~..lower.Outcome` by
task name. It submits the graph once, and never raises for a task's failure (the task
wrapper turns those into outcomes); it raises :class:`~..errors.ClusterError` when the cluster
itself cannot be started or reached.

* :class:`LocalBackend`: the embedded default; Dask's threaded scheduler in this process, on
  a thread pool the backend owns.
* :class:`DistributedBackend`: a ``dask.distributed`` scheduler: a LocalCluster it starts and
  closes, a scheduler address, or a ``Client`` the user made (never closed by us).

With ``parallel=False`` every backend computes in the calling thread, one task at a time, in
dependency order, so a debugger works inside tasks.

A run whose tasks returned Dask collections is settled before ``run`` returns
(:mod:`.settle`): the collections of the tasks in ``compute`` come back computed, the others
as collections.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from ..lower import Key
from ..outcome import Outcome
from ..watch import RunWatch
from .local import LocalBackend

__all__ = ["Backend", "LocalBackend"]


class Backend(Protocol):
    """Computes the Dask graph of one run."""

    name: str

    def start(self) -> None:
        """Get ready to run (start a pool, connect or start a cluster); called once, before
        the first run, so that start-up does not count as run time."""
        ...

    def run(
        self,
        graph: Mapping[Key, Any],
        keys: Mapping[str, Key],
        *,
        parallel: bool = True,
        progress: RunWatch | None = None,
        wanted: Collection[str] | None = None,
        restrictions: Mapping[Key, Mapping[str, float]] | None = None,
        compute: Collection[str] = (),
        hold: Collection[str] = (),
    ) -> dict[str, Outcome]:
        """Compute ``graph`` and return the outcome of each key in ``keys`` by task name,
        telling ``progress`` as tasks start and finish. Only the tasks in ``wanted`` (default:
        all) return their values; the others return how they went. ``restrictions`` are the
        Dask resources tasks ask for (clusters honour them). The tasks in ``compute`` whose
        values are Dask collections return them computed (see :mod:`.settle`). The results
        of the tasks in ``hold`` are kept for a later round of the run (mapped tasks, see
        :mod:`..expand`): returned here (threads), or held on the cluster, where
        ``held(run_id)`` gives their futures until ``release_held(run_id)``."""
        ...

    def close(self) -> None:
        """Release what the backend started (thread pools, clusters, clients). Idempotent."""
        ...

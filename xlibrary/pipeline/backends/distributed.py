"""Runs on ``dask.distributed``: a LocalCluster we own, a scheduler address, or a user's Client.

Ownership: a cluster or client this backend creates, it closes (``close()``); a ``Client`` the
user hands in is used as it is and never closed. The client is created on first use, so a
manager configured for a cluster costs nothing until it runs something.

On a scheduler we did not start, the first run checks that the workers have xlibrary
installed: they import the task wrapper, and without it every task would fail.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import dask.local

from ..errors import ClusterError, missing_extra
from ..lower import Key
from ..monitoring.progress import Progress, dask_callbacks
from ..runner import FAILED, Failure, Outcome

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

__all__ = ["DistributedBackend"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = "10s"


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise missing_extra("distributed", "pipeline", "running on dask.distributed") from exc
    return distributed


class DistributedBackend:
    """Computes each run's graph on a ``dask.distributed`` cluster with one ``client.get``."""

    name = "distributed"

    def __init__(
        self,
        *,
        client: Client | None = None,
        address: str | None = None,
        on_connect: Callable[[Client], None] | None = None,
        processes: bool = True,
    ) -> None:
        self._on_connect = on_connect
        self._processes = processes
        self._user_client = client
        self._address = address
        self._client: Client | None = client
        self._cluster: LocalCluster | None = None
        self._checked_workers = client is None and address is None  # our own cluster
        self._lock = threading.Lock()
        self._closed = False

    @property
    def owns_cluster(self) -> bool:
        """Whether this backend started (and will close) a LocalCluster."""
        return self._user_client is None and self._address is None

    @property
    def client(self) -> Client:
        """The client runs go through, connecting or starting a cluster on first use."""
        with self._lock:
            if self._closed:
                raise ClusterError("this PipelineManager is closed; create a new one to run")
            if self._client is None:
                self._client = self._connect()
            client = self._client
        if not self._checked_workers:
            self._check_workers(client)
            self._checked_workers = True
        return client

    @property
    def cluster(self) -> LocalCluster | None:
        """The LocalCluster this backend started, if any."""
        return self._cluster

    def _connect(self) -> Client:
        distributed = _import_distributed()
        if self._address is not None:
            try:
                return distributed.Client(
                    self._address, timeout=CONNECT_TIMEOUT, set_as_default=False
                )
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {self._address!r} within "
                    f"{CONNECT_TIMEOUT}: {exc}; check the address and that `dask scheduler` "
                    "is running there"
                ) from exc
        try:
            self._cluster = distributed.LocalCluster(processes=self._processes)
            client = distributed.Client(self._cluster, set_as_default=False)
        except Exception as exc:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None
            raise ClusterError(
                f"could not start a local Dask cluster: {exc}. If this ran at import time of "
                'a script, put the run under `if __name__ == "__main__":` (worker processes '
                "re-import the script)"
            ) from exc
        logger.info("started a local Dask cluster; dashboard at %s", client.dashboard_link)
        return client

    def _check_workers(self, client: Client) -> None:
        try:
            versions: Any = client.get_versions(packages=["xlibrary"])
        except Exception as exc:  # an old scheduler or a comm hiccup: do not block the run
            logger.debug("could not read worker versions: %s", exc)
            return
        missing = [
            address
            for address, info in versions.get("workers", {}).items()
            if isinstance(info, dict) and not info.get("packages", {}).get("xlibrary")
        ]
        if missing:
            raise ClusterError(
                f"the Dask workers {', '.join(sorted(missing))} do not have xlibrary installed, "
                "so they cannot run pipeline tasks; install it where the workers run "
                '(pip install "xlibrary[pipeline]") or use the image built from deploy/'
            )

    def start(self) -> None:
        client = self.client  # connects, or starts the LocalCluster
        if self._on_connect is not None:
            self._on_connect(client)

    def run(
        self,
        graph: Mapping[Key, Any],
        keys: Mapping[str, Key],
        *,
        parallel: bool = True,
        progress: Progress | None = None,
    ) -> dict[str, Outcome]:
        names = list(keys)
        wanted = [keys[name] for name in names]
        if not parallel:
            callbacks = [dask_callbacks(progress)] if progress is not None else None
            values = dask.local.get_sync(graph, wanted, callbacks=callbacks)
            return dict(zip(names, values, strict=True))
        distributed = _import_distributed()
        client = self.client
        futures = client.get(graph, wanted, sync=False)
        try:
            with client.as_current():
                if progress is None:
                    distributed.wait(futures)
                else:
                    for future in distributed.as_completed(futures):
                        progress.done(str(future.key[0]))
            done = [f for f in futures if f.status == "finished"]
            values = dict(zip([f.key for f in done], client.gather(done), strict=True))
        except BaseException:
            client.cancel(futures)  # interrupted: do not leave the run going on the cluster
            raise
        outcomes: dict[str, Outcome] = {}
        for name, future in zip(names, futures, strict=True):
            if future.key in values:
                outcomes[name] = values[future.key]
            else:
                # Dask itself failed the task (a worker died too often, the result could not
                # be sent, the run was cancelled): the task wrapper never reported.
                failure = Failure.from_exception(name, _error_of(future))
                outcomes[name] = Outcome(FAILED, attempts=1, failure=failure)
        return outcomes  # dropping the futures releases the results held on the cluster

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            cluster, self._cluster = self._cluster, None
        if client is not None and client is not self._user_client:
            client.close()
        if cluster is not None:
            cluster.close()


def _error_of(future: Any) -> BaseException:
    if future.status == "cancelled":
        from concurrent.futures import CancelledError

        return CancelledError(f"Dask cancelled the task {future.key!r}")
    try:
        exc = future.exception()
    except Exception as err:  # the exception itself could not be fetched
        return err
    return exc if isinstance(exc, BaseException) else RuntimeError(repr(exc))

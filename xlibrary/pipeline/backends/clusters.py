"""Clusters a manager starts, by ``cluster_mode``: each kind lays its workers out from the
settings (what they offer to task resource requests) and starts them.

Kinds are registered by name in :data:`~xlibrary.pipeline.extensions.cluster_kinds` (``local``:
a ``LocalCluster`` on this machine; ``kubernetes``: a ``KubeCluster`` through the Dask
operator, extra ``kubernetes``). A kind is a class with two static methods, ``layout(settings)
-> WorkerLayout`` and ``start(settings) -> Cluster``; register your own (say, a jobqueue
cluster) with ``cluster_kinds.register("slurm", "my_package.clusters:SlurmKind")`` and select
it with ``cluster_mode: "slurm"``.

Every server of a ``LocalCluster`` we start listens on this machine only (``127.0.0.1``), the
dashboard on ``dashboard_address``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import missing_extra
from ..extensions import cluster_kinds
from ..redact import redact_url
from ..settings import Settings
from .layout import WorkerLayout, layout

if TYPE_CHECKING:
    from distributed import Client
    from distributed.deploy.cluster import Cluster

logger = logging.getLogger("xlibrary.pipeline")

__all__ = [
    "LOCALHOST",
    "ClusterKind",
    "LocalClusterKind",
    "close_unconnected",
    "distributed_options",
    "import_distributed",
    "local_cluster",
    "security",
    "start_cluster",
]


class ClusterKind(Protocol):
    """How one ``cluster_mode`` lays out and starts the cluster a manager starts."""

    @staticmethod
    def layout(settings: Settings) -> WorkerLayout: ...

    @staticmethod
    def start(settings: Settings) -> Cluster: ...


def import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise missing_extra("distributed", "pipeline", "running on dask.distributed") from exc
    return distributed


class LocalClusterKind:
    """A ``LocalCluster`` on this machine, laid out from the settings; with no ``memory``
    given, the workers split this machine's memory."""

    @staticmethod
    def layout(settings: Settings) -> WorkerLayout:
        import psutil

        return layout(settings, machine_memory=int(psutil.virtual_memory().total))

    @staticmethod
    def start(settings: Settings, *, processes: bool | None = None, **options: Any) -> Cluster:
        """The cluster; ``processes`` (default: when the settings ask for a cluster) and
        ``options`` go to ``LocalCluster`` (a scheduler port, scheduler plugins...)."""
        workers = LocalClusterKind.layout(settings)
        cluster = local_cluster(
            n_workers=workers.adaptive[0] if workers.adaptive else workers.workers,
            threads_per_worker=workers.threads,
            memory_limit=workers.memory or "auto",
            resources=workers.resources,
            # dashboard=True alone: an in-process cluster (threads), so a script needs no
            # `if __name__ == "__main__":` guard; the cluster settings ask for processes
            processes=settings.is_distributed if processes is None else processes,
            dashboard_address=settings.dashboard_address,  # 127.0.0.1:8787 unless opened
            **options,
        )
        if workers.adaptive:
            cluster.adapt(minimum=workers.adaptive[0], maximum=workers.adaptive[1])
        return cluster


def security(settings: Settings) -> Any:
    """distributed's ``Security`` for TLS to a remote scheduler, or ``None``."""
    tls = settings.security
    if not (tls.tls_ca_file or tls.tls_client_cert):
        return None
    from distributed import Security

    return Security(
        tls_ca_file=tls.tls_ca_file,
        tls_client_cert=tls.tls_client_cert,
        tls_client_key=tls.tls_client_key,
        require_encryption=tls.require_encryption,
    )


LOCALHOST = "127.0.0.1"


def local_cluster(*, dashboard_address: str, processes: bool, **options: Any) -> Cluster:
    """A ``LocalCluster`` whose servers listen on this machine only (``127.0.0.1``): the
    scheduler, the workers and their HTTP servers (``/health``, ``/metrics``); the dashboard
    listens on ``dashboard_address``. Its ``dashboard_link`` names the address the dashboard
    listens on (distributed's names the machine's outside address for an in-process cluster).
    """
    if processes:
        options["host"] = LOCALHOST  # scheduler, nannies, workers and their HTTP servers
    else:  # in-process comms have no host: give the workers' HTTP servers one
        options["worker_dashboard_address"] = f"{LOCALHOST}:0"
    cluster_class = _local_cluster_class()
    return cluster_class(dashboard_address=dashboard_address, processes=processes, **options)


@functools.cache
def _local_cluster_class() -> type:
    distributed = import_distributed()
    from distributed.utils import format_dashboard_link

    class LocalHostCluster(distributed.LocalCluster):  # type: ignore[misc, name-defined]
        """A LocalCluster whose dashboard link is where its dashboard listens."""

        @property
        def dashboard_link(self) -> str:
            server = getattr(self.scheduler, "http_server", None)
            host = getattr(server, "address", None)
            if not host or host in ("0.0.0.0", "::"):  # every interface: distributed's link
                return str(super().dashboard_link)
            port = getattr(server, "port", None)
            return str(format_dashboard_link(f"[{host}]" if ":" in host else host, port))

    return LocalHostCluster


def start_cluster(settings: Settings) -> Any:
    """The cluster a manager starts for ``settings`` (its ``cluster_mode``, default local)."""
    return cluster_kinds.get(settings.cluster_mode or "local").start(settings)


def distributed_options(settings: Settings, client: Client | None) -> dict[str, Any]:
    """How a :class:`~.distributed.DistributedBackend` reaches its cluster, from the settings."""
    url = settings.store.url or ""
    if url.startswith("memory://"):
        logger.warning(
            "the store %s lives in this process's memory: worker processes of a cluster each "
            "see their own, so saved results and cache entries they write are not shared; use "
            "a directory or an object store for cluster runs",
            redact_url(url),
        )
    options: dict[str, Any] = {"no_workers_timeout": settings.no_workers_timeout}
    if client is not None or settings.scheduler_address is not None:
        options.update(
            client=client, address=settings.scheduler_address, security=security(settings)
        )
    else:
        options["cluster_factory"] = lambda: start_cluster(settings)
    return options


def close_unconnected(exc: BaseException, client_type: type[Client]) -> None:
    """Close the Client whose constructor raised ``exc``.

    A Client that fails to connect keeps its IO-loop thread running until it is garbage
    collected, which the traceback of the error we raise delays for as long as someone holds
    the error; a later Client in the same process could then fail to start its own loop
    ("assert loop is not None" in distributed's LoopRunner). The half-made Client is the
    ``self`` of a frame of the traceback: close it at once.
    """
    tb = exc.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, client_type):
            try:
                candidate.close(timeout=5)
            except Exception as close_exc:  # already half-closed: nothing more to release
                logger.debug("closing a Client that failed to connect: %s", close_exc)
            # a Client that failed to start is "closed" already, and close() then leaves
            # its IO-loop thread running: stop that too (distributed's own LoopRunner)
            runner = getattr(candidate, "_loop_runner", None)
            with contextlib.suppress(Exception):
                if runner is not None:
                    runner.stop()
            return
        tb = tb.tb_next

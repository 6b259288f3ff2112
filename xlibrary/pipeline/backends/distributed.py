"""Runs on ``dask.distributed``: a cluster we start, a scheduler address, or a user's Client.

Ownership: a cluster or client this backend creates, it closes (``close()``); a ``Client`` the
user hands in is used as it is and never closed. The client is created on first use, so a
manager configured for a cluster costs nothing until it runs something.

* Clusters we start come from a factory (a LocalCluster laid out from the settings, or a
  KubeCluster); their workers offer the resources of their layout.
* A scheduler address connects a client, with TLS when ``security`` is configured.
* On a scheduler we did not start, the first run checks that the workers have xlibrary
  installed: they import the task wrapper, and without it every task would fail.

A cluster with no workers at all for ``no_workers_timeout`` seconds while a run waits (they
died, e.g. nanny-less workers of a task that crashes its process, or never joined) fails the
run: a watcher thread asks the scheduler for its worker count about once a second, and at the
deadline cancels the run's tasks, which fail with a :class:`ClusterError` naming them. It is
watched here, on the client side, because a scheduler we did not start keeps its own config
(Dask's ``distributed.scheduler.no-workers-timeout``).

Tasks with ``resource_requirements`` carry them as Dask resource restrictions (a layer of the
graph per distinct request). With ``wanted`` (``keep_results: final``) only the final tasks'
results travel to the client; the other tasks' outcomes, without their values, come through
Dask's event channel (a worker plugin reports each one on topic ``xlibrary-outcomes``), so
their results are released on the workers as soon as no later task needs them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..errors import ClusterError, RunCancelled, missing_extra
from ..lower import Key
from ..monitoring.progress import RunWatch
from ..runner import DONE, FAILED, SKIPPED, Failure, Outcome, register_with_distributed
from ..store import SerializationError
from .reporting import OUTCOMES_TOPIC, OutcomeReporter

if TYPE_CHECKING:
    from distributed import Client
    from distributed.deploy.cluster import Cluster

__all__ = ["DistributedBackend"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = "10s"
REPORT_WAIT = 30.0
"""Seconds to wait, after the final tasks finish, for the last outcome reports."""
CLOSE_TIMEOUT = 20.0
"""Seconds each of closing the client and closing the cluster may take."""


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise missing_extra("distributed", "pipeline", "running on dask.distributed") from exc
    return distributed


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
    distributed = _import_distributed()
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


class DistributedBackend:
    """Computes each run's graph on a ``dask.distributed`` cluster with one ``client.get``."""

    name = "distributed"

    def __init__(
        self,
        *,
        client: Client | None = None,
        address: str | None = None,
        security: Any = None,
        cluster_factory: Callable[[], Cluster] | None = None,
        on_connect: Callable[[Client], None] | None = None,
        no_workers_timeout: float | None = None,
    ) -> None:
        self._user_client = client
        self._no_workers_timeout = no_workers_timeout
        self._address = address
        self._security = security
        self._cluster_factory = cluster_factory
        self._on_connect = on_connect
        self._client: Client | None = client
        self._cluster: Cluster | None = None
        self._checked_workers = client is None and address is None  # our own cluster
        self._reports: dict[str, dict[str, bytes]] = {}
        self._progress: dict[str, RunWatch] = {}
        self._reporting = False
        self._lock = threading.Lock()
        self._closed = False
        self._workers = _WorkerCount(lambda: self._client)

    @property
    def owns_cluster(self) -> bool:
        """Whether this backend started (and will close) its cluster."""
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
    def cluster(self) -> Cluster | None:
        """The cluster this backend started, if any."""
        return self._cluster

    def start(self) -> None:
        client = self.client  # connects, or starts the cluster
        if self._on_connect is not None:
            self._on_connect(client)

    def _connect(self) -> Client:
        distributed = _import_distributed()
        if self._address is not None:
            try:
                return distributed.Client(
                    self._address,
                    timeout=CONNECT_TIMEOUT,
                    set_as_default=False,
                    security=self._security,
                )
            except Exception as exc:  # OSError, TimeoutError; TypeError for TLS without keys
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {self._address!r} within "
                    f"{CONNECT_TIMEOUT}: {exc}; check the address (tls:// when it uses TLS, "
                    "with the security settings) and that `dask scheduler` is running there"
                ) from exc
        factory = self._cluster_factory or (lambda: distributed.LocalCluster())
        try:
            self._cluster = factory()
            client = distributed.Client(self._cluster, set_as_default=False)
        except Exception as exc:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None
            if isinstance(exc, ClusterError | ImportError):
                raise
            raise ClusterError(
                f"could not start the Dask cluster: {exc}. If this ran at import time of a "
                'script, put the run under `if __name__ == "__main__":` (worker processes '
                "re-import the script)"
            ) from exc
        logger.info("started a Dask cluster; dashboard at %s", client.dashboard_link)
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

    def offered_resources(self) -> list[dict[str, float]]:
        """The resources each worker declares now."""
        info = self.client.scheduler_info()
        return [dict(w.get("resources") or {}) for w in info.get("workers", {}).values()]

    def _ensure_reporting(self, client: Client) -> None:
        if self._reporting:
            return
        client.subscribe_topic(OUTCOMES_TOPIC, self._on_report)
        client.register_plugin(OutcomeReporter())
        self._reporting = True

    def _on_report(self, event: Any) -> None:
        _, msg = event
        if not isinstance(msg, dict) or not isinstance(msg.get("run"), str):
            return
        runs = self._reports.get(msg["run"])
        if runs is not None:
            runs[msg["task"]] = msg["meta"]
            progress = self._progress.get(msg["run"])
            if progress is not None:
                progress.done(str(msg["task"]))

    def run(
        self,
        graph: Mapping[Key, Any],
        keys: Mapping[str, Key],
        *,
        parallel: bool = True,
        progress: RunWatch | None = None,
        wanted: Collection[str] | None = None,
        restrictions: Mapping[Key, Mapping[str, float]] | None = None,
    ) -> dict[str, Outcome]:
        names = list(keys)
        if not parallel:
            from .local import run_locally

            return run_locally(graph, keys, None, progress=progress, wanted=wanted)
        distributed = _import_distributed()
        register_with_distributed()  # outcomes whose values cannot travel fail their tasks
        client = self.client
        fetch = names if wanted is None else [name for name in names if name in wanted]
        fetched = set(fetch)
        rest = [name for name in names if name not in fetched]
        run_id = next(iter(keys.values()))[1]
        if rest:
            self._ensure_reporting(client)
            self._reports[run_id] = {}
            if progress is not None:
                self._progress[run_id] = progress
        if progress is not None:
            progress.probe = lambda: _processing(client, run_id)
        watch: _NoWorkersWatch | None = None
        try:
            wanted_keys = [keys[n] for n in fetch]
            try:
                futures = client.get(
                    _with_restrictions(graph, restrictions), wanted_keys, sync=False
                )
            except Exception:  # the graph cannot be pickled: fail the tasks that cannot
                shippable = _shippable(graph, keys)
                if shippable is None:
                    raise
                futures = client.get(
                    _with_restrictions(shippable, restrictions), wanted_keys, sync=False
                )
            if self._no_workers_timeout is not None:
                watch = _NoWorkersWatch(
                    client, futures, self._no_workers_timeout, self._workers.count
                )
            try:
                with client.as_current():
                    try:
                        if progress is None:
                            distributed.wait(futures)
                        elif rest or not progress.listeners:  # reports count; watch for a cancel
                            _wait(distributed, futures, progress)
                        else:
                            for future in distributed.as_completed(futures):
                                progress.done(str(future.key[0]))
                                if progress.cancelled:
                                    raise RunCancelled("the run was cancelled")
                    except CancelledError:
                        if watch is None or not watch.fired:
                            raise
                done = [f for f in futures if f.status == "finished"]
                values = dict(zip([f.key for f in done], client.gather(done), strict=True))
            except BaseException as exc:
                if progress is not None:  # what had finished, for the run's record
                    progress.finished.update(self._finished(client, run_id, fetch, futures))
                with contextlib.suppress(Exception):  # a closed client: the error says why
                    client.cancel(futures)  # interrupted: leave nothing going on the cluster
                if isinstance(exc, Exception) and client.status in ("closing", "closed"):
                    raise ClusterError(
                        f"the Dask client was closed while run {run_id} was going, so the run "
                        "stopped; keep the client open until the runs that use it return "
                        "(close it after pm.close())"
                    ) from exc
                raise
            outcomes: dict[str, Outcome] = {}
            lost: BaseException | None = None
            stranded = self._stranded(run_id, names, fetch, futures, rest, watch)
            for name, future in zip(fetch, futures, strict=True):
                if future.key in values:
                    outcomes[name] = values[future.key]
                else:
                    # Dask itself failed the task (a worker died too often, the result could
                    # not be sent, the run was cancelled): the task wrapper never reported.
                    lost = stranded if stranded and future.status == "cancelled" else None
                    lost = lost or _error_of(future)
                    outcomes[name] = Outcome(
                        FAILED, attempts=1, failure=Failure.from_exception(name, lost)
                    )
            if rest:
                outcomes.update(self._reported(run_id, rest, stranded or lost))
            return _blame_unsendable(outcomes)
        finally:
            if watch is not None:
                watch.stop()
            self._reports.pop(run_id, None)
            self._progress.pop(run_id, None)
            if progress is not None:
                progress.probe = None

    def _finished(
        self, client: Client, run_id: str, fetch: list[str], futures: list[Any]
    ) -> dict[str, Outcome]:
        """Outcomes, without values, of the tasks of a run that stops early that had finished:
        the reports that came, and the finished futures' results (as far as they come)."""
        out = {
            name: cloudpickle.loads(meta) for name, meta in self._reports.get(run_id, {}).items()
        }
        done = [(n, f) for n, f in zip(fetch, futures, strict=True) if f.status == "finished"]
        try:
            values = client.gather([f for _, f in done], errors="skip")
        except Exception:  # the client or the cluster is gone: the reports are all there is
            return out
        for (name, _), value in zip(done, values, strict=False):
            if type(value) is Outcome:
                out[name] = value.without_value()
        return out

    def _stranded(
        self,
        run_id: str,
        names: list[str],
        fetch: list[str],
        futures: list[Any],
        rest: list[str],
        watch: _NoWorkersWatch | None,
    ) -> ClusterError | None:
        """When the watch cancelled the run for want of workers: the error of the tasks that
        could not run, naming them."""
        if watch is None or not watch.fired:
            return None
        reports = self._reports.get(run_id, {})
        waiting = {n for n, f in zip(fetch, futures, strict=True) if f.status == "cancelled"}
        waiting.update(n for n in rest if n not in reports)
        stuck = [name for name in names if name in waiting]
        shown = ", ".join(repr(name) for name in stuck[:10])
        more = f" and {len(stuck) - 10} more" if len(stuck) > 10 else ""
        where = f"at {self._address}" if self._address else "of this run"
        return ClusterError(
            f"the Dask cluster {where} had no workers for {watch.timeout:g}s "
            f"(no_workers_timeout), so {len(stuck)} task(s) could not run: {shown}{more}. "
            "Its workers died or left: look for a task that crashes its worker process "
            "(os._exit, a segfault, running out of memory) or workers that were stopped; start "
            "workers (`dask worker ADDRESS`), or raise no_workers_timeout when they take "
            "longer to join"
        )

    def _reported(
        self, run_id: str, names: list[str], lost: BaseException | None
    ) -> dict[str, Outcome]:
        """Outcomes of tasks whose results stayed on the cluster, from their reports."""
        reports = self._reports[run_id]
        # when Dask lost a task its report never comes: wait only for the others in flight
        deadline = time.monotonic() + (1.0 if lost is not None else REPORT_WAIT)
        # the final tasks report too: wait for these names, not for a count of reports
        missing = [name for name in names if name not in reports]
        while missing and time.monotonic() < deadline:
            time.sleep(0.005)
            missing = [name for name in missing if name not in reports]
        outcomes: dict[str, Outcome] = {}
        for name in names:
            meta = reports.get(name)
            if meta is not None:
                outcomes[name] = cloudpickle.loads(meta)
            elif lost is not None:
                outcomes[name] = Outcome(
                    FAILED, attempts=1, failure=Failure.from_exception(name, lost)
                )
            else:
                raise ClusterError(
                    f"task {name!r} finished on the cluster but its outcome never reached the "
                    f"client within {REPORT_WAIT:g}s; rerun, or set keep_results: all"
                )
        return outcomes

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            cluster, self._cluster = self._cluster, None
        # bounded: a scheduler or workers that do not answer must not hold the caller
        if client is not None and client is not self._user_client:
            _close_within(client, "the Dask client")
        if cluster is not None:
            _close_within(cluster, "the Dask cluster")


def _close_within(closable: Any, what: str) -> None:
    try:
        closable.close(timeout=CLOSE_TIMEOUT)
    except Exception as exc:  # TimeoutError, or a comm error of a dead scheduler
        logger.warning("%s did not close within %gs (%s); leaving it", what, CLOSE_TIMEOUT, exc)


class _WorkerCount:
    """The scheduler's worker count, asked at most every half second whatever the number of
    runs watching it; ``None`` when the scheduler does not answer in time."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._asked = -1.0
        self._count: int | None = None

    def count(self) -> int | None:
        with self._lock:
            if time.monotonic() - self._asked < 0.5:
                return self._count
            client = self._client()
            try:
                info = client.sync(client.scheduler.identity, n_workers=0, callback_timeout=5)
            except Exception:  # a slow or closed scheduler: Dask's own errors say so
                info = None
            count = info.get("n_workers") if isinstance(info, dict) else None
            self._count = count if isinstance(count, int) else None
            self._asked = time.monotonic()
            return self._count


class _NoWorkersWatch:
    """Cancels a run's futures once the cluster has had no workers for ``timeout`` seconds."""

    def __init__(
        self,
        client: Any,
        futures: list[Any],
        timeout: float,
        workers: Callable[[], int | None],
    ) -> None:
        self.timeout = timeout
        self.fired = False
        self._client = client
        self._futures = futures
        self._workers = workers
        self._stop = threading.Event()
        thread = threading.Thread(target=self._watch, name="xlibrary-no-workers", daemon=True)
        thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        interval = max(0.05, min(1.0, self.timeout / 4))
        since: float | None = None
        while not self._stop.wait(interval):
            count = self._workers()
            if count is None or count > 0:
                since = None
                continue
            now = time.monotonic()
            since = now if since is None else since
            if now - since >= self.timeout:
                self.fired = True
                try:
                    self._client.cancel(self._futures, reason="no-workers")
                except Exception:  # the client is closing: the run ends anyway
                    logger.debug("could not cancel a run without workers", exc_info=True)
                return


def _processing(client: Any, run_id: str) -> list[str]:
    """The tasks of run ``run_id`` processing on a worker now, asked of the scheduler."""

    def on_scheduler(dask_scheduler: Any, run_id: str) -> list[str]:
        return sorted(
            {
                ts.key[0]
                for ws in dask_scheduler.workers.values()
                for ts in ws.processing
                if type(ts.key) is tuple and len(ts.key) == 2 and ts.key[1] == run_id
            }
        )

    # callback_timeout is the client's own (not passed on): a status request never hangs on a
    # scheduler that does not answer
    names: list[str] = client.run_on_scheduler(on_scheduler, run_id=run_id, callback_timeout=5)
    return names


def _wait(distributed: Any, futures: list[Any], watch: RunWatch) -> None:
    """Wait for ``futures``; raise RunCancelled as soon as the run is cancelled."""
    while True:
        try:
            distributed.wait(futures, timeout=0.2)
            return
        except TimeoutError:
            if watch.cancelled:
                raise RunCancelled("the run was cancelled") from None


def _shippable(graph: Mapping[Key, Any], keys: Mapping[str, Key]) -> dict[Key, Any] | None:
    """``graph`` with each task that cannot be pickled (its function, or what the function
    closes over or uses, holds a lock, say) standing as that task's failure; ``None`` when
    every task pickles (the graph failed for another reason)."""
    from dask.task_spec import DataNode

    out, failed = dict(graph), False
    for name, key in keys.items():
        node = graph[key]
        try:
            cloudpickle.dumps(node.value if isinstance(node, DataNode) else node.func)
        except Exception as exc:
            error = SerializationError(
                f"task {name!r} cannot be sent to the Dask workers: its function, or something "
                f"it uses (a closure variable, a global), cannot be pickled: {exc}; create such "
                "objects (locks, connections, open files) inside the task, or run the pipeline "
                "on threads (the embedded backend)"
            )
            error.__cause__ = exc
            failure = Failure.from_exception(name, error)
            out[key] = DataNode(key, Outcome(FAILED, attempts=0, failure=failure))
            failed = True
    return out if failed else None


def _blame_unsendable(outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
    """Fail the tasks whose values could not travel to a task on another worker.

    Such a task reported success from its worker; the task that needed its value was skipped
    with the failure (see runner._skipped_after), which is the task's own."""
    for outcome in list(outcomes.values()):
        failure = outcome.failure
        if outcome.status != SKIPPED or failure is None:
            continue
        origin = outcomes.get(failure.task)
        if origin is not None and origin.status in DONE:
            outcomes[failure.task] = Outcome(
                FAILED, None, origin.attempts, origin.started, origin.finished, failure,
                metrics=origin.metrics, peak_memory=origin.peak_memory, worker=origin.worker,
            )  # fmt: skip
    return outcomes


def _with_restrictions(
    graph: Mapping[Key, Any], restrictions: Mapping[Key, Mapping[str, float]] | None
) -> Any:
    """The graph with Dask resource restrictions: one layer per distinct request."""
    if not restrictions:
        return graph
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    groups: dict[tuple[tuple[str, float], ...], dict[Key, Any]] = {}
    for key, request in restrictions.items():
        groups.setdefault(tuple(sorted(request.items())), {})[key] = graph[key]
    plain = {key: task for key, task in graph.items() if key not in restrictions}
    layers: dict[str, Any] = {"xlibrary-tasks": MaterializedLayer(plain)}
    for i, (asked, tasks) in enumerate(groups.items()):
        layers[f"xlibrary-resources-{i}"] = MaterializedLayer(
            tasks, annotations={"resources": dict(asked)}
        )
    return HighLevelGraph(layers, {name: set() for name in layers})


def _error_of(future: Any) -> BaseException:
    if future.status == "cancelled":
        return CancelledError(f"Dask cancelled the task {future.key!r}")
    try:
        exc = future.exception()
    except Exception as err:  # the exception itself could not be fetched
        return err
    if type(exc).__name__ == "KilledWorker":
        return ClusterError(
            f"Dask gave up on the task (KilledWorker): {exc} In short: the task crashed or "
            "lost the Dask worker running it each time it ran "
            "(distributed.scheduler.allowed-failures); look for a crash, os._exit or "
            "running out of memory in that task"
        )
    return exc if isinstance(exc, BaseException) else RuntimeError(repr(exc))

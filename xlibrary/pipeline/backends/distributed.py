"""Runs on ``dask.distributed``: a cluster we start, a scheduler address, or a user's Client.

Ownership: a cluster or client this backend creates, it closes (``close()``); a ``Client`` the
user hands in is used as it is and never closed. The client is created on first use, so a
manager configured for a cluster costs nothing until it runs something.

* Clusters we start come from a factory (a LocalCluster laid out from the settings, or a
  KubeCluster); their workers offer the resources of their layout.
* A scheduler address connects a client, with TLS when ``security`` is configured.
* On a scheduler we did not start, the first run checks that the workers have xlibrary
  installed: they import the task wrapper, and without it every task would fail.

A cluster with no workers at all for ``no_workers_timeout`` seconds while a run waits fails
the run, naming the tasks that could not run (:mod:`.noworkers`).

Tasks with ``resource_requirements`` carry them as Dask resource restrictions (a layer of the
graph per distinct request). With ``wanted`` (``keep_results: final``) only the final tasks'
results travel to the client; the other tasks' outcomes, without their values, come through
Dask's event channel (a worker plugin reports each one on topic ``xlibrary-outcomes``), so
their results are released on the workers as soon as no later task needs them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..errors import ClusterError, RunCancelled
from ..extensions import cluster_kinds
from ..keys import name_in, run_of
from ..lower import Key
from ..outcome import Outcome, register_with_distributed
from ..settings import Settings
from ..watch import RunWatch
from .clusters import close_unconnected, distributed_options, import_distributed
from .noworkers import NoWorkersWatch, WorkerCount
from .reporting import OUTCOMES_TOPIC, OutcomeReporter
from .settle import release_run, settle_on_cluster
from .shipping import blame_unsendable, error_of, failed_outcome, shippable, with_restrictions

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


class DistributedBackend:
    """Computes each run's graph on a ``dask.distributed`` cluster with one ``client.get``."""

    name = "distributed"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        client: Client | None = None,
        on_connect: Callable[[Client], None] | None = None,
    ) -> DistributedBackend:
        return cls(on_connect=on_connect, **distributed_options(settings, client))

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
        self._held: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, RunWatch] = {}
        self._reporting = False
        self._lock = threading.Lock()
        self._closed = False
        self._workers = WorkerCount(lambda: self._client)

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

    def describe(self) -> str:
        """Where runs compute, for log lines: whose client, and its scheduler."""
        client = self._client
        if self._user_client is not None:
            return f"distributed (the Client at {_scheduler_of(self._user_client)})"
        if self._address is not None:
            return f"distributed (the scheduler at {self._address})"
        where = f", dashboard {client.dashboard_link}" if client is not None else ""
        return f"distributed (a cluster this manager started{where})"

    @property
    def cluster(self) -> Cluster | None:
        """The cluster this backend started, if any."""
        return self._cluster

    def start(self) -> None:
        client = self.client  # connects, or starts the cluster
        if self._on_connect is not None:
            self._on_connect(client)

    def _connect(self) -> Client:
        distributed = import_distributed()
        if self._address is not None:
            try:
                return distributed.Client(
                    self._address,
                    timeout=CONNECT_TIMEOUT,
                    set_as_default=False,
                    security=self._security,
                )
            except Exception as exc:  # OSError, TimeoutError; TypeError for TLS without keys
                close_unconnected(exc, distributed.Client)
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

    def threads(self) -> int:
        """How many tasks the cluster's workers run at once now."""
        return sum(self.client.nthreads().values())

    def offered(self, settings: Settings) -> tuple[list[dict[str, float]], str] | None:
        """What each worker offers to task resource requests, and the cluster's name for
        messages: the layout of a cluster we start, else the workers' declarations now
        (``None`` when it has no workers yet)."""
        if self.owns_cluster:
            kind = cluster_kinds.get(settings.cluster_mode or "local")
            return [kind.layout(settings).resources], "the cluster this manager starts"
        offered = self.offered_resources()
        if not offered:
            return None
        return offered, f"the cluster at {self.client.scheduler_info().get('address')}"

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
        compute: Collection[str] = (),
        hold: Collection[str] = (),
    ) -> dict[str, Outcome]:
        names = list(keys)
        if not parallel:
            from .local import run_locally

            wanted = None if wanted is None else {*wanted, *hold}  # a later round reads them
            return run_locally(graph, keys, None, progress=progress, wanted=wanted, compute=compute)
        distributed = import_distributed()
        register_with_distributed()  # outcomes whose values cannot travel fail their tasks
        client = self.client
        fetch = names if wanted is None else [name for name in names if name in wanted]
        fetched = set(fetch)
        rest = [name for name in names if name not in fetched]
        run_id = run_of(next(iter(keys.values()))) or ""
        holding = [name for name in hold if name in keys]  # stay on the cluster for a later round
        asked = fetch + [name for name in holding if name not in fetched]
        if rest:
            self._ensure_reporting(client)
            self._reports[run_id] = {}
            if progress is not None:
                self._progress[run_id] = progress
        if progress is not None:
            progress.probe = lambda: _processing(client, run_id)
        watch: NoWorkersWatch | None = None
        try:
            wanted_keys = [keys[n] for n in asked]
            try:
                futures = client.get(
                    with_restrictions(graph, restrictions), wanted_keys, sync=False
                )
            except Exception:  # the graph cannot be pickled: fail the tasks that cannot
                sendable = shippable(graph, keys)
                if sendable is None:
                    raise
                futures = client.get(
                    with_restrictions(sendable, restrictions), wanted_keys, sync=False
                )
            if holding:
                by_name = dict(zip(asked, futures, strict=True))
                self._held.setdefault(run_id, {}).update({n: by_name[n] for n in holding})
                futures = futures[: len(fetch)]
            if self._no_workers_timeout is not None:
                watch = NoWorkersWatch(
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
                                progress.done(name_in(future.key))
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
                self.release_held(run_id)
                with contextlib.suppress(Exception):  # a closed client: the error says why
                    client.cancel(futures)  # interrupted: leave nothing going on the cluster
                threading.Thread(  # nor what its tasks persisted (a dead cluster: no wait)
                    target=release_run, args=(client, run_id), daemon=True
                ).start()
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
                    lost = lost or error_of(future)
                    outcomes[name] = failed_outcome(name, lost)
            if rest:
                outcomes.update(self._reported(run_id, rest, stranded or lost))
            ordered = {name: outcomes[name] for name in names}  # topological, as the keys
            return settle_on_cluster(
                client, run_id, blame_unsendable(ordered), compute, progress=progress
            )
        finally:
            if watch is not None:
                watch.stop()
            self._reports.pop(run_id, None)
            self._progress.pop(run_id, None)
            if progress is not None:
                progress.probe = None

    def held(self, run_id: str) -> dict[str, Any]:
        """The futures of the results of run ``run_id`` held for its later rounds, by task."""
        return dict(self._held.get(run_id, {}))

    def release_held(self, run_id: str) -> None:
        """Let the cluster forget the results held for run ``run_id`` (it has ended)."""
        self._held.pop(run_id, None)

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
        watch: NoWorkersWatch | None,
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
                outcomes[name] = failed_outcome(name, lost)
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


def _scheduler_of(client: Client) -> str:
    try:
        return str(client.scheduler.address)  # type: ignore[union-attr]
    except Exception:  # closed, or not connected yet
        return "an unknown address"


def _close_within(closable: Any, what: str) -> None:
    try:
        closable.close(timeout=CLOSE_TIMEOUT)
    except Exception as exc:  # TimeoutError, or a comm error of a dead scheduler
        logger.warning("%s did not close within %gs (%s); leaving it", what, CLOSE_TIMEOUT, exc)


def _processing(client: Any, run_id: str) -> list[str]:
    """The tasks of run ``run_id`` processing on a worker now (a mapped task while one of
    its elements, keyed ``(task, run_id, i)``, is), asked of the scheduler."""

    def on_scheduler(dask_scheduler: Any, run_id: str) -> list[str]:
        # keys.py's reading of a key, spelt out: the scheduler may not have xlibrary
        return sorted(
            {
                key[2] if len(key) == 3 and type(key[2]) is str else key[0]
                for ws in dask_scheduler.workers.values()
                for ts in ws.processing
                if type(key := ts.key) is tuple and 2 <= len(key) <= 3 and key[1] == run_id
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

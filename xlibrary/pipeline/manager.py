"""The facade: ``PipelineManager`` reads the config once and offers the user guide's methods;
runs go through :mod:`~.engine`, monitoring through :mod:`~.monitoring.session`, records and
results through :mod:`~.store`, recovery through :mod:`~.recovery`."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .backends.factory import Backends
from .engine import RunEngine, RunRequest
from .execute import RunObserver
from .handles import RunHandle
from .monitoring.report import MonitoringDashboard, PerformanceReport
from .monitoring.session import MonitoringSession
from .pipeline import Pipeline, declared_pipeline, pipeline_decorator
from .plan import CacheExplanation, Plan
from .records import Alert, RunStatus
from .recovery import ErrorDetails, error_details, intermediate_results
from .result import PipelineResult
from .settings import Settings, load_settings, without_effect
from .spec import CachePolicy, option_decorator
from .store import Cache, RunStore, cache_of, default_store_url, runs_of
from .taskmetrics import log_metric

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["PipelineManager"]

logger = logging.getLogger("xlibrary.pipeline")

F = TypeVar("F", bound=Callable[..., Any])


class PipelineManager:
    """Runs pipelines as Dask graphs, in this process or on a ``dask.distributed`` cluster.

    >>> pm = PipelineManager()                                  # embedded: threads, no cluster
    >>> pm = PipelineManager({"distributed_mode": True})        # a LocalCluster pm owns
    >>> pm = PipelineManager({"scheduler_address": "tcp://10.0.0.5:8786"})
    >>> pm = PipelineManager(client=my_client)                  # a Client you made (kept open)

    A manager that starts a cluster closes it in :meth:`close` (or at the end of a ``with``
    block); a ``Client`` handed in is never closed. ``config`` is checked at once: an unknown
    key or a value of the wrong type raises :class:`ConfigError`.
    """

    def __init__(
        self, config: Mapping[str, Any] | Settings | None = None, *, client: Client | None = None
    ) -> None:
        self.settings: Settings = load_settings(config)
        self._default_store = default_store_url()  # fixed now: a later chdir does not move it
        self._monitoring = monitoring = MonitoringSession(self.settings, lambda: self.store)
        self._backends = Backends(
            self.settings, client=client, on_connect=monitoring.connected,
            dashboard=lambda: monitoring.policy.dashboard,
        )  # fmt: skip
        self._engine = RunEngine(
            self.settings, backends=self._backends, monitoring=monitoring,
            store=lambda: self.store, cache=lambda: self.cache,
        )  # fmt: skip
        self._closed = False
        if not isinstance(config, Settings):  # a shipped manager (a worker's) warns not again
            for note in without_effect(self.settings, client=client is not None):
                logger.warning(note)

    # -- declaring ----------------------------------------------------------------------
    @overload
    def pipeline(self, name: Callable[[], Any], /) -> Pipeline: ...
    @overload
    def pipeline(self, name: str | None = None, /) -> Callable[[Callable[[], Any]], Pipeline]: ...
    def pipeline(self, name: str | Callable[[], Any] | None = None, /) -> Any:
        """Turn a builder function into a pipeline; ``task`` inside it declares the tasks::

            @pm.pipeline("reports")
            def reports():
                @task("load")
                def load(): ...

        The builder runs once, at decoration; ``pm.execute_pipeline("reports")`` finds it."""
        return pipeline_decorator(name, self._engine.known)

    @property
    def pipelines(self) -> Mapping[str, Pipeline]:
        """The pipelines declared with :meth:`pipeline` or last run by this manager, by name."""
        return dict(self._engine.known)

    def plan(self, pipeline: Pipeline | str) -> Plan:
        """Check ``pipeline`` and decide what a run of it will do, without running it."""
        return self._engine.plan(self._engine.resolve(pipeline))

    # -- running ------------------------------------------------------------------------
    def execute_pipeline(
        self, pipeline: Pipeline | str, parallel: bool = True, *,
        raise_on_failure: bool | None = None, display_progress: bool | None = None,
        show_intermediate: bool | None = None, params: Mapping[str, Any] | None = None,
        refresh: bool | str | Collection[str] | None = None,
        targets: Iterable[str] | None = None, from_tasks: Iterable[str] | None = None,
        tags: Iterable[str] | None = None, compute_final: bool = True,
    ) -> PipelineResult:  # fmt: skip
        """Run ``pipeline`` once, as one Dask graph, and return its :class:`PipelineResult`.

        ``parallel=False`` runs one task at a time in this thread (a debugger works inside
        tasks). A failing task fails the run and skips the tasks downstream of it; independent
        branches run to the end. ``raise_on_failure`` (default: the config's ``debug_mode`` or
        ``raise_on_failure``) raises ``PipelineExecutionError`` instead. ``display_progress``
        shows a progress bar; ``show_intermediate`` each task's result as it finishes. ``params``:
        the tasks' keyword-only parameters; ``refresh`` (True, task names): recompute those;
        ``targets``, ``from_tasks``, ``tags``: run part of it; ``compute_final=False``: keep
        the final Dask collections (:mod:`~.selection`, :mod:`~.lazy`)."""
        return self._engine.run_interactive(
            self._engine.resolve(pipeline), parallel=parallel, raise_on_failure=raise_on_failure,
            display_progress=display_progress, show_intermediate=show_intermediate,
            params=params, refresh=refresh, targets=targets, from_tasks=from_tasks, tags=tags,
            compute_final=compute_final,
        )  # fmt: skip

    def execute_distributed(
        self, pipeline: Pipeline | str, *, raise_on_failure: bool | None = None
    ) -> PipelineResult:
        """Run ``pipeline`` on ``dask.distributed``: the configured scheduler or client, else
        a LocalCluster this manager starts (and closes in :meth:`close`)."""
        target, request = self._engine.resolve(pipeline), RunRequest(backend="distributed")
        return self._engine.run(target, request, raise_on_failure=raise_on_failure)

    def submit(
        self, pipeline: Pipeline | str, parallel: bool = True, *,
        params: Mapping[str, Any] | None = None, refresh: bool | Collection[str] | None = None,
        targets: Iterable[str] | None = None, from_tasks: Iterable[str] | None = None,
        tags: Iterable[str] | None = None, compute_final: bool = True,
    ) -> RunHandle:  # fmt: skip
        """Start a run and return its :class:`RunHandle` at once (``run_id``, ``status()``,
        ``result(timeout=)``, ``cancel()``), once the pipeline, ``params`` and the selection
        (as in :meth:`execute_pipeline`) check."""
        request = RunRequest(parallel=parallel, params=params, refresh=refresh, targets=targets,
            from_tasks=from_tasks, tags=tags, compute_final=compute_final)  # fmt: skip
        return self._engine.submit(self._engine.resolve(pipeline), request)

    def handle(self, run_id: str) -> RunHandle | None:
        """The handle of a run of this manager (the last 1,000 are kept)."""
        return self._engine.registry.get(run_id)

    def get_pipeline_status(self, pipeline_id: str) -> RunStatus:
        """The status of a run (by run id) or of a pipeline's latest run (by name), with each
        task's state and timings, also of runs other processes recorded in the store; a
        pipeline declared here that has not run yet is ``pending``, with no run id."""
        declared = self._engine.known.get(pipeline_id) or declared_pipeline(pipeline_id)
        return self._engine.status(pipeline_id, declared)

    def add_observer(self, observer: RunObserver) -> RunObserver:
        """Tell ``observer`` of every run: ``observer.run_started(record)`` when it starts and
        ``observer.run_finished(result)`` when it ends (see :class:`~.execute.RunObserver`)."""
        self._engine.observers.append(observer)
        return observer

    # -- caching and the store -----------------------------------------------------------
    @overload
    def cache_result(self, func: F, /) -> F: ...
    @overload
    def cache_result(
        self, func: None = None, /, *, key: str | None = None, ttl: float | None = None
    ) -> Callable[[F], F]: ...
    def cache_result(
        self, func: Callable[..., Any] | None = None, /, *, key: str | None = None,
        ttl: float | None = None,
    ) -> Any:  # fmt: skip
        """Cache the task's result, above or below ``task``: under ``key`` whatever its
        inputs (``"daily_computation"``), or a key derived from the task's name, code and
        inputs. ``ttl`` (seconds) defaults to the config's ``caching.ttl``."""
        policy = CachePolicy(key=key, ttl=ttl)
        return option_decorator(func, cache=policy)

    @property
    def store(self) -> RunStore:
        """Run records and saved results, at ``store.url`` (default ``./.xlibrary-pipeline``)."""
        return runs_of(self.settings, self._default_store)

    @property
    def cache(self) -> Cache | None:
        """The result cache, or ``None`` when ``caching.enabled`` is off."""
        return cache_of(self.settings, self._default_store)

    def explain_cache(
        self, pipeline: Pipeline | str, *, params: Mapping[str, Any] | None = None
    ) -> dict[str, CacheExplanation]:
        """Per task: would the next run (with ``params``) hit the cache; if not, why not."""
        return self._engine.explain(self._engine.resolve(pipeline), self.cache, params)

    def clear_cache(
        self, pipeline: Pipeline | str | None = None, *, task: str | None = None
    ) -> int:
        """Delete cache entries: all of them, a pipeline's, or one task's. Returns how many."""
        cache = self.cache
        name = pipeline.name if isinstance(pipeline, Pipeline) else pipeline
        return 0 if cache is None else cache.clear(pipeline=name, task=task)

    def prune_cache(self) -> int:
        """Delete expired cache entries. Returns how many."""
        cache = self.cache
        return 0 if cache is None else cache.prune()

    # -- debugging and recovery -----------------------------------------------------------
    def get_error_details(self, error_or_run: object) -> ErrorDetails:
        """``failed_task``, ``error_message``, ``stack_trace`` and ``run_id`` of a failed run,
        from its ``PipelineExecutionError``, its result, its run id or the pipeline's name."""
        return error_details(self.store, error_or_run)

    def get_intermediate_results(
        self, pipeline_name: str, *, run_id: str | None = None,
        tasks: Collection[str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The results the latest run of ``pipeline_name`` (or ``run_id``) saved, by task
        (only ``tasks``' when given). Needs ``save_intermediate_results: True`` (cached
        tasks come from the cache)."""
        return intermediate_results(self.store, self.cache, pipeline_name, run_id, tasks)

    def retry_failed_task(
        self, pipeline_name: str | None = None, task_name: str | None = None, *,
        pipeline: Pipeline | None = None, run_id: str | None = None, parallel: bool = True,
    ) -> PipelineResult:  # fmt: skip
        """Run ``task_name`` again from its saved inputs, then the tasks downstream of it; the
        tasks that succeeded in the failed run (or ``run_id``) are restored from the store.
        From a new process, pass the pipeline (``pipeline=``)."""
        target = pipeline if pipeline is not None else pipeline_name
        return self._engine.retry(target, task_name, run_id=run_id, parallel=parallel)

    def resume(
        self, pipeline: Pipeline | str, *, run_id: str | None = None, parallel: bool = True
    ) -> PipelineResult:
        """Continue the latest failed run of ``pipeline`` (or ``run_id``): run what did not
        finish, restoring what did from the store."""
        return self._engine.resume(pipeline, run_id=run_id, parallel=parallel)

    # -- monitoring -----------------------------------------------------------------------
    def enable_monitoring(
        self, metrics: Collection[str] | None = None, alerts: Collection[str] | None = None,
        dashboard: bool = False,
    ) -> None:  # fmt: skip
        """Monitor the runs that follow: per task memory, CPU and metrics, reports, trends and
        ``alerts``; ``metrics`` narrows what is measured; ``dashboard=True`` runs on
        ``dask.distributed`` with its dashboard (``pm.dashboard_link``) and Pipelines page."""
        self._monitoring.enable(metrics, alerts, dashboard)
        if dashboard:
            logger.info("dashboard: %s", self.dashboard_link)

    @overload
    def track_performance(self, func: F, /) -> F: ...
    @overload
    def track_performance(self, func: None = None, /) -> Callable[[F], F]: ...
    def track_performance(self, func: Callable[..., Any] | None = None, /) -> Any:
        """Measure the task closely in every run (see ``Pipeline.monitor_performance``)."""
        return option_decorator(func, monitor=True)

    def log_metric(self, name: str, value: float) -> None:
        """Record a metric: inside a task, the task's (in its run record and report); outside,
        this program's (in ``get_monitoring_dashboard().get_current_metrics()``)."""
        log_metric(name, value)

    def on_alert(self, callback: Callable[[Alert], object]) -> Callable[[Alert], object]:
        """Call ``callback(alert)`` for every alert a run raises; usable as a decorator."""
        self._monitoring.on_alert(callback)
        return callback

    def get_performance_report(
        self, pipeline_name: str | Pipeline, *, run_id: str | None = None
    ) -> PerformanceReport:
        """The latest run's (or ``run_id``'s) performance: ``total_time`` s, ``peak_memory``
        MB, and per task duration, attempts, status, peak memory and metrics; read from the
        run record, so it also reports runs made by other processes."""
        name = pipeline_name.name if isinstance(pipeline_name, Pipeline) else pipeline_name
        return self._monitoring.report(name, run_id)

    def get_monitoring_dashboard(self) -> MonitoringDashboard:
        """Current metrics and performance trends (see :class:`MonitoringDashboard`)."""
        started = self._backends.started
        return self._monitoring.dashboard(lambda: self.client if started("distributed") else None)

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard of the cluster runs go to (started on first use), or ``None``
        on the embedded local backend."""
        client = self.client
        return None if client is None else str(client.dashboard_link)

    @contextlib.contextmanager
    def performance_report(self, filename: str) -> Iterator[None]:
        """Write a performance report of the runs inside the block to ``filename``: Dask's
        own (``distributed.performance_report``, inline so it opens offline) on a cluster,
        this manager's report of the last run otherwise."""
        with self._monitoring.report_runs(filename, self.client):
            yield

    @property
    def client(self) -> Client | None:
        """The ``dask.distributed`` Client runs go to (started on first use), or ``None``
        when this manager runs on the embedded local backend."""
        if self._backends.default_name() != "distributed":
            return None
        return self._backends.get("distributed").client  # type: ignore[attr-defined, no-any-return]

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Close what this manager started: thread pools, its LocalCluster and client. A
        ``Client`` handed in by the user stays open. Closing twice is harmless."""
        self._closed = True
        self._engine.close()
        self._backends.close()
        self.store.flush()  # records written in the background are in the store
        self._monitoring.close()  # alerts queued for a webhook go out (within its timeout)

    def __reduce__(self) -> tuple[Any, ...]:
        # Tasks often call pm.log_metric(...) through a global or a closure, so cloudpickle
        # ships the manager with them: it travels as its settings, and becomes a manager of
        # the same settings that has started nothing (one per process, closed at its exit).
        return (_manager_for, (self.settings,))

    def __enter__(self) -> PipelineManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PipelineManager {'closed' if self._closed else self._backends.describe()}>"


_shipped: dict[str, PipelineManager] = {}  # per process: closed when it exits
_shipped_lock = threading.Lock()


def _manager_for(settings: Settings) -> PipelineManager:
    """The manager a pickled manager becomes in another process (one per settings)."""
    key = repr(dataclasses.astuple(settings))  # exact: the repr of Settings hides secrets
    with _shipped_lock:
        if key not in _shipped:
            _shipped[key] = PipelineManager(settings)
        return _shipped[key]


@atexit.register
def _close_shipped() -> None:
    for manager in list(_shipped.values()):
        with contextlib.suppress(Exception):  # exiting: nothing to tell anyone
            manager.close()

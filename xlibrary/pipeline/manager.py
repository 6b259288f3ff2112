"""The facade: ``PipelineManager`` reads the config once and runs pipelines."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .backends import Backend, LocalBackend
from .errors import ConfigError, PipelineDefinitionError, PipelineError
from .execute import Persistence, RunObserver, execute, new_run_id
from .handles import RunHandle, Submitted, not_started, status_of_record
from .monitoring import hooks as monitoring_hooks
from .monitoring.alerts import Alert
from .monitoring.config import MonitorConfig
from .monitoring.metrics import add_driver_listener, log_metric
from .monitoring.progress import wanted as progress_wanted
from .monitoring.report import MonitoringDashboard, PerformanceReport, performance_report
from .pipeline import CachePolicy, Pipeline, build_pipeline, find_pipeline, set_task_options
from .plan import CacheExplanation, Plan, did_you_mean, explain, make_plan
from .recovery import (
    ErrorDetails,
    RecoveryPlan,
    error_details,
    intermediate_results,
    resume_plan,
    retry_plan,
)
from .redact import redact_url
from .result import PipelineResult
from .settings import Settings, load_settings, without_effect
from .store import Cache, RunStore, default_store_url, open_cache, open_runs
from .store.names import check_run_id

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
        self,
        config: Mapping[str, Any] | Settings | None = None,
        *,
        client: Client | None = None,
    ) -> None:
        self.settings: Settings = load_settings(config)
        if client is not None and self.settings.scheduler_address is not None:
            raise ConfigError(
                "both client= and scheduler_address are set; pass one: the Client already "
                "knows its scheduler"
            )
        self._client = client
        if not isinstance(config, Settings):  # a shipped manager (a worker's) warns not again
            for note in without_effect(self.settings, client=client is not None):
                logger.warning(note)
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._plans: weakref.WeakKeyDictionary[Pipeline, tuple[int, Plan]] = (
            weakref.WeakKeyDictionary()
        )
        self._pipelines: dict[str, Pipeline] = {}
        self._warned: set[tuple[str, str, str]] = set()
        self._finalizer = weakref.finalize(self, _close_backends, self._backends)
        self._default_store = default_store_url()  # fixed now: a later chdir does not move it
        self._submitted = Submitted()
        self._running: dict[str, RunHandle] = {}  # blocking runs going now, by run id
        self._monitor_config = MonitorConfig.from_settings(self.settings)
        self._monitoring = monitoring_hooks.MonitoringState()
        self._pages = False  # the dashboard's Pipelines page is registered on our client
        add_driver_listener(self._driver_metric)

    # -- declaring ----------------------------------------------------------------------
    @overload
    def pipeline(self, name: Callable[[], Any], /) -> Pipeline: ...
    @overload
    def pipeline(self, name: str | None = None, /) -> Callable[[Callable[[], Any]], Pipeline]: ...
    def pipeline(self, name: str | Callable[[], Any] | None = None, /) -> Any:
        """Turn a builder function into a pipeline; ``task`` inside it declares the tasks.

        ::

            @pm.pipeline("reports")
            def reports():
                @task("load")
                def load(): ...

            pm.execute_pipeline(reports)          # reports is now a Pipeline

        The builder runs once, at decoration. The pipeline is also registered with the manager,
        so ``pm.execute_pipeline("reports")`` finds it by name.
        """
        if callable(name):
            return self.pipeline(None)(name)

        def decorate(builder: Callable[[], Any]) -> Pipeline:
            pipeline = build_pipeline(name or builder.__name__, builder)
            self._pipelines[pipeline.name] = pipeline
            return pipeline

        return decorate

    @property
    def pipelines(self) -> Mapping[str, Pipeline]:
        """The pipelines declared with :meth:`pipeline` or last run by this manager, by name."""
        return dict(self._pipelines)

    # -- running ------------------------------------------------------------------------
    def execute_pipeline(
        self,
        pipeline: Pipeline | str,
        parallel: bool = True,
        *,
        raise_on_failure: bool | None = None,
        display_progress: bool | None = None,
        show_intermediate: bool | None = None,
    ) -> PipelineResult:
        """Run ``pipeline`` once and return its :class:`PipelineResult`.

        The run is lowered to one Dask graph and submitted once. ``parallel=False`` runs one
        task at a time in this thread, in dependency order (a debugger works inside tasks).
        A failing task makes ``success`` false and skips the tasks downstream of it, while
        independent branches run to the end. With ``raise_on_failure=True`` (or the config's
        ``debug_mode`` / ``raise_on_failure``) a failure raises ``PipelineExecutionError``.
        ``display_progress`` shows a progress bar (default: the config's, when the output is a
        terminal or a notebook); ``show_intermediate`` shows each task's result as it finishes
        (on a cluster: when the run ends; default: on in a notebook with ``interactive_mode``),
        and ``inline_results`` shows the result table in a notebook.
        """
        live = self._live_results(show_intermediate)
        result = self._run(
            pipeline,
            parallel=parallel,
            raise_on_failure=raise_on_failure,
            display_progress=display_progress,
            listeners=[live] if live is not None else (),
            # asked for in this call, a cluster sends them all back (unless the config says)
            keep_results="all" if show_intermediate and not self.settings.keep_results else None,
        )
        self._show(result, live)
        return result

    def _live_results(self, show_intermediate: bool | None) -> Any:
        """A listener showing each task's result as it finishes, when that is wanted:
        ``show_intermediate``, or by default ``interactive_mode`` in a notebook."""
        if show_intermediate is False:
            return None
        if show_intermediate is None and not self.settings.interactive_mode:
            return None
        from .integrations.notebook import LiveResults, in_notebook

        if show_intermediate is None and not in_notebook():
            return None
        return LiveResults()

    def _show(self, result: PipelineResult, live: Any) -> None:
        """The notebook conveniences after a run: the task results not shown while it ran
        (a cluster keeps values until the end), and the result table (``inline_results``)."""
        if live is None and not self.settings.inline_results:
            return
        from .integrations.notebook import in_notebook, show_task

        if live is not None:
            for name, value in result.results.items():
                if name not in live.shown:
                    show_task(name, value)
        if self.settings.inline_results and in_notebook():
            result.display_results()

    # -- non-blocking runs ------------------------------------------------------------------
    def submit(self, pipeline: Pipeline | str, parallel: bool = True) -> RunHandle:
        """Start a run and return its :class:`RunHandle` at once (``run_id``, ``status()``,
        ``result(timeout=)``, ``cancel()``). The pipeline is checked before this returns."""
        target = self._resolve(pipeline)
        plan = self.plan(target)
        handle = RunHandle(target.name, new_run_id(), [t.name for t in plan.tasks])
        self._submitted.start(
            handle,
            lambda h: self._run(
                target,
                parallel=parallel,
                raise_on_failure=False,
                run_id=h.run_id,
                listeners=[h.tracker],
                cancel=h.cancel_event,
                track=False,  # the handle tracks it
            ),
        )
        return handle

    def handle(self, run_id: str) -> RunHandle | None:
        """The handle of a run this manager submitted (the last 1,000 are kept)."""
        return self._submitted.get(run_id)

    def get_pipeline_status(self, pipeline_id: str) -> dict[str, Any]:
        """The status of a run (by run id) or of a pipeline's latest run (by name): ``pending``,
        ``running``, ``succeeded``, ``failed`` or ``cancelled``, with each task's state and
        timings. Runs recorded in the store by other processes are answered too. A pipeline
        declared in this process that has not run yet is ``pending``, with no run id."""
        handle = self._submitted.get(pipeline_id) or self._running.get(pipeline_id)
        if handle is not None:
            described: dict[str, Any] = handle.describe()
            return described
        going = [h for h in list(self._running.values()) if h.pipeline == pipeline_id]
        latest = max(
            [h for h in (self._submitted.latest(pipeline_id), *going) if h is not None],
            key=lambda h: h.run_id,
            default=None,
        )
        store = self.store
        record = store.find_record(pipeline_id) or store.read_record(pipeline_id)
        if latest is not None and (record is None or latest.run_id >= record["run_id"]):
            newest: dict[str, Any] = latest.describe()
            return newest
        if record is None:
            declared = self._pipelines.get(pipeline_id) or find_pipeline(pipeline_id)
            if declared is not None:  # declared here, not run yet (a run may be about to start)
                return not_started(declared.name, list(declared.task_names))
            raise PipelineError(
                f"no run or pipeline {pipeline_id!r} is known here or recorded in the store "
                f"{redact_url(store.url)}"
            )
        return status_of_record(record)

    def execute_distributed(
        self, pipeline: Pipeline | str, *, raise_on_failure: bool | None = None
    ) -> PipelineResult:
        """Run ``pipeline`` on ``dask.distributed``: the configured scheduler or client, else
        a LocalCluster this manager starts (and closes in :meth:`close`)."""
        return self._run(
            pipeline, parallel=True, raise_on_failure=raise_on_failure, distributed=True
        )

    def _run(
        self,
        pipeline: Pipeline | str,
        *,
        parallel: bool,
        raise_on_failure: bool | None,
        distributed: bool | None = None,
        recovery: RecoveryPlan | None = None,
        display_progress: bool | None = None,
        run_id: str | None = None,
        listeners: Collection[Any] = (),
        cancel: threading.Event | None = None,
        keep_results: str | None = None,
        track: bool = True,
    ) -> PipelineResult:
        pipeline = self._resolve(pipeline)
        plan = self.plan(pipeline)
        self._pipelines[pipeline.name] = pipeline  # the latest pipeline run under a name
        backend = self._backend(self._wants_distributed() if distributed is None else distributed)
        local = backend.name == "local" or not parallel
        self._check_resources(plan, backend, local)
        keep = self.settings.keep_results or keep_results or ("all" if local else "final")
        live = None
        if track:  # get_pipeline_status follows it task by task, from any thread, while it goes
            run_id = run_id or new_run_id()
            live = RunHandle(pipeline.name, run_id, [t.name for t in plan.tasks])
            live.begin()
            listeners = [*listeners, live.tracker]
            self._running[run_id] = live
        try:
            result = execute(
                plan,
                backend,
                parallel=parallel,
                persistence=self._persistence(),
                recovery=recovery,
                monitor=monitoring_hooks.ManagerMonitor(
                    self._monitor_config,
                    self._monitoring,
                    self.store,
                    local=local,
                    memory_limit=self._memory_limits(local),
                ),
                observers=self._observers(local),
                progress=progress_wanted(self.settings.display_progress, display_progress),
                keep_results=keep,
                run_id=run_id,
                listeners=list(listeners),
                cancel=cancel,
            )
        finally:
            if live is not None:
                self._running.pop(live.run_id, None)  # from now on the store answers
        pipeline._remember(result)  # its picture shows how this run went
        if raise_on_failure is None:
            raise_on_failure = self.settings.debug_mode or self.settings.raise_on_failure
        if raise_on_failure and result.error is not None:
            raise result.error
        return result

    def plan(self, pipeline: Pipeline) -> Plan:
        """Check ``pipeline`` and decide what a run of it will do, without running it."""
        cached = self._plans.get(pipeline)
        if cached is not None and cached[0] == pipeline.version:
            return cached[1]
        plan = make_plan(pipeline, self.settings.fault_tolerance, self.settings.caching)
        self._plans[pipeline] = (pipeline.version, plan)
        return plan

    def _resolve(self, pipeline: object) -> Pipeline:
        if isinstance(pipeline, Pipeline):
            return pipeline
        if isinstance(pipeline, str):
            found = self._pipelines.get(pipeline) or find_pipeline(pipeline)
            if found is not None:
                return found
            raise PipelineDefinitionError(
                f"no pipeline named {pipeline!r} is known to this manager"
                f"{did_you_mean(pipeline, self._pipelines)}; pass the Pipeline object, or "
                "declare it with @pm.pipeline"
            )
        if callable(pipeline):
            raise PipelineDefinitionError(
                f"{getattr(pipeline, '__qualname__', pipeline)!r} is a function, not a pipeline; "
                'decorate the builder with @pm.pipeline("name") or pass a Pipeline'
            )
        raise PipelineDefinitionError(f"execute_pipeline takes a Pipeline, got {pipeline!r}")

    # -- caching and the store -----------------------------------------------------------
    @overload
    def cache_result(self, func: F, /) -> F: ...
    @overload
    def cache_result(
        self, func: None = None, /, *, key: str | None = None, ttl: float | None = None
    ) -> Callable[[F], F]: ...
    def cache_result(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        key: str | None = None,
        ttl: float | None = None,
    ) -> Any:
        """Cache the task's result, above or below ``task``.

        ``key`` caches it under that name whatever its inputs (``"daily_computation"``);
        without one the key is derived from the task's name, code and inputs, so changing
        either misses. ``ttl`` (seconds) defaults to the config's ``caching.ttl``.
        """
        policy = CachePolicy(key=key, ttl=ttl)

        def decorate(f: F) -> F:
            set_task_options(f, cache=policy)
            return f

        return decorate(func) if func is not None else decorate

    @property
    def store(self) -> RunStore:
        """Run records and saved results, at ``store.url`` (default ``./.xlibrary-pipeline``)."""
        settings = self.settings
        return open_runs(
            settings.store.url or self._default_store,
            settings.store.storage_options,
            self._secret,
        )

    @property
    def cache(self) -> Cache | None:
        """The result cache, or ``None`` when ``caching.enabled`` is off."""
        caching = self.settings.caching
        if not caching.enabled:
            return None
        breaker = (caching.redis_timeout, caching.failure_threshold, caching.failure_cooldown)
        if caching.cache_type == "redis":
            return open_cache("redis", caching.redis_url, None, self._secret, caching.ttl, *breaker)
        store = self.settings.store
        return open_cache(
            "fsspec", store.url or self._default_store, store.storage_options, self._secret,
            caching.ttl, *breaker,
        )  # fmt: skip

    @property
    def _secret(self) -> bytes | None:
        secret = self.settings.caching.secret
        return secret.encode() if secret else None

    def _persistence(self) -> Persistence:
        return Persistence(
            runs=self.store,
            cache=self.cache,
            save_results=self.settings.save_intermediate_results,
        )

    def _observers(self, local: bool) -> list[RunObserver]:
        observers: list[RunObserver] = []
        if self.settings.store.record_runs:
            observers.append(monitoring_hooks.RecordWriter(self.store))
        if self._pages and not local:
            observers.append(monitoring_hooks.DashboardPublisher(self.client))
        return observers

    def explain_cache(self, pipeline: Pipeline | str) -> dict[str, CacheExplanation]:
        """For each task: would the next run take it from the cache, and if not, why."""
        return explain(self.plan(self._resolve(pipeline)), self.cache)

    def clear_cache(
        self, pipeline: Pipeline | str | None = None, *, task: str | None = None
    ) -> int:
        """Delete cache entries: all of them, a pipeline's, or one task's. Returns how many."""
        cache = self.cache
        if cache is None:
            return 0
        name = pipeline.name if isinstance(pipeline, Pipeline) else pipeline
        return cache.clear(pipeline=name, task=task)

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
        self,
        pipeline_name: str,
        *,
        run_id: str | None = None,
        tasks: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """The results the latest run of ``pipeline_name`` (or ``run_id``) saved, by task
        (only ``tasks``' when given).

        Needs ``save_intermediate_results: True`` (cached tasks come from the cache).
        """
        if run_id is not None:
            check_run_id(run_id)
        return intermediate_results(self.store, self.cache, pipeline_name, run_id, tasks)

    def retry_failed_task(
        self,
        pipeline_name: str | None = None,
        task_name: str | None = None,
        *,
        pipeline: Pipeline | None = None,
        run_id: str | None = None,
        parallel: bool = True,
    ) -> PipelineResult:
        """Run ``task_name`` again from its saved inputs, then the tasks downstream of it.

        Tasks that succeeded in the failed run (or ``run_id``) are restored from the store,
        not run again. Works from a new process on the same store, once the pipeline is
        declared there (or passed as ``pipeline=``). Returns the new run's result.
        """
        if run_id is not None:
            check_run_id(run_id)
        target = self._resolve(pipeline if pipeline is not None else pipeline_name)
        if task_name is None:
            task_name = error_details(self.store, target.name).failed_task
        recovery = retry_plan(self.store, self.plan(target), task_name, run_id)
        return self._run(target, parallel=parallel, raise_on_failure=None, recovery=recovery)

    def resume(
        self, pipeline: Pipeline | str, *, run_id: str | None = None, parallel: bool = True
    ) -> PipelineResult:
        """Continue the latest failed run of ``pipeline`` (or ``run_id``): run what did not
        finish, restoring what did from the store."""
        if run_id is not None:
            check_run_id(run_id)
        target = self._resolve(pipeline)
        recovery = resume_plan(self.store, self.plan(target), run_id)
        return self._run(target, parallel=parallel, raise_on_failure=None, recovery=recovery)

    # -- monitoring -----------------------------------------------------------------------
    def enable_monitoring(
        self,
        metrics: Collection[str] | None = None,
        alerts: Collection[str] | None = None,
        dashboard: bool = False,
    ) -> None:
        """Monitor the runs that follow: per task peak memory, CPU and metrics, reports,
        trends and ``alerts`` (``task_failure``, ``long_execution``, ``memory_threshold``,
        ``error_rate_threshold``). ``metrics`` narrows what is measured. ``dashboard=True``
        runs on ``dask.distributed`` with its Bokeh dashboard (``pm.dashboard_link``) and a
        Pipelines page (``<dashboard>/pipelines``)."""
        config = dataclasses.replace(self._monitor_config, enabled=True)
        config = config.measuring(metrics or ()).alerting(alerts or ())
        if dashboard:
            config = dataclasses.replace(config, dashboard=True)
        self._monitor_config = config
        if dashboard:
            logger.info("dashboard: %s", self.dashboard_link)

    @overload
    def track_performance(self, func: F, /) -> F: ...
    @overload
    def track_performance(self, func: None = None, /) -> Callable[[F], F]: ...
    def track_performance(self, func: Callable[..., Any] | None = None, /) -> Any:
        """Measure the task closely in every run (see ``Pipeline.monitor_performance``)."""

        def decorate(f: F) -> F:
            set_task_options(f, monitor=True)
            return f

        return decorate(func) if func is not None else decorate

    def log_metric(self, name: str, value: float) -> None:
        """Record a metric: inside a task, the task's (in its run record and report); outside,
        this program's (in ``get_monitoring_dashboard().get_current_metrics()``)."""
        log_metric(name, value)

    def _driver_metric(self, name: str, value: float) -> None:
        self._monitoring.record_metric(None, name, value)

    def on_alert(self, callback: Callable[[Alert], object]) -> Callable[[Alert], object]:
        """Call ``callback(alert)`` for every alert a run raises; usable as a decorator."""
        self._monitoring.callbacks.append(callback)
        return callback

    def get_performance_report(
        self, pipeline_name: str | Pipeline, *, run_id: str | None = None
    ) -> PerformanceReport:
        """The latest run's (or ``run_id``'s) performance: ``total_time`` s, ``peak_memory_mb``
        (also as the guide's ``peak_memory``), and per task duration, attempts, status, peak
        memory and metrics; read from the run record, so it also reports runs made by other
        processes."""
        name = pipeline_name.name if isinstance(pipeline_name, Pipeline) else pipeline_name
        if run_id is not None:
            check_run_id(run_id)
        record = self.store.read_record(name, run_id)
        if record is None or record.get("finished") is None:
            raise PipelineError(
                f"no finished run of pipeline {name!r} is recorded in the store "
                f"{redact_url(self.store.url)}; run it first (with store.record_runs on)"
            )
        return performance_report(record)

    def get_monitoring_dashboard(self) -> MonitoringDashboard:
        """Current metrics and performance trends (see :class:`MonitoringDashboard`)."""
        return MonitoringDashboard(
            self.store,
            self._monitoring.metrics,
            self._monitoring.last_runs,
            self._cluster_metrics,
            self._monitor_config.history,
        )

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
        client = self.client
        if client is not None:
            from distributed import performance_report

            report = performance_report(filename=filename, mode="inline")  # type: ignore[no-untyped-call]
            with client.as_current(), report:
                yield
            return
        before = dict(self._monitoring.last_runs)
        yield
        for name, last in self._monitoring.last_runs.items():
            if before.get(name) != last:
                self.get_performance_report(name, run_id=last["run_id"]).save_html(filename)

    def _memory_limits(self, local: bool) -> Callable[[str | None], int | None]:
        if local:
            import psutil

            total = int(psutil.virtual_memory().total)
            return lambda worker: total
        limits: dict[str, int] | None = None

        def limit(worker: str | None) -> int | None:
            nonlocal limits
            if limits is None:
                info = self.client.scheduler_info() if self.client is not None else {}
                limits = {
                    address: int(w.get("memory_limit") or 0)
                    for address, w in info.get("workers", {}).items()
                }
            return limits.get(worker or "") or None

        return limit

    def _cluster_metrics(self) -> dict[str, Any] | None:
        backend = self._backends.get("distributed")
        if backend is None:
            return None
        client = self.client
        if client is None:
            return None
        info = client.scheduler_info()
        workers = info.get("workers", {})
        metrics = [w.get("metrics", {}) for w in workers.values()]
        # a lambda travels by value: the scheduler needs no xlibrary to run it
        running, waiting = client.run_on_scheduler(  # type: ignore[no-untyped-call]
            lambda dask_scheduler: (
                sum(min(len(ws.processing), ws.nthreads) for ws in dask_scheduler.workers.values()),
                len(dask_scheduler.queued)
                + len(dask_scheduler.unrunnable)
                + sum(
                    max(0, len(ws.processing) - ws.nthreads)
                    for ws in dask_scheduler.workers.values()
                ),
            )
        )
        current = {
            "workers": len(workers),
            "memory_mb": round(sum(m.get("memory", 0) for m in metrics) / 2**20, 1),
            "memory_limit_mb": round(
                sum(int(w.get("memory_limit") or 0) for w in workers.values()) / 2**20, 1
            ),
            "cpu": sum(m.get("cpu", 0.0) for m in metrics) / max(1, len(metrics)),
            "tasks_processing": running,
        }
        if self._monitor_config.queue_depth:
            current["tasks_queued"] = waiting
        return current

    # -- backends -----------------------------------------------------------------------
    def _wants_distributed(self) -> bool:
        return (
            self._client is not None
            or self.settings.is_distributed
            or self._monitor_config.dashboard
        )

    def _backend(self, distributed: bool) -> Backend:
        kind = "distributed" if distributed else "local"
        with self._lock:
            if self._closed:
                raise PipelineError("this PipelineManager is closed; create a new one to run")
            backend = self._backends.get(kind)
            if backend is None:
                backend = self._make_backend(kind)
                try:
                    backend.start()
                except BaseException:
                    backend.close()
                    raise
                self._backends[kind] = backend
            return backend

    def _check_resources(self, plan: Plan, backend: Backend, local: bool) -> None:
        """Fail before the run when a task asks what no worker can ever give it."""
        asking = [t.name for t in plan.tasks if t.spec.resource_requirements]
        if not asking:
            return
        if local:
            for name in asking:
                self._warn_once(
                    (plan.pipeline, name, "resources"),
                    "task %r of pipeline %r sets resource_requirements, which take effect on "
                    "dask.distributed; the embedded backend runs every task on this machine's "
                    "threads",
                    name,
                    plan.pipeline,
                )
            return
        from .backends.distributed import DistributedBackend
        from .cluster import check_resources

        assert isinstance(backend, DistributedBackend)
        if backend.owns_cluster:
            offered = [self._layout().resources]
            where = "the cluster this manager starts"
        else:
            offered = backend.offered_resources()
            where = f"the cluster at {backend.client.scheduler_info().get('address')}"
            if not offered:
                logger.warning(
                    "the cluster has no workers yet, so the resources tasks ask for cannot be "
                    "checked before the run"
                )
                return
        check_resources(plan, offered, where)

    def _warn_once(self, marker: tuple[str, str, str], message: str, *args: object) -> None:
        if marker not in self._warned:
            self._warned.add(marker)
            logger.warning(message, *args)

    def _layout(self) -> Any:
        """The layout of the cluster this manager starts (a local one splits this machine's
        memory when the settings do not say): what its workers offer, for the checks too."""
        from .cluster import layout

        if self.settings.cluster_mode == "kubernetes":
            return layout(self.settings)
        import psutil

        return layout(self.settings, machine_memory=int(psutil.virtual_memory().total))

    def _start_cluster(self) -> Any:
        """The cluster this manager starts: on Kubernetes, or a LocalCluster laid out from
        the settings (its workers offer the layout's resources), listening on 127.0.0.1 but
        for its dashboard, at ``dashboard_address``."""
        settings = self.settings
        if settings.cluster_mode == "kubernetes":
            from .backends.kubernetes import start_cluster

            return start_cluster(settings)
        from .backends.distributed import local_cluster

        plan = self._layout()
        cluster = local_cluster(
            n_workers=plan.adaptive[0] if plan.adaptive else plan.workers,
            threads_per_worker=plan.threads,
            memory_limit=plan.memory or "auto",
            resources=plan.resources,
            # dashboard=True alone: an in-process cluster (threads), so a script needs no
            # `if __name__ == "__main__":` guard; the cluster settings ask for processes
            processes=settings.is_distributed,
            dashboard_address=settings.dashboard_address,  # 127.0.0.1:8787 unless opened
        )
        if plan.adaptive:
            cluster.adapt(minimum=plan.adaptive[0], maximum=plan.adaptive[1])
        return cluster

    def _security(self) -> Any:
        tls = self.settings.security
        if not (tls.tls_ca_file or tls.tls_client_cert):
            return None
        from distributed import Security

        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=tls.tls_ca_file,
            tls_client_cert=tls.tls_client_cert,
            tls_client_key=tls.tls_client_key,
            require_encryption=tls.require_encryption,
        )

    def _make_backend(self, kind: str) -> Backend:
        if kind == "local":
            return LocalBackend(self.settings.num_workers)
        from .backends.distributed import DistributedBackend

        url = self.settings.store.url or ""
        if url.startswith("memory://"):
            logger.warning(
                "the store %s lives in this process's memory: worker processes of a cluster "
                "each see their own, so saved results and cache entries they write are not "
                "shared; use a directory or an object store for cluster runs",
                redact_url(url),
            )

        if self._client is not None or self.settings.scheduler_address is not None:
            return DistributedBackend(
                client=self._client,
                address=self.settings.scheduler_address,
                security=self._security(),
                on_connect=self._connected,
                no_workers_timeout=self.settings.no_workers_timeout,
            )
        return DistributedBackend(
            cluster_factory=self._start_cluster,
            on_connect=self._connected,
            no_workers_timeout=self.settings.no_workers_timeout,
        )

    def _connected(self, client: Client) -> None:
        """A cluster client is ready: add the Pipelines page and the metrics feed."""
        config = self._monitor_config
        if config.enabled or config.dashboard:
            try:
                from .monitoring.dashboard import PipelinesPlugin

                client.register_plugin(PipelinesPlugin())
                self._pages = True
                logger.info(
                    "Dask dashboard: %s (pipelines: %s)",
                    client.dashboard_link,
                    client.dashboard_link.replace("/status", "/pipelines"),
                )
            except Exception as exc:  # a scheduler without xlibrary cannot load the page
                logger.warning("could not add the Pipelines page to the dashboard: %s", exc)
        else:  # a scheduler started with the page (`xlibrary-pipeline dashboard`, --preload)
            from .monitoring.dashboard import serves_pipelines

            self._pages = serves_pipelines(client)
        if config.enabled and config.real_time:
            monitoring_hooks.subscribe_metrics(client, self._monitoring)

    @property
    def client(self) -> Client | None:
        """The ``dask.distributed`` Client runs go to (started on first use), or ``None``
        when this manager runs on the embedded local backend."""
        if not self._wants_distributed():
            return None
        from .backends.distributed import DistributedBackend

        backend = self._backend(True)
        assert isinstance(backend, DistributedBackend)
        return backend.client

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Close what this manager started: thread pools, its LocalCluster and client.

        A ``Client`` handed in by the user stays open. Closing twice is harmless.
        """
        with self._lock:
            self._closed = True
        self._submitted.close()
        self._finalizer()
        self.store.flush()  # records written in the background are in the store
        self._monitoring.close()  # alerts queued for a webhook go out (within its timeout)

    def __reduce__(self) -> tuple[Any, ...]:
        # Tasks often call pm.log_metric(...) through a global or a closure, so cloudpickle
        # ships the manager with them: it travels as its settings, and on the other side is
        # a manager of the same settings that has started nothing (one per process).
        return (_manager_for, (self.settings,))

    def __enter__(self) -> PipelineManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = (
            "closed"
            if self._closed
            else (
                self.settings.scheduler_address
                or ("user client" if self._client is not None else None)
                or ("local cluster" if self.settings.distributed_mode else "local threads")
            )
        )
        return f"<PipelineManager {where}>"


_shipped: dict[str, PipelineManager] = {}
_shipped_lock = threading.Lock()


def _manager_for(settings: Settings) -> PipelineManager:
    """The manager a pickled manager becomes in another process (one per settings)."""
    key = repr(dataclasses.astuple(settings))  # exact: the repr of Settings hides secrets
    with _shipped_lock:
        manager = _shipped.get(key)
        if manager is None:
            manager = _shipped[key] = PipelineManager(settings)
        return manager


def _close_backends(backends: dict[str, Backend]) -> None:
    while backends:
        _, backend = backends.popitem()
        try:
            backend.close()
        except Exception:  # closing must not mask what the caller is doing
            logger.debug("error while closing the %s backend", backend.name, exc_info=True)

"""The facade: ``PipelineManager`` reads the config once and offers the user guide's methods.

It holds no machinery of its own: runs go through a :class:`~.engine.RunEngine` (plans,
backends, the registry of runs), monitoring through a
:class:`~.monitoring.session.MonitoringSession`, records and results through the store
(:mod:`~.store`), recovery through :mod:`~.recovery`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .backends.factory import Backends
from .engine import RunEngine, RunRequest
from .errors import ConfigError, PipelineDefinitionError, PipelineError, did_you_mean
from .execute import RunObserver
from .handles import RunHandle
from .monitoring.progress import Progress
from .monitoring.progress import wanted as progress_wanted
from .monitoring.report import MonitoringDashboard, PerformanceReport, performance_report
from .monitoring.session import MonitoringSession
from .pipeline import CachePolicy, Pipeline, build_pipeline, declared_pipeline, set_task_options
from .plan import CacheExplanation, Plan, explain
from .present import NotebookRun
from .records import Alert, RunStatus
from .recovery import ErrorDetails, error_details, intermediate_results, resume_plan, retry_plan
from .redact import redact_url
from .result import PipelineResult
from .settings import Settings, load_settings, without_effect
from .store import Cache, RunStore, cache_of, default_store_url, runs_of
from .store.names import check_run_id
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
        if client is not None and self.settings.scheduler_address is not None:
            raise ConfigError(
                "both client= and scheduler_address are set; pass one: the Client already "
                "knows its scheduler"
            )
        if not isinstance(config, Settings):  # a shipped manager (a worker's) warns not again
            for note in without_effect(self.settings, client=client is not None):
                logger.warning(note)
        self._default_store = default_store_url()  # fixed now: a later chdir does not move it
        self._pipelines: dict[str, Pipeline] = {}
        self._monitoring = MonitoringSession(self.settings, lambda: self.store)
        self._backends = Backends(
            self.settings,
            client=client,
            on_connect=self._monitoring.connected,
            dashboard=lambda: self._monitoring.policy.dashboard,
        )
        self._engine = RunEngine(
            self.settings,
            backends=self._backends,
            monitoring=self._monitoring,
            store=lambda: self.store,
            cache=lambda: self.cache,
        )
        self._closed = False

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

        The builder runs once, at decoration; ``pm.execute_pipeline("reports")`` finds it.
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

    def plan(self, pipeline: Pipeline | str) -> Plan:
        """Check ``pipeline`` and decide what a run of it will do, without running it."""
        return self._engine.plan(self._resolve(pipeline))

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
        target = self._resolve(pipeline)
        settings = self.settings
        notebook = NotebookRun(
            show_intermediate=show_intermediate,
            interactive=settings.interactive_mode,
            inline_results=settings.inline_results,
        )
        listeners: list[Any] = notebook.listeners
        if progress_wanted(settings.display_progress, display_progress):
            listeners.append(Progress(target.name))
        # asked for in this call, a cluster sends every result back (unless the config says)
        keep = "all" if show_intermediate and not settings.keep_results else None
        result = self._finish(
            target,
            RunRequest(parallel=parallel, listeners=listeners, keep_results=keep),
            raise_on_failure,
        )
        notebook.after(result)
        return result

    def execute_distributed(
        self, pipeline: Pipeline | str, *, raise_on_failure: bool | None = None
    ) -> PipelineResult:
        """Run ``pipeline`` on ``dask.distributed``: the configured scheduler or client, else
        a LocalCluster this manager starts (and closes in :meth:`close`)."""
        request = RunRequest(backend="distributed")
        return self._finish(self._resolve(pipeline), request, raise_on_failure)

    def submit(self, pipeline: Pipeline | str, parallel: bool = True) -> RunHandle:
        """Start a run and return its :class:`RunHandle` at once (``run_id``, ``status()``,
        ``result(timeout=)``, ``cancel()``). The pipeline is checked before this returns."""
        target = self._resolve(pipeline)
        return self._engine.submit(target, RunRequest(parallel=parallel))

    def handle(self, run_id: str) -> RunHandle | None:
        """The handle of a run of this manager (the last 1,000 are kept)."""
        return self._engine.registry.get(run_id)

    def get_pipeline_status(self, pipeline_id: str) -> RunStatus:
        """The status of a run (by run id) or of a pipeline's latest run (by name): ``pending``,
        ``running``, ``succeeded``, ``failed`` or ``cancelled``, with each task's state and
        timings (reads as a dict too). Runs recorded in the store by other processes are
        answered too. A pipeline declared in this process that has not run yet is
        ``pending``, with no run id."""
        declared = self._pipelines.get(pipeline_id) or declared_pipeline(pipeline_id)
        return self._engine.status(pipeline_id, declared)

    def add_observer(self, observer: RunObserver) -> RunObserver:
        """Tell ``observer`` of every run: ``observer.run_started(record)`` when it starts and
        ``observer.run_finished(result)`` when it ends (see :class:`~.execute.RunObserver`)."""
        self._engine.observers.append(observer)
        return observer

    def _finish(
        self, target: Pipeline, request: RunRequest, raise_on_failure: bool | None
    ) -> PipelineResult:
        self._pipelines[target.name] = target  # the latest pipeline run under a name
        result = self._engine.run(target, request)
        target._remember(result)  # its picture shows how this run went
        if raise_on_failure is None:
            raise_on_failure = self.settings.debug_mode or self.settings.raise_on_failure
        if raise_on_failure and result.error is not None:
            raise result.error
        return result

    def _resolve(self, pipeline: object) -> Pipeline:
        if isinstance(pipeline, Pipeline):
            return pipeline
        if isinstance(pipeline, str):
            found = self._pipelines.get(pipeline)
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
        self, func: Callable[..., Any] | None = None, /, *, key: str | None = None,
        ttl: float | None = None,
    ) -> Any:  # fmt: skip
        """Cache the task's result, above or below ``task``: under ``key`` whatever its
        inputs (``"daily_computation"``), or a key derived from the task's name, code and
        inputs. ``ttl`` (seconds) defaults to the config's ``caching.ttl``."""
        policy = CachePolicy(key=key, ttl=ttl)
        return _option_decorator(func, cache=policy)

    @property
    def store(self) -> RunStore:
        """Run records and saved results, at ``store.url`` (default ``./.xlibrary-pipeline``)."""
        return runs_of(self.settings, self._default_store)

    @property
    def cache(self) -> Cache | None:
        """The result cache, or ``None`` when ``caching.enabled`` is off."""
        return cache_of(self.settings, self._default_store)

    def explain_cache(self, pipeline: Pipeline | str) -> dict[str, CacheExplanation]:
        """For each task: would the next run take it from the cache, and if not, why."""
        return explain(self.plan(pipeline), self.cache)

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
        _check(run_id)
        return intermediate_results(self.store, self.cache, pipeline_name, run_id, tasks)

    def retry_failed_task(
        self, pipeline_name: str | None = None, task_name: str | None = None, *,
        pipeline: Pipeline | None = None, run_id: str | None = None, parallel: bool = True,
    ) -> PipelineResult:  # fmt: skip
        """Run ``task_name`` again from its saved inputs, then the tasks downstream of it.

        Tasks that succeeded in the failed run (or ``run_id``) are restored from the store,
        not run again. Works from a new process on the same store, once the pipeline is
        declared there (or passed as ``pipeline=``). Returns the new run's result.
        """
        _check(run_id)
        target = self._resolve(pipeline if pipeline is not None else pipeline_name)
        if task_name is None:
            task_name = error_details(self.store, target.name).failed_task
        recovery = retry_plan(self.store, self.plan(target), task_name, run_id)
        return self._finish(target, RunRequest(parallel=parallel, recovery=recovery), None)

    def resume(
        self, pipeline: Pipeline | str, *, run_id: str | None = None, parallel: bool = True
    ) -> PipelineResult:
        """Continue the latest failed run of ``pipeline`` (or ``run_id``): run what did not
        finish, restoring what did from the store."""
        _check(run_id)
        target = self._resolve(pipeline)
        recovery = resume_plan(self.store, self.plan(target), run_id)
        return self._finish(target, RunRequest(parallel=parallel, recovery=recovery), None)

    # -- monitoring -----------------------------------------------------------------------
    def enable_monitoring(
        self, metrics: Collection[str] | None = None, alerts: Collection[str] | None = None,
        dashboard: bool = False,
    ) -> None:  # fmt: skip
        """Monitor the runs that follow: per task peak memory, CPU and metrics, reports,
        trends and ``alerts`` (``task_failure``, ``long_execution``, ``memory_threshold``,
        ``error_rate_threshold``). ``metrics`` narrows what is measured. ``dashboard=True``
        runs on ``dask.distributed`` with its Bokeh dashboard (``pm.dashboard_link``) and a
        Pipelines page (``<dashboard>/pipelines``)."""
        self._monitoring.enable(metrics, alerts, dashboard)
        if dashboard:
            logger.info("dashboard: %s", self.dashboard_link)

    @overload
    def track_performance(self, func: F, /) -> F: ...
    @overload
    def track_performance(self, func: None = None, /) -> Callable[[F], F]: ...
    def track_performance(self, func: Callable[..., Any] | None = None, /) -> Any:
        """Measure the task closely in every run (see ``Pipeline.monitor_performance``)."""
        return _option_decorator(func, monitor=True)

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
        _check(run_id)
        name = pipeline_name.name if isinstance(pipeline_name, Pipeline) else pipeline_name
        record = self.store.read_record(name, run_id)
        if record is None or record.finished is None:
            raise PipelineError(
                f"no finished run of pipeline {name!r} is recorded in the store "
                f"{redact_url(self.store.url)}; run it first (with store.record_runs on)"
            )
        return performance_report(record)

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
        """Close what this manager started: thread pools, its LocalCluster and client.

        A ``Client`` handed in by the user stays open. Closing twice is harmless.
        """
        self._closed = True
        self._engine.close()
        self._backends.close()
        self.store.flush()  # records written in the background are in the store
        self._monitoring.close()  # alerts queued for a webhook go out (within its timeout)

    def __reduce__(self) -> tuple[Any, ...]:
        # Tasks often call pm.log_metric(...) through a global or a closure, so cloudpickle
        # ships the manager with them: it travels as its settings, and on the other side is
        # a manager of the same settings that has started nothing (one per process, closed
        # when the process exits).
        return (_manager_for, (self.settings,))

    def __enter__(self) -> PipelineManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        settings = self.settings
        where = "closed" if self._closed else (
            settings.scheduler_address
            or ("user client" if self._backends.user_client is not None else None)
            or ("local cluster" if settings.distributed_mode else "local threads")
        )  # fmt: skip
        return f"<PipelineManager {where}>"


def _option_decorator(func: Callable[..., Any] | None, **options: Any) -> Any:
    def decorate(f: F) -> F:
        set_task_options(f, **options)
        return f

    return decorate(func) if func is not None else decorate


def _check(run_id: str | None) -> None:
    if run_id is not None:
        check_run_id(run_id)


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


@atexit.register
def _close_shipped() -> None:
    with _shipped_lock:
        managers = list(_shipped.values())
        _shipped.clear()
    for manager in managers:
        try:
            manager.close()
        except Exception:  # exiting: nothing to tell anyone
            logger.debug("could not close a shipped manager", exc_info=True)

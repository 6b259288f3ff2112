"""The runs of one manager: plan, choose the backend, check resources, execute, follow.

:class:`RunEngine` is what ``PipelineManager`` delegates its runs to. Every run, blocking
(``execute_pipeline``) or submitted (``submit``), gets a :class:`~.handles.RunHandle` in one
:class:`~.handles.RunRegistry`, so ``get_pipeline_status`` follows them the same way, task by
task, from any thread; a run the registry no longer holds is answered from the store's
records, so runs of other processes are answered too.

Plans are cached per pipeline and version; a pipeline changed since is planned again. A run
of part of a pipeline (``targets``, ``from_tasks``, ``tags``: :mod:`~.selection`) and the
tasks' concurrency pools (:mod:`~.pools`) are checked before the run starts.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import collector
from .backends.factory import Backends
from .errors import PipelineDefinitionError, PipelineError, did_you_mean
from .execute import RunObserver, RunStorage, execute
from .handles import RunHandle, RunRegistry
from .inputs import RunInputs, bind_run
from .monitoring.progress import Progress
from .monitoring.progress import wanted as progress_wanted
from .monitoring.session import MonitoringSession
from .pipeline import Pipeline
from .plan import CacheExplanation, Plan, explain, make_plan
from .pools import Pools
from .present import NotebookRun
from .records import RunStatus
from .recovery import RecoveryPlan, error_details, resume_plan, retry_plan
from .redact import redact_url
from .resources import preflight
from .result import PipelineResult
from .selection import Selection, select
from .settings import Settings
from .states import TaskStatus
from .store import Cache, RunStore
from .store.names import new_run_id
from .watch import Listener

__all__ = ["RunEngine", "RunRequest"]

logger = logging.getLogger("xlibrary.pipeline")


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """How one run goes, beyond the manager's settings."""

    parallel: bool = True
    backend: str | None = None
    """A backend by name (``distributed`` for ``execute_distributed``); default: the
    manager's."""
    recovery: RecoveryPlan | None = None
    listeners: Sequence[Listener] = field(default_factory=tuple)
    keep_results: str | None = None
    """What a cluster sends back when the settings do not say (``all`` or ``final``)."""
    targets: Iterable[str] | None = None
    """Run only what these tasks need (see :mod:`~.selection`)."""
    from_tasks: Iterable[str] | None = None
    """Run these tasks and what is downstream of them, their inputs from earlier runs."""
    tags: Iterable[str] | None = None
    """Run only the tasks declared with one of these tags."""
    params: Mapping[str, Any] | None = None
    """Parameter values for this run, over the functions' defaults and the pipeline's."""
    refresh: bool | str | Collection[str] | None = None
    """Tasks that run and rewrite their cache entries even when cached (``True``: all)."""
    compute_final: bool = True
    """Compute the final tasks' Dask collections (pandas, NumPy); ``False``: they come back
    as collections (persisted on a cluster)."""


class RunEngine:
    """Runs pipelines for one manager (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        backends: Backends,
        monitoring: MonitoringSession,
        store: Callable[[], RunStore],
        cache: Callable[[], Cache | None],
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.monitoring = monitoring
        self.registry = RunRegistry()
        self.observers: list[RunObserver] = []
        """Observers added with ``pm.add_observer``: they hear of every run."""
        self._store = store
        self._cache = cache
        self._plans: weakref.WeakKeyDictionary[Pipeline, tuple[Any, Plan]] = (
            weakref.WeakKeyDictionary()
        )
        self._warned: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self.known: dict[str, Pipeline] = {}
        """The pipelines this manager knows by name: declared with ``@pm.pipeline``, or run."""
        self.pools = Pools(settings.pools)
        """The concurrency pools of the config's ``pools``, shared by all runs."""

    def resolve(self, pipeline: object) -> Pipeline:
        """``pipeline``, or the pipeline this manager knows under that name."""
        if isinstance(pipeline, Pipeline):
            return pipeline
        if isinstance(pipeline, str):
            found = self.known.get(pipeline)
            if found is not None:
                return found
            raise PipelineDefinitionError(
                f"no pipeline named {pipeline!r} is known to this manager"
                f"{did_you_mean(pipeline, self.known)}; pass the Pipeline object, or "
                "declare it with @pm.pipeline"
            )
        if callable(pipeline):
            raise PipelineDefinitionError(
                f"{getattr(pipeline, '__qualname__', pipeline)!r} is a function, not a pipeline; "
                'decorate the builder with @pm.pipeline("name") or pass a Pipeline'
            )
        raise PipelineDefinitionError(f"execute_pipeline takes a Pipeline, got {pipeline!r}")

    def plan(self, pipeline: Pipeline) -> Plan:
        """Check ``pipeline`` and decide what a run of it will do, without running it."""
        cached = self._plans.get(pipeline)
        version = pipeline.version
        if cached is not None and cached[0] == version:
            return cached[1]
        with collector.paused():  # a planned task a task, all kept
            plan = make_plan(pipeline, self.settings.fault_tolerance, self.settings.caching)
        self._plans[pipeline] = (version, plan)
        return plan

    def explain(
        self, pipeline: Pipeline, cache: Cache | None, params: Mapping[str, Any] | None
    ) -> dict[str, CacheExplanation]:
        """What the cache would do for each task of a run of ``pipeline`` with ``params``."""
        plan = self.plan(pipeline)
        return explain(plan, cache, bind_run(plan, params))

    def run(
        self, pipeline: Pipeline, request: RunRequest, *, raise_on_failure: bool | None = None
    ) -> PipelineResult:
        """Run ``pipeline`` now, in this thread, followed by a handle of its own; raise its
        error when it failed and ``raise_on_failure`` (default: the settings' ``debug_mode``
        or ``raise_on_failure``) says so."""
        plan = self.plan(pipeline)
        self.known[pipeline.name] = pipeline  # the latest pipeline run under a name
        selection = self._checked(plan, request)
        handle = self._handle(plan, selection)
        inputs = self._inputs(plan, request, handle)
        result = self.registry.run_here(
            handle, lambda h: self._execute(plan, request, h, selection, inputs)
        )
        pipeline._remember(result)  # its picture shows how this run went
        if raise_on_failure is None:
            raise_on_failure = self.settings.debug_mode or self.settings.raise_on_failure
        if raise_on_failure and result.error is not None:
            raise result.error
        return result

    def run_interactive(
        self,
        pipeline: Pipeline,
        *,
        parallel: bool,
        raise_on_failure: bool | None,
        display_progress: bool | None,
        show_intermediate: bool | None,
        targets: Iterable[str] | None = None,
        from_tasks: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        params: Mapping[str, Any] | None = None,
        refresh: bool | str | Collection[str] | None = None,
        compute_final: bool = True,
    ) -> PipelineResult:
        """A run with the conveniences of terminals and notebooks: a progress bar, each
        task's result shown as it finishes, the result table (see ``execute_pipeline``);
        ``targets``, ``from_tasks`` and ``tags`` select part of the pipeline."""
        settings = self.settings
        notebook = NotebookRun(
            show_intermediate=show_intermediate,
            interactive=settings.interactive_mode,
            inline_results=settings.inline_results,
        )
        listeners: list[Listener] = list(notebook.listeners)
        if progress_wanted(settings.display_progress, display_progress):
            listeners.append(Progress(pipeline.name))
        # asked for in this call, a cluster sends every result back (unless the config says)
        keep = "all" if show_intermediate and not settings.keep_results else None
        request = RunRequest(
            parallel=parallel, listeners=listeners, keep_results=keep, targets=targets,
            from_tasks=from_tasks, tags=tags, params=params, refresh=refresh,
            compute_final=compute_final,
        )  # fmt: skip
        result = self.run(pipeline, request, raise_on_failure=raise_on_failure)
        notebook.after(result)
        return result

    def retry(
        self, pipeline: object, task: str | None, *, run_id: str | None, parallel: bool
    ) -> PipelineResult:
        """Run ``task`` (default: the failed one) of the latest run of ``pipeline`` (or of
        ``run_id``) again from its saved inputs, then what is downstream of it."""
        target = self.resolve(pipeline)
        store = self._store()
        if task is None:
            task = error_details(store, target.name).failed_task
        recovery = retry_plan(store, self.plan(target), task, run_id)
        return self.run(target, RunRequest(parallel=parallel, recovery=recovery))

    def resume(self, pipeline: object, *, run_id: str | None, parallel: bool) -> PipelineResult:
        """Continue the latest failed run of ``pipeline`` (or ``run_id``)."""
        target = self.resolve(pipeline)
        recovery = resume_plan(self._store(), self.plan(target), run_id)
        return self.run(target, RunRequest(parallel=parallel, recovery=recovery))

    def submit(self, pipeline: Pipeline, request: RunRequest) -> RunHandle:
        """Start a run on the registry's pool and return its handle at once."""
        plan = self.plan(pipeline)
        selection = self._checked(plan, request)
        handle = self._handle(plan, selection)
        inputs = self._inputs(plan, request, handle)
        self.registry.submit(handle, lambda h: self._execute(plan, request, h, selection, inputs))
        return handle

    def _checked(self, plan: Plan, request: RunRequest) -> Selection | None:
        """Before a run: the pools its tasks use exist; the part of ``plan`` it runs."""
        self.pools.check(plan.pools)
        if request.targets is None and request.from_tasks is None and request.tags is None:
            return None
        if request.recovery is not None:
            raise PipelineError("a retry or resume runs what it must: it takes no selection")
        return select(
            plan, targets=request.targets, from_tasks=request.from_tasks, tags=request.tags,
            runs=self._store(), cache=self._cache(),
        )  # fmt: skip

    @staticmethod
    def _handle(plan: Plan, selection: Selection | None) -> RunHandle:
        handle = RunHandle(plan.pipeline, new_run_id(), [t.name for t in plan.tasks])
        if selection is not None:  # its status says so from the start
            unselected = dict.fromkeys(selection.unselected, TaskStatus.NOT_SELECTED)
            handle.tracker.states.update(unselected)
        return handle

    def _inputs(self, plan: Plan, request: RunRequest, handle: RunHandle) -> RunInputs:
        """The run's parameter values and refreshed tasks, checked before it starts; a retry
        or resume uses the values of the run it continues, unless given others."""
        params = request.params
        if params is None and request.recovery is not None:
            params = self._params_of(request.recovery.run_id)
        inputs = bind_run(plan, params, refresh=request.refresh, guard=self.settings.debug_mode)
        handle.params = inputs.values or None
        return inputs

    def _params_of(self, run_id: str) -> Mapping[str, Any] | None:
        """The parameter values run ``run_id`` used: as they were, when it ran here; as its
        record keeps them (a value JSON cannot hold, as its repr) otherwise."""
        handle = self.registry.get(run_id)
        if handle is not None:
            return handle.params
        record = self._store().find_record(run_id)
        return None if record is None else record.params

    def _execute(
        self,
        plan: Plan,
        request: RunRequest,
        handle: RunHandle,
        selection: Selection | None,
        inputs: RunInputs | None = None,
    ) -> PipelineResult:
        backend = self.backends.get(request.backend)
        local = backend.name == "threads" or not request.parallel
        preflight(
            plan,
            local=local,
            offered=lambda: self.backends.offered(backend),
            warn_once=self._warn_once,
        )
        keep = self.settings.keep_results or request.keep_results or ("all" if local else "final")
        return execute(
            plan,
            backend,
            parallel=request.parallel,
            storage=RunStorage(
                runs=self._store(),
                cache=self._cache(),
                save_results=self.settings.save_intermediate_results,
            ),
            recovery=request.recovery,
            instruments=self.monitoring.instruments(local=local),
            observers=[*self.monitoring.observers(local=local), *self.observers],
            keep_results=keep,
            run_id=handle.run_id,
            listeners=[*request.listeners, handle.tracker],
            cancel=handle.cancel_event,
            selection=selection,
            pools=self.pools.for_run(local=local),
            inputs=inputs,
            compute_final=request.compute_final,
        )

    def _warn_once(self, marker: tuple[str, str, str], message: str) -> None:
        with self._lock:
            if marker in self._warned:
                return
            self._warned.add(marker)
        logger.warning(message)

    # -- status ---------------------------------------------------------------------------
    def status(self, run_or_pipeline: str, declared: Pipeline | None) -> RunStatus:
        """The status of a run (by id) or of a pipeline's latest run (by name), from this
        process's runs first, then the store; a pipeline ``declared`` but never run is
        pending."""
        handle = self.registry.get(run_or_pipeline)
        if handle is not None:
            return handle.describe()
        latest = self.registry.latest(run_or_pipeline)
        store = self._store()
        record = store.find_record(run_or_pipeline) or store.read_record(run_or_pipeline)
        if latest is not None and (record is None or latest.run_id >= record.run_id):
            return latest.describe()
        if record is not None:
            return RunStatus.of_record(record)
        if declared is not None:  # declared here, not run yet (a run may be about to start)
            return RunStatus.not_started(declared.name, declared.task_names)
        raise PipelineError(
            f"no run or pipeline {run_or_pipeline!r} is known here or recorded in the store "
            f"{redact_url(store.url)}"
        )

    def close(self) -> None:
        """Cancel the runs still going and wait for the submitted ones to stop."""
        self.registry.close()

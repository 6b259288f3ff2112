"""The runs of one manager: plan, choose the backend, check resources, execute, follow.

:class:`RunEngine` is what ``PipelineManager`` delegates its runs to. Every run, blocking
(``execute_pipeline``) or submitted (``submit``), gets a :class:`~.handles.RunHandle` in one
:class:`~.handles.RunRegistry`, so ``get_pipeline_status`` follows them the same way, task by
task, from any thread; a run the registry no longer holds is answered from the store's
records, so runs of other processes are answered too.

Plans are cached per pipeline and version; a pipeline changed since is planned again.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends.factory import Backends
from .errors import PipelineDefinitionError, PipelineError, did_you_mean
from .execute import RunObserver, RunStorage, execute
from .handles import RunHandle, RunRegistry
from .monitoring.progress import Progress
from .monitoring.progress import wanted as progress_wanted
from .monitoring.session import MonitoringSession
from .pipeline import Pipeline
from .plan import Plan, make_plan
from .present import NotebookRun
from .records import RunStatus
from .recovery import RecoveryPlan
from .redact import redact_url
from .resources import preflight
from .result import PipelineResult
from .settings import Settings
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
        plan = make_plan(pipeline, self.settings.fault_tolerance, self.settings.caching)
        self._plans[pipeline] = (version, plan)
        return plan

    def run(
        self, pipeline: Pipeline, request: RunRequest, *, raise_on_failure: bool | None = None
    ) -> PipelineResult:
        """Run ``pipeline`` now, in this thread, followed by a handle of its own; raise its
        error when it failed and ``raise_on_failure`` (default: the settings' ``debug_mode``
        or ``raise_on_failure``) says so."""
        plan = self.plan(pipeline)
        self.known[pipeline.name] = pipeline  # the latest pipeline run under a name
        handle = RunHandle(pipeline.name, new_run_id(), [t.name for t in plan.tasks])
        result = self.registry.run_here(handle, lambda h: self._execute(plan, request, h))
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
        compute_final: bool = True,
    ) -> PipelineResult:
        """A run with the conveniences of terminals and notebooks: a progress bar, each
        task's result shown as it finishes, the result table (see ``execute_pipeline``)."""
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
            parallel=parallel, listeners=listeners, keep_results=keep, compute_final=compute_final
        )
        result = self.run(pipeline, request, raise_on_failure=raise_on_failure)
        notebook.after(result)
        return result

    def submit(self, pipeline: Pipeline, request: RunRequest) -> RunHandle:
        """Start a run on the registry's pool and return its handle at once."""
        plan = self.plan(pipeline)
        handle = RunHandle(pipeline.name, new_run_id(), [t.name for t in plan.tasks])
        self.registry.submit(handle, lambda h: self._execute(plan, request, h))
        return handle

    def _execute(self, plan: Plan, request: RunRequest, handle: RunHandle) -> PipelineResult:
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

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
from .errors import PipelineError
from .execute import RunObserver, RunStorage, execute
from .handles import RunHandle, RunRegistry
from .monitoring.session import MonitoringSession
from .pipeline import Pipeline
from .plan import Plan, make_plan
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
        self, pipeline: Pipeline, request: RunRequest, handle: RunHandle | None = None
    ) -> PipelineResult:
        """Run ``pipeline`` now, in this thread; with ``handle``, a run submitted before (its
        handle tracks it), else one followed by a handle of its own."""
        plan = self.plan(pipeline)
        if handle is None:
            handle = RunHandle(pipeline.name, new_run_id(), [t.name for t in plan.tasks])
            return self.registry.run_here(handle, lambda h: self._execute(plan, request, h))
        return self._execute(plan, request, handle)

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

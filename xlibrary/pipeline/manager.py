"""The facade: ``PipelineManager`` reads the config once and runs pipelines."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, overload

from .backends import Backend, LocalBackend
from .errors import ConfigError, PipelineDefinitionError, PipelineError
from .execute import execute
from .pipeline import Pipeline, build_pipeline
from .plan import Plan, did_you_mean, make_plan
from .result import PipelineResult
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["PipelineManager"]

logger = logging.getLogger("xlibrary.pipeline")


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
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._plans: weakref.WeakKeyDictionary[Pipeline, tuple[int, Plan]] = (
            weakref.WeakKeyDictionary()
        )
        self._pipelines: dict[str, Pipeline] = {}
        self._warned: set[tuple[str, str, str]] = set()
        self._finalizer = weakref.finalize(self, _close_backends, self._backends)

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
    ) -> PipelineResult:
        """Run ``pipeline`` once and return its :class:`PipelineResult`.

        The run is lowered to one Dask graph and submitted once. ``parallel=False`` runs one
        task at a time in this thread, in dependency order (a debugger works inside tasks).
        A failing task makes ``success`` false and skips the tasks downstream of it, while
        independent branches run to the end. With ``raise_on_failure=True`` (or the config's
        ``debug_mode`` / ``raise_on_failure``) a failure raises ``PipelineExecutionError``.
        """
        return self._run(pipeline, parallel=parallel, raise_on_failure=raise_on_failure)

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
    ) -> PipelineResult:
        pipeline = self._resolve(pipeline)
        plan = self.plan(pipeline)
        self._pipelines[pipeline.name] = pipeline  # the latest pipeline run under a name
        self._warn_pending(plan)
        backend = self._backend(self._wants_distributed() if distributed is None else distributed)
        result = execute(plan, backend, parallel=parallel)
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
        plan = make_plan(pipeline, self.settings.fault_tolerance)
        self._plans[pipeline] = (pipeline.version, plan)
        return plan

    def _resolve(self, pipeline: object) -> Pipeline:
        if isinstance(pipeline, Pipeline):
            return pipeline
        if isinstance(pipeline, str):
            if pipeline in self._pipelines:
                return self._pipelines[pipeline]
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

    def _warn_pending(self, plan: Plan) -> None:
        for task_name, option, feature in plan.pending_options:
            marker = (plan.pipeline, task_name, option)
            if marker not in self._warned:
                self._warned.add(marker)
                logger.warning(
                    "task %r of pipeline %r sets %s, which has no effect yet: %s is not built "
                    "in this version of xlibrary.pipeline; the task runs without it",
                    task_name,
                    plan.pipeline,
                    option,
                    feature,
                )

    # -- backends -----------------------------------------------------------------------
    def _wants_distributed(self) -> bool:
        return self._client is not None or self.settings.is_distributed

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

    def _make_backend(self, kind: str) -> Backend:
        if kind == "local":
            return LocalBackend(self.settings.num_workers)
        from .backends.distributed import DistributedBackend

        return DistributedBackend(client=self._client, address=self.settings.scheduler_address)

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
        self._finalizer()

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


def _close_backends(backends: dict[str, Backend]) -> None:
    while backends:
        _, backend = backends.popitem()
        try:
            backend.close()
        except Exception:  # closing must not mask what the caller is doing
            logger.debug("error while closing the %s backend", backend.name, exc_info=True)

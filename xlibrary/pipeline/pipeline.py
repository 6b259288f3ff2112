"""Declare: pipelines, and the decorators that register functions as their tasks.

Decorators register a function and return it unchanged, so a task stays a plain callable that
can be called and unit-tested on its own::

    pipeline = Pipeline("etl")

    @pipeline.task("extract")
    def extract():
        return [1, 2, 3]

    @pipeline.task("transform", depends_on=["extract"])
    @pipeline.retry_on_failure(max_retries=3, delay=1.0)
    def transform(rows):             # the result of "extract", positionally
        return [r * 2 for r in rows]

    transform([1])                   # still a plain function: [2]

A task receives its dependencies' results as positional arguments, in ``depends_on`` order.
Option decorators (``retry_on_failure``) work in either order around ``task``. Task specs and
their checks are in :mod:`~.spec`; the checks of a whole pipeline in :mod:`~.order`; pipelines
made of pipelines (``include``, ``+``) and named outputs in :mod:`~.compose`.
"""

from __future__ import annotations

import contextvars
import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

from .compose import Inclusion, check_inclusion, included_params, included_tasks, with_outputs
from .errors import DuplicateTaskError, PipelineDefinitionError, did_you_mean
from .order import topological_order, validate
from .params import check_params
from .sources import PipelineData, with_catalog
from .spec import (
    CachePolicy,
    RetryPolicy,
    Task,
    TaskOptions,
    check_name,
    default_name,
    options_generation,
    set_task_options,
    with_options,
)

if TYPE_CHECKING:  # for the annotations of visualize()
    import os
    import pathlib

    from .result import PipelineResult

__all__ = [
    "CachePolicy",
    "Pipeline",
    "RetryPolicy",
    "Task",
    "build_pipeline",
    "declared_pipeline",
    "pipeline_decorator",
    "set_task_options",
    "task",
]

F = TypeVar("F", bound=Callable[..., Any])


class Pipeline(PipelineData):
    """A named set of tasks and their dependencies; its parameters, datasets and catalog are
    declared with the methods of :class:`~.sources.PipelineData`.

    >>> p = Pipeline("numbers")
    >>> @p.task("one")
    ... def one():
    ...     return 1
    >>> @p.task("two", depends_on=["one"])
    ... def two(x):
    ...     return x + 1
    >>> [t.name for t in p.tasks]
    ['one', 'two']
    """

    def __init__(
        self,
        name: str,
        *,
        description: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise PipelineDefinitionError(
                f'a pipeline name must be a non-empty string, got {name!r}; Pipeline("etl")'
            )
        check_name("pipeline", name)
        self.name = name
        self.description = description
        self._tasks: dict[str, Task] = {}
        self._version = 0
        self._merged: tuple[Any, dict[str, Task]] | None = None
        self._composed: tuple[Any, dict[str, Task]] | None = None
        self._included: list[Inclusion] = []
        self._last_run: tuple[Any, PipelineResult] | None = None
        self._params = check_params(params, f"pipeline {name!r}")
        self._catalog = None
        _declared[name] = self

    # -- declaring ----------------------------------------------------------------------
    @overload
    def task(self, name: F, /) -> F: ...
    @overload
    def task(
        self,
        name: str | None = None,
        depends_on: Iterable[str] | str = (),
        **options: Unpack[TaskOptions],
    ) -> Callable[[F], F]: ...
    def task(
        self,
        name: str | Callable[..., Any] | None = None,
        depends_on: Iterable[str] | str = (),
        **options: Unpack[TaskOptions],
    ) -> Any:
        """Register the decorated function as a task and return it unchanged.

        ``name`` defaults to the function's name; ``@pipeline.task`` also works bare. The
        keywords (``timeout``, ``resource_requirements``, ``tags``, ``pool``, ``outputs``,
        ``save_to``, ``versioned``, ``cache``, ``map_over``, ``batch_size``, ``on_error``) are
        :class:`~xlibrary.pipeline.spec.TaskOptions`: fields of the task's spec. ``map_over``
        calls the function once per element of that dependency's result (:mod:`~.mapping`).
        ``save_to`` writes the result to that fsspec URL after the task succeeds
        (``versioned=True``: each run's copy under its run id); ``cache=False`` never caches
        the task, ``cache=True`` caches it under a derived key (as
        ``@pm.cache_result``). The function's keyword-only parameters are pipeline parameters
        (:mod:`~.params`).
        """
        if callable(name):
            return self.task()(name)

        def register(func: F) -> F:
            self._register(
                func,
                name=name if name is not None else default_name(func),
                depends_on=depends_on,
                **{**options, "cache": CachePolicy()} if options.get("cache") is True else options,
            )
            return func

        return register

    def add(self, task: Task) -> Task:
        """Add a task spec built by hand: ``pipeline.add(Task("load", load, ("clean",)))``."""
        if not isinstance(task, Task):
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: add() takes a Task spec, got {task!r}; "
                "use @pipeline.task(...) to register a function"
            )
        existing = self._tasks.get(task.name)
        if existing is not None:
            raise DuplicateTaskError(
                f"pipeline {self.name!r} already has a task named {task.name!r} "
                f"(function {existing.function_name}); give {task.function_name} another name"
            )
        self._tasks[task.name] = task
        self._version += 1
        return with_options(task)

    # -- composing ----------------------------------------------------------------------
    def include(
        self,
        other: Pipeline,
        *,
        namespace: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Pipeline:
        """Make the tasks of ``other`` part of this pipeline, and return this pipeline.

        Tasks may then depend on each other across the two. Under ``namespace`` each task of
        ``other`` is renamed ``"<namespace>.<name>"`` (its dependencies on ``other``'s tasks
        too), so one pipeline can be included twice; ``params`` are parameter values for
        ``other``'s tasks (kept as ``"<namespace>.<name>"``). The inclusion is live: tasks
        added to ``other`` later belong here too. See :mod:`~xlibrary.pipeline.compose`::

            full = Pipeline("full").include(processing).include(science, namespace="ds")
        """
        if not isinstance(other, Pipeline):
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: include() takes a Pipeline, got {other!r}"
            )
        inclusion = check_inclusion(self, other, namespace, params)
        included_tasks(self.name, self._tasks, [*self._included, inclusion])  # clashes: now
        self._included.append(inclusion)
        self._version += 1
        return self

    def __add__(self, other: object) -> Pipeline:
        """``p1 + p2``: a new pipeline named ``"p1+p2"`` that includes both."""
        if not isinstance(other, Pipeline):
            return NotImplemented
        return Pipeline(f"{self.name}+{other.name}").include(self).include(other)

    def __radd__(self, other: object) -> Pipeline:  # sum([p1, p2, p3]) starts from 0
        return self if isinstance(other, int) and other == 0 else NotImplemented

    @property
    def inclusions(self) -> tuple[Inclusion, ...]:
        """The pipelines included in this one, in order, with their namespaces."""
        return tuple(self._included)

    @property
    def included_params(self) -> dict[str, Any]:
        """Parameter values given with ``include(..., params=)``, by
        ``"<namespace>.<name>"`` (by name where no namespace was given)."""
        return included_params(self._included)

    @overload
    def retry_on_failure(self, func: F, /) -> F: ...
    @overload
    def retry_on_failure(
        self,
        func: None = None,
        /,
        *,
        max_retries: int = 3,
        delay: float = 0.0,
        backoff: float = 2.0,
        max_delay: float = 300.0,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
    ) -> Callable[[F], F]: ...
    def retry_on_failure(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        max_retries: int = 3,
        delay: float = 0.0,
        backoff: float = 2.0,
        max_delay: float = 300.0,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
    ) -> Any:
        """Retry the task on failure: ``@pipeline.retry_on_failure(max_retries=3, delay=1)``.

        Attempt ``n`` that raises one of ``retry_on`` is retried after
        ``min(delay * backoff ** (n - 1), max_delay)`` seconds. Works above or below ``task``.
        """
        policy = RetryPolicy(
            max_retries=max_retries,
            delay=delay,
            backoff=backoff,
            max_delay=max_delay,
            retry_on=retry_on,  # type: ignore[arg-type]
        )

        def decorate(f: F) -> F:
            set_task_options(f, retry=policy)
            return f

        return decorate(func) if func is not None else decorate

    @overload
    def monitor_performance(self, func: F, /) -> F: ...
    @overload
    def monitor_performance(self, func: None = None, /) -> Callable[[F], F]: ...
    def monitor_performance(self, func: Callable[..., Any] | None = None, /) -> Any:
        """Measure the task closely in every run: its peak memory (read exactly at its start
        and end as well as sampled), CPU seconds, duration and attempts, in the run record and
        ``pm.get_performance_report``. Works above or below ``task``."""

        def decorate(f: F) -> F:
            set_task_options(f, monitor=True)
            return f

        return decorate(func) if func is not None else decorate

    # -- reading ------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[Task, ...]:
        """The task specs in topological order (dependencies first, then declaration order).

        Raises a :class:`PipelineDefinitionError` when the pipeline cannot run as declared.
        """
        return topological_order(self)

    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in declaration order (then those of included pipelines, output tasks
        after their task, and the source tasks an attached catalog adds)."""
        return tuple(self.declared)

    def get_task(self, name: str) -> Task:
        """The spec of task ``name``."""
        try:
            return self.declared[name]
        except KeyError:
            raise KeyError(
                f"pipeline {self.name!r} has no task {name!r}{did_you_mean(name, self.declared)}"
            ) from None

    __getitem__ = get_task

    def validate(self) -> None:
        """Check the whole pipeline (dependencies, cycles, emptiness) without running it."""
        validate(self)

    def __contains__(self, name: object) -> bool:
        return name in self.declared

    def __len__(self) -> int:
        return len(self.declared)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __repr__(self) -> str:
        included = [i.pipeline.name for i in self._included]
        return f"Pipeline({self.name!r}, tasks={list(self._tasks)}" + (
            f", includes={included})" if included else ")"
        )

    def visualize(
        self,
        filename: str | os.PathLike[str],
        *,
        result: PipelineResult | None = None,
        states: bool = True,
    ) -> pathlib.Path:
        """Draw the task graph into ``filename`` (``.svg``, or ``.png`` with Graphviz); returns
        the path. Each task is coloured by how it went in ``result``, by default this pipeline's
        latest run in this process (none before the first run, or after a task was added);
        ``states=False`` draws the bare graph. See :mod:`~xlibrary.pipeline.pictures`.

        >>> pm.execute_pipeline(pipeline)  # doctest: +SKIP
        >>> pipeline.visualize("etl.svg")  # doctest: +SKIP
        """
        from .pictures import visualize

        if states and result is None:
            result = self.last_run
        return visualize(self, filename, result=result if states else None)

    @property
    def last_run(self) -> PipelineResult | None:
        """How this pipeline's latest run in this process went, task by task: the run's
        :class:`~xlibrary.pipeline.result.PipelineResult` without its values
        (:meth:`~xlibrary.pipeline.result.PipelineResult.without_values`). ``None`` before the
        first run and once the pipeline has changed since."""
        if self._last_run is None or self._last_run[0] != self.version:
            return None
        return self._last_run[1]

    def _remember(self, result: PipelineResult) -> None:
        """Keep ``result``'s task states (not its values) as this pipeline's latest run."""
        self._last_run = (self.version, result.without_values())

    def _repr_html_(self) -> str:
        """The task graph as inline SVG, for notebooks, coloured by the latest run if any."""
        from .pictures import pipeline_html

        return pipeline_html(self, self.last_run)

    # -- internals ----------------------------------------------------------------------
    @property
    def declared(self) -> Mapping[str, Task]:
        """Task specs by name, in declaration order, with the options their functions carry
        (``retry_on_failure``, ``cache_result``...), without validation: this pipeline's own,
        then its included pipelines' (renamed under their namespaces), each output task after
        its task. Raises DuplicateTaskError when two share a name."""
        version = self.version
        merged = self._merged
        if merged is None or merged[0] != version:
            tasks = with_outputs(self.name, self.composed)
            specs = {name: with_options(task) for name, task in tasks.items()}
            if self._catalog is not None:
                specs = with_catalog(specs, self._catalog)
            merged = self._merged = (version, specs)
        return merged[1]

    @property
    def composed(self) -> Mapping[str, Task]:
        """This pipeline's own tasks and its included pipelines' (renamed under their
        namespaces), as declared: no options read, no output tasks."""
        if not self._included:
            return self._tasks
        version = self.version
        composed = self._composed
        if composed is None or composed[0] != version:
            tasks = included_tasks(self.name, self._tasks, self._included)
            composed = self._composed = (version, tasks)
        return composed[1]

    @property
    def version(self) -> tuple[Any, ...]:
        """Changes whenever a task is added (here or in an included pipeline), a pipeline is
        included, or an option decorator is applied; plans are cached against it."""
        if not self._included:
            return (self._version, options_generation())
        inner = tuple(inclusion.pipeline.version for inclusion in self._included)
        return (self._version, options_generation(), inner)

    def _register(self, func: Callable[..., Any], **fields: Any) -> Task:
        return self.add(Task(func=func, **fields))


_declared: weakref.WeakValueDictionary[str, Pipeline] = weakref.WeakValueDictionary()


def declared_pipeline(name: str) -> Pipeline | None:
    """The last pipeline declared under ``name`` in this process that is still alive.

    Only ``get_pipeline_status`` asks, to answer ``pending`` for a pipeline that has not run
    yet (the guide's FastAPI status route); a manager runs by name only the pipelines it knows.
    """
    return _declared.get(name)


# -- the module-level ``task`` decorator, for @pm.pipeline builder functions ------------------

_building: contextvars.ContextVar[Pipeline | None] = contextvars.ContextVar(
    "xlibrary_pipeline_building", default=None
)


@overload
def task(name: F, /) -> F: ...
@overload
def task(
    name: str | None = None,
    depends_on: Iterable[str] | str = (),
    **options: Unpack[TaskOptions],
) -> Callable[[F], F]: ...
def task(
    name: str | Callable[..., Any] | None = None,
    depends_on: Iterable[str] | str = (),
    **options: Unpack[TaskOptions],
) -> Any:
    """Register a task in the pipeline being built by a ``@pm.pipeline(...)`` builder.

    ::

        @pm.pipeline("reports")
        def reports():
            @task("load")
            def load(): ...

            @task("summarise", depends_on=["load"], resource_requirements={"cpu_cores": 2})
            def summarise(rows): ...
    """
    pipeline = _building.get()
    if pipeline is None:
        raise PipelineDefinitionError(
            "task() was used outside a pipeline builder; call it inside a function decorated "
            'with @pm.pipeline("name"), or use @my_pipeline.task(...) on a Pipeline'
        )
    if callable(name):
        return pipeline.task(name)
    return pipeline.task(name, depends_on, **options)


def pipeline_decorator(name: str | Callable[[], Any] | None, known: dict[str, Pipeline]) -> Any:
    """``@pm.pipeline`` / ``@pm.pipeline("name")``: build the pipeline from the decorated
    builder, and keep it in ``known`` under its name."""
    if callable(name):
        return pipeline_decorator(None, known)(name)

    def decorate(builder: Callable[[], Any]) -> Pipeline:
        pipeline = build_pipeline(name or builder.__name__, builder)
        known[pipeline.name] = pipeline
        return pipeline

    return decorate


def build_pipeline(name: str, builder: Callable[[], Any]) -> Pipeline:
    """Run ``builder`` with a fresh pipeline collecting its ``task`` declarations."""
    if not callable(builder):
        raise PipelineDefinitionError(
            f"@pipeline({name!r}) decorates a builder function, got {builder!r}"
        )
    pipeline = Pipeline(name, description=inspect.getdoc(builder))
    token = _building.set(pipeline)
    try:
        returned = builder()
    finally:
        _building.reset(token)
    if isinstance(returned, Pipeline) and returned is not pipeline:
        if len(pipeline):
            raise PipelineDefinitionError(
                f"builder {builder.__qualname__} both declared tasks with task() and returned "
                f"pipeline {returned.name!r}; do one or the other"
            )
        return returned
    return pipeline

"""Declare: pipelines, their task specs, and the decorators that register functions as tasks.

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
Option decorators (``retry_on_failure``) work in either order around ``task``.

Everything a single task spec can get wrong is checked when the task is declared (the name, a
non-callable, a signature that cannot take the dependencies' results, a duplicate name); what
needs the whole pipeline (unknown dependencies, cycles, emptiness) is checked by
:mod:`~xlibrary.pipeline.plan` before any task runs.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import math
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .errors import DuplicateTaskError, PipelineDefinitionError, TaskSignatureError
from .store.names import name_problem

if TYPE_CHECKING:  # for the annotations of visualize()
    import os
    import pathlib

    from .result import PipelineResult

__all__ = ["CachePolicy", "Pipeline", "RetryPolicy", "Task", "build_pipeline", "task"]

F = TypeVar("F", bound=Callable[..., Any])

# Options set by option decorators (retry_on_failure, ...) and the pipelines a function is
# registered in, kept beside the function rather than on it: a function's __dict__ travels
# with it when cloudpickle ships it to a worker.
_options: weakref.WeakKeyDictionary[Callable[..., Any], dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
_registrations: weakref.WeakKeyDictionary[
    Callable[..., Any], list[tuple[weakref.ref[Pipeline], str]]
] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class RetryPolicy:
    """How a task is retried: done inside the task wrapper, so the same on every backend.

    Attempt ``n`` (from 1) that fails with an exception in ``retry_on`` is retried after
    ``min(delay * backoff ** (n - 1), max_delay)`` seconds, up to ``max_retries`` extra attempts.
    """

    max_retries: int = 3
    delay: float = 0.0
    backoff: float = 2.0
    max_delay: float = 300.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise PipelineDefinitionError(
                f"max_retries must be a whole number, got {self.max_retries!r}"
            )
        if self.max_retries < 0:
            raise PipelineDefinitionError(f"max_retries must be 0 or more, got {self.max_retries}")
        for key in ("delay", "backoff", "max_delay"):
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value):
                raise PipelineDefinitionError(f"retry {key} must be a finite number, got {value!r}")
        if self.delay < 0 or self.max_delay < 0:
            raise PipelineDefinitionError("retry delay and max_delay must be 0 or more seconds")
        if self.backoff < 1:
            raise PipelineDefinitionError(f"retry backoff must be 1 or more, got {self.backoff}")
        retry_on: Any = self.retry_on
        retry_on = (retry_on,) if isinstance(retry_on, type) else tuple(retry_on)
        for exc_type in retry_on:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise PipelineDefinitionError(
                    f"retry_on must hold exception classes such as (ConnectionError,), "
                    f"got {exc_type!r}"
                )
        object.__setattr__(self, "retry_on", retry_on)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            return float(min(self.delay * self.backoff ** (attempt - 1), self.max_delay))
        except OverflowError:  # backoff ** attempt beyond a float: far past max_delay
            return float(self.max_delay)


@dataclass(frozen=True)
class CachePolicy:
    """Cache a task's result: under ``key`` as given, or a key derived from its name, code
    and inputs when ``key`` is ``None``; for ``ttl`` seconds (``None``: the manager's
    ``caching.ttl``)."""

    key: str | None = None
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise PipelineDefinitionError(
                f"cache key must be a non-empty string, got {self.key!r}; leave it out to "
                "derive one from the task's name, code and inputs"
            )
        if self.ttl is not None and (
            not _is_number(self.ttl) or not math.isfinite(self.ttl) or self.ttl <= 0
        ):
            raise PipelineDefinitionError(
                f"cache ttl must be a finite number of seconds above 0, got {self.ttl!r}; leave "
                "it out for the manager's caching.ttl"
            )


@dataclass(frozen=True)
class Task:
    """The frozen spec of one task. Derive a changed one with ``dataclasses.replace``.

    ``func`` receives the results of ``depends_on`` as positional arguments, in that order.
    ``retry`` and ``timeout`` override the manager's ``fault_tolerance`` defaults
    (``timeout=math.inf``: no limit, whatever the default).
    ``resource_requirements`` (``{"cpu_cores": 4, "memory_mb": 4096, "gpu": 1}``) is kept on
    the spec for the resource-aware scheduler. ``cache`` caches the result
    (``@pm.cache_result``); ``monitor`` measures it closely (``@pm.track_performance``).
    """

    name: str
    func: Callable[..., Any]
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy | None = None
    timeout: float | None = None
    resource_requirements: Mapping[str, float] | None = None
    cache: CachePolicy | None = None
    monitor: bool | None = None
    description: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise PipelineDefinitionError(
                f"a task name must be a non-empty string, got {self.name!r}; "
                'for example @pipeline.task("extract")'
            )
        _check_name("task", self.name)
        if not callable(self.func):
            raise TaskSignatureError(
                f"task {self.name!r}: {self.func!r} is not callable; decorate a function, or "
                f"pass one as Task({self.name!r}, my_function)"
            )
        depends_on = _normalize_depends_on(self.name, self.depends_on)
        object.__setattr__(self, "depends_on", depends_on)
        if self.timeout is not None and (
            not _is_number(self.timeout) or math.isnan(self.timeout) or self.timeout <= 0
        ):
            raise PipelineDefinitionError(
                f"task {self.name!r}: timeout must be a number of seconds above 0 (finite, or "
                f"math.inf for no limit), got {self.timeout!r}"
            )
        if self.resource_requirements is not None:
            _check_resources(self.name, self.resource_requirements)
            object.__setattr__(self, "resource_requirements", dict(self.resource_requirements))
        if self.description is None:
            doc = inspect.getdoc(self.func) if inspect.isfunction(self.func) else None
            object.__setattr__(self, "description", doc.splitlines()[0] if doc else None)
        _check_signature(self.name, self.func, depends_on)

    @property
    def function_name(self) -> str:
        """The function's qualified name, for messages."""
        return getattr(self.func, "__qualname__", None) or repr(self.func)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _normalize_depends_on(name: str, depends_on: Any) -> tuple[str, ...]:
    if isinstance(depends_on, str):
        depends_on = (depends_on,)
    if not isinstance(depends_on, Iterable):
        raise PipelineDefinitionError(
            f"task {name!r}: depends_on must be a list of task names, got {depends_on!r}"
        )
    deps = tuple(depends_on)
    for dep in deps:
        if not isinstance(dep, str):
            hint = f" (did you mean {dep.__name__!r}?)" if hasattr(dep, "__name__") else ""
            raise PipelineDefinitionError(
                f"task {name!r}: depends_on must hold task names as strings, got {dep!r}{hint}"
            )
    seen: set[str] = set()
    for dep in deps:
        if dep in seen:
            raise PipelineDefinitionError(
                f"task {name!r} lists {dep!r} twice in depends_on; list each dependency once"
            )
        seen.add(dep)
    return deps


def _check_name(kind: str, name: str) -> None:
    """Refuse a name the store cannot hold as one file name (see ``store.names``)."""
    problem = name_problem(name, pipeline=kind == "pipeline")
    if problem is not None:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise PipelineDefinitionError(f"the {kind} name {shown!r} cannot be used: {problem}")


def _check_resources(name: str, resources: Mapping[str, float]) -> None:
    if not isinstance(resources, Mapping):
        raise PipelineDefinitionError(
            f"task {name!r}: resource_requirements must be a dict such as "
            f'{{"cpu_cores": 4, "memory_mb": 4096}}, got {resources!r}'
        )
    for key, amount in resources.items():
        if (
            not isinstance(key, str)
            or isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or amount < 0
        ):
            raise PipelineDefinitionError(
                f"task {name!r}: resource_requirements[{key!r}] must be a number of 0 or more, "
                f"got {amount!r}"
            )


def _check_signature(name: str, func: Callable[..., Any], depends_on: tuple[str, ...]) -> None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have no signature; nothing to check
        return
    try:
        signature.bind(*depends_on)
    except TypeError as exc:
        func_name = getattr(func, "__qualname__", repr(func))
        count = len(depends_on)
        results = "no results" if not count else f"{count} result{'s' if count > 1 else ''}"
        raise TaskSignatureError(
            f"task {name!r}: {func_name}{signature} cannot be called with {results} from "
            f"depends_on={list(depends_on)} ({exc}); give the function one positional "
            f"parameter per dependency, in depends_on order"
        ) from None


class Pipeline:
    """A named set of tasks and their dependencies.

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

    def __init__(self, name: str, *, description: str | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise PipelineDefinitionError(
                f'a pipeline name must be a non-empty string, got {name!r}; Pipeline("etl")'
            )
        _check_name("pipeline", name)
        self.name = name
        self.description = description
        self._tasks: dict[str, Task] = {}
        self._version = 0
        self._last_run: tuple[int, PipelineResult] | None = None
        _by_name[name] = self

    # -- declaring ----------------------------------------------------------------------
    @overload
    def task(self, name: F, /) -> F: ...
    @overload
    def task(
        self,
        name: str | None = None,
        depends_on: Iterable[str] | str = (),
        *,
        timeout: float | None = None,
        resource_requirements: Mapping[str, float] | None = None,
    ) -> Callable[[F], F]: ...
    def task(
        self,
        name: str | Callable[..., Any] | None = None,
        depends_on: Iterable[str] | str = (),
        *,
        timeout: float | None = None,
        resource_requirements: Mapping[str, float] | None = None,
    ) -> Any:
        """Register the decorated function as a task and return it unchanged.

        ``name`` defaults to the function's name; ``@pipeline.task`` also works bare.
        """
        if callable(name):
            return self.task()(name)

        def register(func: F) -> F:
            self._register(
                func,
                name=name if name is not None else _default_name(func),
                depends_on=depends_on,
                timeout=timeout,
                resource_requirements=resource_requirements,
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
        try:
            options = _options.get(task.func) or {}
        except TypeError:  # not weak-referenceable (a builtin): no options can follow it
            options = None
        if options:  # set by option decorators on the function; the spec's own values win
            unset = {k: v for k, v in options.items() if getattr(task, k) is None}
            task = dataclasses.replace(task, **unset) if unset else task
        self._tasks[task.name] = task
        self._version += 1
        if options is not None:
            _registrations.setdefault(task.func, []).append((weakref.ref(self), task.name))
        return task

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
        from .plan import topological_order

        return topological_order(self)

    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in declaration order."""
        return tuple(self._tasks)

    def get_task(self, name: str) -> Task:
        """The spec of task ``name``."""
        try:
            return self._tasks[name]
        except KeyError:
            from .plan import did_you_mean

            raise KeyError(
                f"pipeline {self.name!r} has no task {name!r}{did_you_mean(name, self._tasks)}"
            ) from None

    __getitem__ = get_task

    def validate(self) -> None:
        """Check the whole pipeline (dependencies, cycles, emptiness) without running it."""
        from .plan import validate

        validate(self)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, tasks={list(self._tasks)})"

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
        if self._last_run is None or self._last_run[0] != self._version:
            return None
        return self._last_run[1]

    def _remember(self, result: PipelineResult) -> None:
        """Keep ``result``'s task states (not its values) as this pipeline's latest run."""
        self._last_run = (self._version, result.without_values())

    def _repr_html_(self) -> str:
        """The task graph as inline SVG, for notebooks, coloured by the latest run if any."""
        from .pictures import pipeline_html

        return pipeline_html(self, self.last_run)

    # -- internals ----------------------------------------------------------------------
    @property
    def declared(self) -> Mapping[str, Task]:
        """Task specs by name, in declaration order, without validation."""
        return self._tasks

    @property
    def version(self) -> int:
        """Goes up whenever a task is added or changed; plans are cached against it."""
        return self._version

    def _register(self, func: Callable[..., Any], **fields: Any) -> Task:
        return self.add(Task(func=func, **fields))

    def _update(self, name: str, **changes: Any) -> None:
        self._tasks[name] = dataclasses.replace(self._tasks[name], **changes)
        self._version += 1


_by_name: weakref.WeakValueDictionary[str, Pipeline] = weakref.WeakValueDictionary()


def find_pipeline(name: str) -> Pipeline | None:
    """The last pipeline created under ``name`` in this process that is still alive."""
    return _by_name.get(name)


def set_task_options(func: Callable[..., Any], **options: Any) -> None:
    """Attach task options to ``func``, whether or not it is registered as a task yet.

    This is how option decorators work in either order around ``task``: the options are kept
    on the function for registrations still to come, and applied to the registrations made.
    """
    try:
        _options.setdefault(func, {}).update(options)
    except TypeError:
        raise PipelineDefinitionError(
            f"cannot attach task options to {func!r}; wrap it in a def and decorate that"
        ) from None
    for pipeline_ref, name in _registrations.get(func, ()):
        pipeline = pipeline_ref()
        if pipeline is not None and name in pipeline.declared:
            pipeline._update(name, **options)


def _default_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise PipelineDefinitionError(
            f'cannot name a task after {func!r}; give it a name: @pipeline.task("my_task")'
        )
    return name


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
    *,
    timeout: float | None = None,
    resource_requirements: Mapping[str, float] | None = None,
) -> Callable[[F], F]: ...
def task(
    name: str | Callable[..., Any] | None = None,
    depends_on: Iterable[str] | str = (),
    *,
    timeout: float | None = None,
    resource_requirements: Mapping[str, float] | None = None,
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
    return pipeline.task(
        name, depends_on, timeout=timeout, resource_requirements=resource_requirements
    )


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

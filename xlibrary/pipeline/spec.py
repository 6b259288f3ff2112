"""Declare: the frozen spec of one task, its retry and cache policies, and the options that
decorators attach to a function.

Everything a single task spec can get wrong is checked when the task is declared (the name,
a non-callable, a signature that cannot take the dependencies' results); what needs the whole
pipeline (unknown dependencies, cycles, emptiness) is checked by :mod:`~.order` before any
task runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from .datasets import Dataset
from .errors import DatasetError, PipelineDefinitionError, TaskSignatureError, did_you_mean
from .mapping import check_map
from .signatures import bind_problem, signature_of, summary_of
from .store.names import name_problem

__all__ = [
    "CachePolicy",
    "RetryPolicy",
    "Task",
    "TaskOptions",
    "check_name",
    "default_name",
    "option_decorator",
    "options_generation",
    "set_task_options",
    "with_options",
]

# Options set by option decorators (retry_on_failure, cache_result, ...), kept beside the
# function rather than on it (a function's __dict__ travels with it when cloudpickle ships it
# to a worker). A pipeline reads them when it hands out its specs: decorating a function
# changes no pipeline behind its back, and the generation tells pipelines to read again.
_options: weakref.WeakKeyDictionary[Callable[..., Any], dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
_options_generation = 0
_options_lock = threading.Lock()


class TaskOptions(TypedDict, total=False):
    """The keywords ``@pipeline.task(...)`` and the builder's ``task(...)`` take, besides the
    name and ``depends_on``: each is a field of :class:`Task` (see there)."""

    timeout: float | None
    resource_requirements: Mapping[str, float] | None
    tags: Iterable[str] | str
    pool: str | None
    outputs: Iterable[str] | None
    save_to: str | Mapping[str, str] | None
    versioned: bool
    cache: CachePolicy | bool | None
    map_over: str | None
    batch_size: int | Literal["auto"] | None
    on_error: Literal["fail", "skip"] | None


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
    (``@pm.cache_result``), or ``False``: never, whatever the config says; ``monitor``
    measures it closely (``@pm.track_performance``). ``tags`` let a run select the task
    (``tags=["reporting"]``); ``pool`` names a concurrency pool of the config's ``pools`` that
    limits how many of its tasks run at once; ``outputs`` names the parts of a tuple or
    mapping result, each a dependency of its own (``"split.X_train"``); ``namespace`` is set
    on the tasks of a pipeline included under one (:meth:`~xlibrary.pipeline.Pipeline.include`).

    Keyword-only parameters of ``func`` are pipeline parameters (see :mod:`~.params`).
    ``save_to`` is an fsspec URL the result is written to after the task succeeds (format
    from the extension; a local path is made absolute here); ``versioned`` keeps each run's
    copy under its run id. ``map_over`` names the dependency whose elements the task is
    called with, one call each (``batch_size``: several calls per Dask task; ``on_error``:
    ``"fail"`` or ``"skip"`` a failing element); see :mod:`~.mapping`.
    """

    name: str
    func: Callable[..., Any]
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy | None = None
    timeout: float | None = None
    resource_requirements: Mapping[str, float] | None = None
    cache: CachePolicy | Literal[False] | None = None
    monitor: bool | None = None
    description: str | None = field(default=None, compare=False)
    tags: frozenset[str] = frozenset()
    pool: str | None = None
    outputs: tuple[str, ...] | None = None
    namespace: str | None = None
    save_to: str | Mapping[str, str] | None = None
    versioned: bool = False
    map_over: str | None = None
    batch_size: int | str | None = None
    on_error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise PipelineDefinitionError(
                f"a task name must be a non-empty string, got {self.name!r}; "
                'for example @pipeline.task("extract")'
            )
        check_name("task", self.name)
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
            object.__setattr__(self, "description", summary_of(self.func))
        _check_signature(self.name, self.func, depends_on)
        _check_shape(self)
        check_map(self)
        if self.cache not in (None, False) and not isinstance(self.cache, CachePolicy):
            raise PipelineDefinitionError(
                f"task {self.name!r}: cache must be False (never cached) or a CachePolicy, "
                f"got {self.cache!r}; @pm.cache_result(key=..., ttl=...) sets one"
            )
        if isinstance(self.save_to, Mapping):  # one URL per named output
            object.__setattr__(self, "save_to", _check_outputs_saved(self, self.save_to))
        elif self.save_to is not None or self.versioned is not False:
            object.__setattr__(self, "save_to", _check_output(self))

    @property
    def function_name(self) -> str:
        """The function's qualified name, for messages."""
        return getattr(self.func, "__qualname__", None) or repr(self.func)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _normalize_depends_on(name: str, depends_on: Any) -> tuple[str, ...]:
    if (  # the common case, checked fast
        type(depends_on) is tuple
        and all(type(dep) is str for dep in depends_on)
        and len(set(depends_on)) == len(depends_on)
    ):
        return depends_on
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


def _check_shape(task: Task) -> None:
    """The fields of pipeline shape: tags, pool, outputs, namespace (normalised in place)."""
    name = task.name
    tags: Any = task.tags
    if type(tags) is not frozenset or not all(type(tag) is str and tag.strip() for tag in tags):
        tags = frozenset((tags,) if isinstance(tags, str) else _strings(name, "tags", tags))
        object.__setattr__(task, "tags", tags)
    if task.pool is not None and (not isinstance(task.pool, str) or not task.pool.strip()):
        raise PipelineDefinitionError(
            f"task {name!r}: pool must be the name of a pool of the config's pools, such as "
            f'pool="database", got {task.pool!r}'
        )
    if task.outputs is not None:
        outputs: Any = task.outputs
        outputs = (outputs,) if isinstance(outputs, str) else _strings(name, "outputs", outputs)
        if not outputs:
            raise PipelineDefinitionError(
                f"task {name!r}: outputs=[] names no output; name each part of the result "
                '(outputs=["X_train", "X_test"]), or leave outputs out'
            )
        for output in outputs:
            if "." in output or output != output.strip():
                raise PipelineDefinitionError(
                    f"task {name!r}: the output name {output!r} cannot hold a '.' or spaces "
                    f'at its ends: a dependency names it as "{name}.<output>"'
                )
            if outputs.count(output) > 1:
                raise PipelineDefinitionError(
                    f"task {name!r} lists the output {output!r} twice; name each output once"
                )
            check_name("task", f"{name}.{output}")
        object.__setattr__(task, "outputs", outputs)
    namespace = task.namespace
    if namespace is not None and (
        not isinstance(namespace, str) or not name.startswith(namespace + ".")
    ):
        raise PipelineDefinitionError(
            f"task {name!r}: namespace {namespace!r} must be the start of its name, before a "
            "'.'; Pipeline.include(other, namespace=...) sets both"
        )


def _strings(name: str, what: str, values: Any) -> tuple[str, ...]:
    if not isinstance(values, Iterable) or isinstance(values, Mapping):
        raise PipelineDefinitionError(
            f"task {name!r}: {what} must be a list of names, got {values!r}"
        )
    out = tuple(values)
    for value in out:
        if not isinstance(value, str) or not value.strip():
            raise PipelineDefinitionError(
                f"task {name!r}: {what} must hold non-empty strings, got {value!r}"
            )
    return out


def check_name(kind: str, name: str) -> None:
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


def _check_outputs_saved(task: Task, save_to: Mapping[str, Any]) -> dict[str, str]:
    """``save_to={"X_train": URL, ...}``: each named output's URL, checked as ``save_to``."""
    outputs = task.outputs or ()
    if not outputs:
        raise PipelineDefinitionError(
            f"task {task.name!r}: save_to by output ({sorted(save_to)}) needs outputs=[...]; "
            'give one URL, save_to="data/result.parquet", for the whole result'
        )
    checked: dict[str, str] = {}
    for output, url in save_to.items():
        if output not in outputs:
            raise PipelineDefinitionError(
                f"task {task.name!r}: save_to names {output!r}, which is not one of its "
                f"outputs{did_you_mean(str(output), outputs)} ({', '.join(outputs)})"
            )
        one = dataclasses.replace(task, name=f"{task.name}.{output}", save_to=url, outputs=None)
        checked[output] = str(one.save_to)
    return checked


def _check_output(task: Task) -> str:
    """The absolute ``save_to`` of ``task``, checked as a dataset URL."""
    if not isinstance(task.versioned, bool):
        raise PipelineDefinitionError(
            f"task {task.name!r}: versioned must be True or False, got {task.versioned!r}"
        )
    if task.save_to is None:
        raise PipelineDefinitionError(
            f"task {task.name!r}: versioned=True keeps each run's copy of the task's output: "
            'give the output with save_to="data/model.parquet" too'
        )
    if not isinstance(task.save_to, str | os.PathLike) or not str(task.save_to):
        raise PipelineDefinitionError(
            f"task {task.name!r}: save_to must be a path or an fsspec URL such as "
            f'"data/03_primary/model_input.parquet", got {task.save_to!r}'
        )
    try:
        output = Dataset(os.fspath(task.save_to), versioned=task.versioned, name=task.name)
    except DatasetError as exc:
        raise PipelineDefinitionError(f"task {task.name!r}: save_to: {exc}") from None
    if output.is_glob:
        raise PipelineDefinitionError(
            f"task {task.name!r}: save_to {task.save_to!r} is a glob; give one file's URL"
        )
    return output.url


def _check_signature(name: str, func: Callable[..., Any], depends_on: tuple[str, ...]) -> None:
    problem = bind_problem(func, len(depends_on))  # read once per function (signatures.py)
    if problem is not None:
        func_name = getattr(func, "__qualname__", repr(func))
        count = len(depends_on)
        results = "no results" if not count else f"{count} result{'s' if count > 1 else ''}"
        raise TaskSignatureError(
            f"task {name!r}: {func_name}{signature_of(func)} cannot be called with {results} "
            f"from depends_on={list(depends_on)} ({problem}); give the function one positional "
            f"parameter per dependency, in depends_on order"
        )


def set_task_options(func: Callable[..., Any], **options: Any) -> None:
    """Attach task options to ``func``, whether or not it is registered as a task yet.

    This is how option decorators work in either order around ``task``: the options are kept
    beside the function, and every pipeline that has it as a task reads them when it hands out
    its specs (a spec's own values win).
    """
    global _options_generation
    with _options_lock:
        try:
            _options.setdefault(func, {}).update(options)
        except TypeError:
            raise PipelineDefinitionError(
                f"cannot attach task options to {func!r}; wrap it in a def and decorate that"
            ) from None
        _options_generation += 1


def options_generation() -> int:
    """Goes up whenever an option decorator is applied anywhere: pipelines read their
    functions' options again."""
    return _options_generation


def with_options(task: Task) -> Task:
    """``task`` with the options its function carries, where the spec sets none."""
    try:
        options = _options.get(task.func)
    except TypeError:  # not weak-referenceable (a builtin): no options can follow it
        return task
    if not options:
        return task
    unset = {k: v for k, v in options.items() if getattr(task, k) is None}
    return dataclasses.replace(task, **unset) if unset else task


def default_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise PipelineDefinitionError(
            f'cannot name a task after {func!r}; give it a name: @pipeline.task("my_task")'
        )
    return name


def option_decorator(func: Callable[..., Any] | None, **options: Any) -> Any:
    """A decorator attaching ``options`` to the function it decorates (see
    :func:`set_task_options`), used bare (``func`` given) or called."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        set_task_options(f, **options)
        return f

    return decorate(func) if func is not None else decorate

"""Declare: pipelines made of pipelines, and the named outputs of tasks.

**Composition.** ``pipeline.include(other, namespace="ds")`` (or ``p1 + p2``) makes the tasks
of ``other`` part of ``pipeline``. An inclusion is live: a task added to ``other`` later is part
of ``pipeline`` too. Under a namespace, each included task is renamed ``"ds.<name>"``, and so
is each dependency on a task of ``other`` (or on one of its outputs); any other dependency
names a task of the including pipeline as written. That is how a task of one pipeline depends
on a task of another, and how the same pipeline is included twice::

    data_science.task("split", depends_on=["model_input_table"])  # of data_processing
    full = data_processing + data_science                          # "split" finds it
    both = Pipeline("both").include(train, namespace="a").include(train, namespace="b")

Names that clash (two tasks, or a task and an output, under one name) raise
:class:`~.errors.DuplicateTaskError` when the pipeline is read; unknown dependencies and
cycles across pipelines are reported by :mod:`~.order`, before any task runs, as for one
pipeline.

**Named outputs.** A task declared with ``outputs=["X_train", "X_test"]`` returns a tuple (one
value per output, in order) or a mapping (one key per output). A dependency
``"<task>.<output>"`` names one of them: the pipeline then holds an *output task* of that
name, which depends on the task and picks its part of the result (no copy). Output tasks run
in the graph like any task (they show in results, status and pictures), cost microseconds,
are never cached themselves (their task is), and stand in cache keys for their part of the
task's cache entry (:func:`output_token`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import (
    DuplicateTaskError,
    PipelineDefinitionError,
    UnknownDependencyError,
    did_you_mean,
)
from .spec import Task, check_name


class Pipeline(Protocol):
    """What composing reads of a :class:`~xlibrary.pipeline.pipeline.Pipeline` (named so;
    a protocol, so this layer needs nothing above it)."""

    @property
    def name(self) -> str: ...

    @property
    def inclusions(self) -> tuple[Inclusion, ...]: ...

    @property
    def composed(self) -> Mapping[str, Task]: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def version(self) -> tuple[Any, ...]: ...


__all__ = [
    "Inclusion",
    "OutputOf",
    "check_inclusion",
    "included_params",
    "included_tasks",
    "is_output",
    "output_token",
    "with_outputs",
]


@dataclass(frozen=True)
class Inclusion:
    """One pipeline included in another: its tasks, renamed under ``namespace`` if any, and
    the parameter values given for them (kept as ``"<namespace>.<name>"``)."""

    pipeline: Pipeline
    namespace: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputOf:
    """The function of an output task: the part ``output`` of ``task``'s result (its item
    ``index`` of a tuple or list, its key ``output`` of a mapping)."""

    task: str
    output: str
    index: int

    def __call__(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return value[self.output]
        return value[self.index]


def is_output(task: Task) -> bool:
    """Whether ``task`` is the output task of a named output."""
    return type(task.func) is OutputOf


def output_token(token: str, output: str) -> str:
    """What stands for output ``output`` of a result whose token is ``token``, in the cache
    keys of the tasks that use it (the same before a run and in it)."""
    return f"{token}#{output}"


def check_inclusion(including: Pipeline, other: Pipeline, namespace: Any, params: Any) -> Inclusion:
    """The inclusion of ``other`` in ``including``; refuses a bad namespace or params, and a
    pipeline that includes (perhaps through others) the one including it."""
    if namespace is not None:
        if not isinstance(namespace, str) or not namespace.strip() or "." in namespace:
            raise PipelineDefinitionError(
                f"pipeline {including.name!r}: a namespace is a non-empty name without '.', "
                f'such as namespace="ds", got {namespace!r}'
            )
        check_name("task", namespace)
    if other is including or _includes(other, including):
        why = (
            "a pipeline cannot include itself"
            if other is including
            else f"{other.name!r} already includes {including.name!r}, and a pipeline cannot "
            "contain itself"
        )
        raise PipelineDefinitionError(
            f"pipeline {including.name!r} cannot include {other.name!r}: {why}"
        )
    if params is not None and (
        not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params)
    ):
        raise PipelineDefinitionError(
            f"pipeline {including.name!r}: include(params=...) takes a dict of parameter "
            f"values by name, got {params!r}"
        )
    return Inclusion(other, namespace, dict(params or {}))


def _includes(pipeline: Pipeline, wanted: Pipeline) -> bool:
    return any(
        inclusion.pipeline is wanted or _includes(inclusion.pipeline, wanted)
        for inclusion in pipeline.inclusions
    )


def included_tasks(
    pipeline: str, own: Mapping[str, Task], inclusions: Iterable[Inclusion]
) -> dict[str, Task]:
    """``own`` tasks, then each included pipeline's tasks (its own and those it includes),
    renamed under the inclusion's namespace; output tasks are not added here."""
    tasks = dict(own)
    for inclusion in inclusions:
        inner = inclusion.pipeline.composed
        namespace = inclusion.namespace
        for task in inner.values():
            added = task if namespace is None else _renamed(task, namespace, inner)
            existing = tasks.get(added.name)
            if existing is not None:
                hint = (
                    f"; include it under a namespace, say include({inclusion.pipeline.name!r}"
                    ', namespace="...")'
                    if namespace is None
                    else "; choose another namespace or task name"
                )
                raise DuplicateTaskError(
                    f"pipeline {pipeline!r} has two tasks named {added.name!r} (functions "
                    f"{existing.function_name} and {added.function_name}, the second from "
                    f"pipeline {inclusion.pipeline.name!r}){hint}"
                )
            tasks[added.name] = added
    return tasks


def _renamed(task: Task, namespace: str, inner: Mapping[str, Task]) -> Task:
    depends_on = tuple(
        f"{namespace}.{dep}" if dep in inner or dep.rpartition(".")[0] in inner else dep
        for dep in task.depends_on
    )
    return dataclasses.replace(
        task,
        name=f"{namespace}.{task.name}",
        depends_on=depends_on,
        namespace=namespace if task.namespace is None else f"{namespace}.{task.namespace}",
    )


def included_params(inclusions: Iterable[Inclusion]) -> dict[str, Any]:
    """The parameter values of included pipelines, by ``"<namespace>.<name>"`` (or by name,
    without a namespace): each included pipeline's own (``Pipeline(params=)``, its included
    ones'), then those given with ``include(..., params=)``, which win."""
    out: dict[str, Any] = {}
    for inclusion in inclusions:
        prefix = f"{inclusion.namespace}." if inclusion.namespace else ""
        inner = {**inclusion.pipeline.params, **inclusion.params}
        out.update({f"{prefix}{name}": value for name, value in inner.items()})
    return out


def with_outputs(pipeline: str, tasks: Mapping[str, Task]) -> dict[str, Task]:
    """``tasks`` with an output task after each task whose named outputs are depended on."""
    wanted: dict[str, list[str]] = {}
    for task in tasks.values():
        if isinstance(task.save_to, Mapping):  # an output saved somewhere is an output task
            wanted.setdefault(task.name, []).extend(task.save_to)
        if task.outputs is not None:
            for output in task.outputs:
                if f"{task.name}.{output}" in tasks:
                    raise DuplicateTaskError(
                        f"pipeline {pipeline!r}: the task {task.name + '.' + output!r} has the "
                        f"name of output {output!r} of task {task.name!r}; rename one of them"
                    )
        for dep in task.depends_on:
            if dep in tasks:
                continue
            head, _, output = dep.rpartition(".")
            producer = tasks.get(head)
            if producer is None:
                continue  # an unknown dependency: order.validate names it
            if producer.outputs is None:
                raise UnknownDependencyError(
                    f"unknown dependency {dep!r} of task {task.name!r} in pipeline "
                    f"{pipeline!r}: task {head!r} declares no named outputs; declare them "
                    f'with outputs=["{output}", ...], or depend on {head!r} itself'
                )
            if output not in producer.outputs:
                raise UnknownDependencyError(
                    f"unknown dependency {dep!r} of task {task.name!r} in pipeline "
                    f"{pipeline!r}: task {head!r} has no output {output!r}"
                    f"{did_you_mean(output, producer.outputs)} (its outputs: "
                    f"{', '.join(producer.outputs)})"
                )
            wanted.setdefault(head, [])
            if output not in wanted[head]:
                wanted[head].append(output)
    if not wanted:
        return dict(tasks)
    out: dict[str, Task] = {}
    for name, task in tasks.items():
        out[name] = task
        outputs = task.outputs or ()
        for output in sorted(wanted.get(name, ()), key=outputs.index):
            out[f"{name}.{output}"] = Task(
                name=f"{name}.{output}",
                func=OutputOf(name, output, outputs.index(output)),
                depends_on=(name,),
                description=f"output {output!r} of task {name!r}",
                tags=task.tags,
                namespace=task.namespace,
                save_to=task.save_to.get(output) if isinstance(task.save_to, Mapping) else None,
                versioned=task.versioned and isinstance(task.save_to, Mapping),
            )
    return out

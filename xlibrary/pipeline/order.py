"""Declare: the checks of a whole pipeline, and the order its tasks run in.

Before any task runs: the pipeline has tasks, every ``depends_on`` names one of them (else
"did you mean"), and they hold no cycle (else the cycle is printed). Tasks come in a
topological order that is the same every time: generation by generation, each generation in
declaration order.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from .errors import (
    DependencyCycleError,
    EmptyPipelineError,
    UnknownDependencyError,
    did_you_mean,
)

if TYPE_CHECKING:
    from .spec import Task


class Pipeline(Protocol):
    """What the checks read of a pipeline: its name and its task specs by name."""

    @property
    def name(self) -> str: ...
    @property
    def declared(self) -> Mapping[str, Task]: ...


__all__ = ["topological_order", "validate"]


def validate(pipeline: Pipeline) -> None:
    """Raise the first :class:`PipelineDefinitionError` that ``pipeline`` holds, if any."""
    topological_order(pipeline)


def topological_order(pipeline: Pipeline) -> tuple[Task, ...]:
    """The task specs, dependencies first; raises when the pipeline cannot run."""
    declared = pipeline.declared
    if not declared:
        raise EmptyPipelineError(
            f"pipeline {pipeline.name!r} has no tasks; add one with "
            '@pipeline.task("name") before running it'
        )
    for spec in declared.values():
        for dep in spec.depends_on:
            if dep not in declared:
                raise UnknownDependencyError(
                    f"unknown dependency {dep!r} of task {spec.name!r} in pipeline "
                    f"{pipeline.name!r}{did_you_mean(dep, declared)} "
                    f"(tasks: {', '.join(declared)})"
                )
    waiting = {spec.name: len(spec.depends_on) for spec in declared.values()}
    dependents: dict[str, list[str]] = {}
    for spec in declared.values():
        for dep in spec.depends_on:
            dependents.setdefault(dep, []).append(spec.name)
    position = {name: i for i, name in enumerate(declared)}
    ready = [name for name, count in waiting.items() if not count]  # in declaration order
    order: list[Task] = []
    while ready:  # generation by generation (graphlib's order, at a fraction of its cost)
        order.extend(declared[name] for name in ready)
        following = []
        for name in ready:
            for dependent in dependents.get(name, ()):
                waiting[dependent] -= 1
                if not waiting[dependent]:
                    following.append(dependent)
        following.sort(key=position.__getitem__)
        ready = following
    if len(order) < len(declared):
        _raise_cycle(pipeline)
    return tuple(order)


def _raise_cycle(pipeline: Pipeline) -> None:
    """Raise the DependencyCycleError that graphlib finds in ``pipeline``."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for spec in pipeline.declared.values():
        sorter.add(spec.name, *spec.depends_on)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(reversed(exc.args[1]))  # graphlib lists it dependents-first
        raise DependencyCycleError(
            f"pipeline {pipeline.name!r} has a dependency cycle: {' -> '.join(cycle)} "
            f"(each task depends on the one before it); remove one of these dependencies",
            cycle,
        ) from None
    raise AssertionError(f"pipeline {pipeline.name!r}: tasks left unordered, with no cycle")

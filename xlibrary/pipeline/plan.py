"""Plan: check a whole pipeline and fix what each task will do in a run.

Guarantees, before any task runs:

* the pipeline has tasks, every ``depends_on`` names one of them (else "did you mean"), and
  they hold no cycle (else the cycle is printed);
* tasks come in a topological order that is the same every time: generation by generation,
  each generation in declaration order;
* every task has its effective retry policy and timeout, from its own options or else from
  the manager's ``fault_tolerance`` settings.

A :class:`Plan` is immutable; the manager caches it per pipeline version.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import DependencyCycleError, EmptyPipelineError, UnknownDependencyError
from .pipeline import Pipeline, RetryPolicy, Task
from .settings import FaultTolerance

__all__ = ["Plan", "PlannedTask", "did_you_mean", "make_plan", "topological_order", "validate"]

# Task options that are kept on the spec but whose feature is not built yet, by option name.
PENDING_TASK_OPTIONS = {"resource_requirements": "resource-aware scheduling"}


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """One task as it will run: its spec plus the effective retry policy and timeout."""

    spec: Task
    retry: RetryPolicy | None
    timeout: float | None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Plan:
    """What a run of one pipeline does, decided before it starts."""

    pipeline: str
    tasks: tuple[PlannedTask, ...]
    """In topological order."""
    sinks: tuple[str, ...]
    """Tasks nothing depends on; their results make ``final_result``."""
    pending_options: tuple[tuple[str, str, str], ...] = ()
    """``(task, option, feature)`` for options set on tasks whose feature is not built yet."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'extract'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


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
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for spec in declared.values():
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
    position = {name: i for i, name in enumerate(declared)}
    order: list[Task] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(declared[name] for name in ready)
        sorter.done(*ready)
    return tuple(order)


def make_plan(pipeline: Pipeline, fault_tolerance: FaultTolerance) -> Plan:
    """Validate ``pipeline`` and decide each task's effective policy."""
    order = topological_order(pipeline)
    default_retry = (
        RetryPolicy(
            max_retries=fault_tolerance.max_retries,
            delay=fault_tolerance.retry_delay,
            backoff=fault_tolerance.retry_backoff,
        )
        if fault_tolerance.max_retries
        else None
    )
    planned = []
    pending = []
    depended_on: set[str] = set()
    for spec in order:
        depended_on.update(spec.depends_on)
        retry = spec.retry if spec.retry is not None else default_retry
        if retry is not None and retry.max_retries == 0:
            retry = None
        timeout = spec.timeout if spec.timeout is not None else fault_tolerance.task_timeout
        planned.append(PlannedTask(spec, retry, timeout))
        for option, feature in PENDING_TASK_OPTIONS.items():
            if getattr(spec, option) is not None:
                pending.append((spec.name, option, feature))
    sinks = tuple(spec.name for spec in order if spec.name not in depended_on)
    return Plan(pipeline.name, tuple(planned), sinks, tuple(pending))

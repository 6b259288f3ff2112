"""Plan: check a whole pipeline and fix what each task will do in a run.

Guarantees, before any task runs: the pipeline passes the checks of :mod:`~.order` (tasks,
known dependencies, no cycle, a fixed topological order), and every task has its effective
retry policy and timeout, from its own options or else from the manager's ``fault_tolerance``
settings, and its cache rule (explicit key or derived, TTL, code fingerprint).

A :class:`Plan` is immutable; the manager caches it per pipeline version.

Then, for each run, :func:`prepare_run` decides what every task does (:class:`Step`): run,
load from the cache, restore a result saved by an earlier run, use an outcome already in
hand, or nothing at all, because every task that needs it has its result already. Cache keys
that can be known before running (explicit keys, and derived keys whose inputs all come from
the cache or from datasets' fingerprints) are looked up here, so a hit prunes the tasks
upstream of it. A derived key also covers the parameter values the task uses and its datasets
(:mod:`~.inputs`); a task with none of those inputs and no upstream results is not cached
unless given a key or TTL.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .compose import is_output, output_token
from .datasets import Dataset
from .fingerprint import code_fingerprint, derive_key
from .inputs import (
    INVISIBLE,
    RunInputs,
    TaskInputs,
    bind_run,
    changed_inputs,
    invisible,
    saved_output,
)
from .mapping import map_mark
from .order import topological_order
from .params import parameters_of
from .pipeline import Pipeline
from .redact import redact_url
from .settings import Caching, FaultTolerance
from .sources import output_of, source_of
from .spec import RetryPolicy, Task
from .store import Cache, Lookup

__all__ = [
    "Action",
    "CacheExplanation",
    "CacheRule",
    "Plan",
    "PlannedTask",
    "Restore",
    "Step",
    "explain",
    "make_plan",
    "prepare_run",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CacheRule:
    """How one task is cached: an explicit ``key`` or a derived one, and its TTL."""

    key: str | None
    ttl: float | None
    code: str
    """The fingerprint of the task's code, part of derived keys."""


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """One task as it will run: its spec plus the effective retry, timeout and cache rule."""

    spec: Task
    retry: RetryPolicy | None
    timeout: float | None
    cache: CacheRule | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    """The task's parameters (its function's keyword-only ones) and their defaults."""
    source: Dataset | None = None
    """The dataset a source task loads."""
    output: Dataset | None = None
    """Where the task's result is written after it succeeds (``save_to``, a catalog entry)."""
    uncached: str | None = None
    """Why caching leaves the task out (``cache=False``; nothing the engine can see)."""
    name: str = field(init=False)
    """The task's name (a field: read many times per run)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.spec.name)


@dataclass(frozen=True)
class Plan:
    """What a run of one pipeline does, decided before it starts."""

    pipeline: str
    tasks: tuple[PlannedTask, ...]
    """In topological order."""
    sinks: tuple[str, ...]
    """Tasks nothing depends on; their results make ``final_result``."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The pipeline's parameter values (``Pipeline(name, params=...)``)."""
    fingerprinted: frozenset[str] = frozenset()
    """Source tasks whose dataset fingerprint keys the cached tasks using them."""

    @functools.cached_property
    def has_cache_rules(self) -> bool:
        return any(planned.cache is not None for planned in self.tasks)

    @functools.cached_property
    def pools(self) -> dict[str, list[str]]:
        """The concurrency pools its tasks use, each with those tasks."""
        used: dict[str, list[str]] = {}
        for planned in self.tasks:
            if planned.spec.pool is not None:
                used.setdefault(planned.spec.pool, []).append(planned.name)
        return used

    @functools.cached_property
    def has_params(self) -> bool:
        return any(planned.params for planned in self.tasks)

    @functools.cached_property
    def by_name(self) -> Mapping[str, PlannedTask]:
        return {planned.name: planned for planned in self.tasks}

    @functools.cached_property
    def plain_steps(self) -> tuple[Step, ...]:
        """Every task runs: the steps of a run with nothing to look up or restore."""
        return tuple(Step(planned, Action.RUN, reason="not cached") for planned in self.tasks)


def make_plan(
    pipeline: Pipeline, fault_tolerance: FaultTolerance, caching: Caching | None = None
) -> Plan:
    """Validate ``pipeline`` and decide each task's effective policy."""
    caching = caching or Caching(enabled=False)
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
    depended_on: set[str] = set()
    catalog = pipeline.catalog
    for spec in order:
        depended_on.update(spec.depends_on)
        params, source = parameters_of(spec.func), source_of(spec)
        retry = spec.retry if spec.retry is not None else default_retry
        if retry is not None and retry.max_retries == 0:
            retry = None
        timeout = spec.timeout if spec.timeout is not None else fault_tolerance.task_timeout
        if timeout == math.inf:  # the task's own "no limit"
            timeout = None
        rule, uncached = None, None
        policy = spec.cache
        if policy is False:
            uncached = "cache=False"
        elif is_output(spec):  # picks its part of its task's result: cached with that task
            uncached = "an output of its task: cached with it"
        elif caching.enabled and (policy is not None or caching.cache_results):
            if invisible(spec, params, source, policy):
                uncached = INVISIBLE
                logger.debug("task %r of pipeline %r: %s", spec.name, pipeline.name, INVISIBLE)
            elif policy is not None or source is None:  # a dataset: keyed by its fingerprint
                rule = CacheRule(
                    key=policy.key if policy else None,
                    ttl=policy.ttl if policy and policy.ttl is not None else caching.ttl,
                    code=code_fingerprint(spec.func) + map_mark(spec),
                )
        output = output_of(spec, catalog)
        planned.append(
            PlannedTask(
                spec, retry, timeout, rule, params=params, source=source, output=output,
                uncached=uncached,
            )
        )  # fmt: skip
    sinks = tuple(spec.name for spec in order if spec.name not in depended_on)
    keyed = {dep for p in planned if p.cache is not None for dep in p.spec.depends_on}
    fingerprinted = frozenset(
        p.name for p in planned if p.source is not None and p.spec.cache is None and p.name in keyed
    )
    return Plan(
        pipeline.name, tuple(planned), sinks, params=pipeline.params, fingerprinted=fingerprinted
    )


# -- one run ----------------------------------------------------------------------------------
class Action(enum.StrEnum):
    """What a task does in one run."""

    RUN = "run"
    LOAD = "load"
    """Load the result from the cache (a hit found before the run)."""
    RESTORE = "restore"
    """Load the result an earlier run saved."""
    KNOWN = "known"
    """Use an outcome already in hand (from an earlier round of this run)."""
    PRUNE = "prune"
    """Nothing: no task that runs needs its result."""
    UNSELECTED = "unselected"
    """Nothing: the run's ``targets``, ``from_tasks`` or ``tags`` leave it out."""


@dataclass(frozen=True, slots=True)
class Restore:
    """Where an earlier run left a task's result: saved under ``run_id``, in the cache, or in
    a declared dataset (its source task's, or its ``save_to`` output)."""

    run_id: str | None = None
    cache_key: str | None = None
    token: str | None = None
    dataset: Dataset | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One task's part in one run."""

    task: PlannedTask
    action: Action
    cache_key: str | None = None
    """The cache key, when known before the run (LOAD, and RUN of a cached task)."""
    cache_checked: bool = False
    """RUN: the cache was already looked at for ``cache_key``, and missed."""
    restore_run: str | None = None
    token: str | None = None
    """RESTORE, LOAD: the token downstream cache keys use for the value."""
    reason: str = ""
    inputs: TaskInputs | None = None
    """RUN: the parameter values the task is called with, and the parts of its key and
    cache note they and its datasets give (``None``: nothing besides upstream results)."""
    saved: Mapping[str, Any] | None = None
    """LOAD of a task with an output: where the output it is read from lies (its version
    and the fingerprint of what was written)."""
    restore_dataset: Dataset | None = None
    """RESTORE from a declared dataset (instead of ``restore_run``)."""

    @property
    def name(self) -> str:
        return self.task.name


def prepare_run(
    plan: Plan,
    *,
    cache: Cache | None = None,
    known: Mapping[str, str | None] | None = None,
    restore: Mapping[str, Restore] | None = None,
    force: Collection[str] = (),
    targets: Collection[str] | None = None,
    explain: bool = False,
    unselected: Collection[str] = (),
    inputs: RunInputs | None = None,
) -> tuple[Step, ...]:
    """Decide each task's :class:`Step` for one run, in topological order.

    ``known`` maps tasks whose outcome is in hand to their output token; ``restore`` says
    where earlier results lie; tasks in ``force`` (and ``inputs.refresh``) run even when
    cached; ``targets`` (default: the sinks) are the tasks whose results the run must
    produce; ``inputs`` holds the run's parameter values (default: the functions' and the
    pipeline's). With ``explain``, misses say why (no entry, expired, code changed, which
    parameter or file changed). Tasks in ``unselected`` that no task of the run needs are
    left out as UNSELECTED rather than PRUNE.
    """
    if inputs is not None and inputs.refresh:
        force = {*force, *inputs.refresh}
    if not (known or restore or force or targets is not None or plan.has_params) and (
        cache is None or not plan.has_cache_rules
    ):
        return plan.plain_steps  # nothing to look up: every task runs
    if inputs is None:  # a run with the default values
        inputs = bind_run(plan)
    keyed = cache is not None and plan.has_cache_rules
    known = known or {}
    restore = restore or {}
    tokens: dict[str, str | None] = {}
    draft: dict[str, Step] = {}
    for planned in plan.tasks:
        name = planned.name
        if name in known:
            draft[name], tokens[name] = Step(planned, Action.KNOWN, reason="done"), known[name]
            continue
        taken = inputs.of_task(plan, planned, keyed=keyed)
        source = restore.get(name) if name not in force else None
        if source is not None and source.dataset is not None:
            where = source.dataset.name or redact_url(source.dataset.url)
            draft[name] = Step(
                planned, Action.RESTORE, restore_dataset=source.dataset,
                reason=f"read from the dataset {where}",
            )  # fmt: skip
            tokens[name] = None
            continue
        if source is not None and source.run_id is not None:
            draft[name] = Step(
                planned, Action.RESTORE, restore_run=source.run_id, token=source.token,
                reason=f"restored from run {source.run_id}",
            )  # fmt: skip
            tokens[name] = source.token
            continue
        if is_output(planned.spec):  # picks its part of its task's result: never looked up
            token = tokens[planned.spec.depends_on[0]]
            tokens[name] = None if token is None else output_token(token, name.rpartition(".")[2])
            draft[name] = Step(planned, Action.RUN, reason="an output of its task")
            continue
        if taken is not None and taken.token is not None:  # a fingerprinted dataset
            tokens[name] = taken.token
            reason = "a dataset: its fingerprint is part of the keys of the tasks using it"
            draft[name] = Step(planned, Action.RUN, reason=reason, inputs=taken)
            continue
        rule = planned.cache if cache is not None else None
        key = None
        if source is not None and source.cache_key is not None:
            key = source.cache_key
        elif rule is not None:
            key = rule.key or _derived_key(planned, rule, tokens, taken)
        if key is None or cache is None:
            tokens[name] = None
            reason = _uncached_reason(planned, rule, tokens, taken)
            draft[name] = Step(
                planned, Action.RUN, cache_checked=name in force, reason=reason, inputs=taken
            )
            continue
        if name in force:
            tokens[name] = None
            draft[name] = Step(planned, Action.RUN, key, True, reason="forced to run", inputs=taken)
            continue
        found = _lookup(cache, key)
        if found is not None and found.hit and found.header is not None:
            problem, saved = None, None
            if planned.output is not None:
                problem, saved = saved_output(cache, key, planned)
            if problem is None:
                tokens[name] = found.header.entry_id
                draft[name] = Step(
                    planned, Action.LOAD, key, token=found.header.entry_id, reason="cache hit",
                    saved=saved,
                )  # fmt: skip
                continue
            found = Lookup(key, False, problem)
        tokens[name] = None
        reason = "no entry" if found is None else found.reason
        if explain and found is not None and rule is not None and rule.key is None:
            reason = _miss_reason(cache, plan.pipeline, planned, rule, tokens, found.reason, taken)
        draft[name] = Step(planned, Action.RUN, key, found is not None, reason=reason, inputs=taken)

    needed = set(plan.sinks if targets is None else targets) | inputs.refresh
    steps: list[Step] = []
    for planned in reversed(plan.tasks):
        step = draft[planned.name]
        if planned.name in unselected and planned.name not in needed:
            step = dataclasses.replace(step, action=Action.UNSELECTED, reason="not selected")
        elif planned.name not in needed:
            step = dataclasses.replace(
                step, action=Action.PRUNE, reason="not needed: the tasks using it have results"
            )
        elif step.action is Action.RUN:
            needed.update(planned.spec.depends_on)
        steps.append(step)
    return tuple(reversed(steps))


def _derived_key(
    planned: PlannedTask,
    rule: CacheRule,
    tokens: Mapping[str, str | None],
    taken: TaskInputs | None,
) -> str | None:
    inputs = [tokens[dep] for dep in planned.spec.depends_on]
    if any(token is None for token in inputs) or (taken is not None and taken.problem):
        return None
    extra = taken.extra if taken is not None else ()
    return derive_key(planned.name, rule.code, inputs, extra)  # type: ignore[arg-type]


def _uncached_reason(
    planned: PlannedTask,
    rule: CacheRule | None,
    tokens: Mapping[str, str | None],
    taken: TaskInputs | None,
) -> str:
    if taken is not None and taken.problem:
        return f"not cached: {taken.problem}"
    if rule is None:
        return planned.uncached or "not cached"
    waiting = [dep for dep in planned.spec.depends_on if tokens[dep] is None]
    return (
        f"cache key known only after {', '.join(map(repr, waiting))} run"
        if waiting
        else "not cached"
    )


def _lookup(cache: Cache, key: str) -> Lookup | None:
    try:
        return cache.lookup(key)
    except Exception as exc:  # the cache is unreachable: run without it rather than fail
        logger.warning("cannot read the cache at %s (%s); running without it", cache, exc)
        return None


def _miss_reason(
    cache: Cache,
    pipeline: str,
    planned: PlannedTask,
    rule: CacheRule,
    tokens: Mapping[str, str | None],
    found: str,
    taken: TaskInputs | None = None,
) -> str:
    if found != "no entry":
        return found
    note = cache.last_entry_of(pipeline, planned.name)
    if note is None:
        return "no entry"
    if note.get("code") != rule.code:
        return "code changed"
    inputs = [tokens[dep] for dep in planned.spec.depends_on]
    changed = changed_inputs(note, taken, planned.spec.depends_on, inputs)
    if changed is not None:
        return changed
    if note.get("inputs") != inputs:
        return "inputs changed"
    return "no entry (cleared)"


@dataclass(frozen=True)
class CacheExplanation:
    """Whether the next run would take a task from the cache, and why not."""

    task: str
    status: str
    """``hit``, ``miss``, ``not cached``, or ``unknown`` (its key needs the results of
    upstream tasks that will run first)."""
    reason: str
    key: str | None = None
    runs: bool = True
    """Whether the next run would run the task (False for hits, and for tasks no one needs
    because every task using their result is a hit)."""

    def __str__(self) -> str:
        action = "runs" if self.runs else "does not run"
        return f"{self.task}: {self.status} ({self.reason}); {action}"


def explain(
    plan: Plan, cache: Cache | None, inputs: RunInputs | None = None
) -> dict[str, CacheExplanation]:
    """What the cache would do for each task of a run of ``plan`` now (with ``inputs``'
    parameter values: default, the functions' and the pipeline's)."""
    every = [planned.name for planned in plan.tasks]
    would_run = {
        step.name: step.action is Action.RUN
        for step in prepare_run(plan, cache=cache, inputs=inputs)
    }
    out: dict[str, CacheExplanation] = {}
    for step in prepare_run(plan, cache=cache, explain=True, targets=every, inputs=inputs):
        if step.action is Action.LOAD:
            status = "hit"
        elif step.task.cache is None or cache is None or step.reason.startswith("not cached"):
            status = "not cached"
        elif step.cache_key is None:
            status = "unknown"
        else:
            status = "miss"
        reason = step.reason
        if not would_run[step.name] and step.action is not Action.LOAD:
            reason += "; not needed: every task using its result is a hit"
        out[step.name] = CacheExplanation(
            step.name, status, reason, step.cache_key, would_run[step.name]
        )
    return out

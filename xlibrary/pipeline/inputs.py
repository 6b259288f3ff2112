"""Plan: what the tasks of one run read besides upstream results, and what that adds to
their cache keys.

A task's inputs are its upstream results, its parameters and, for a source task, its dataset
(see DESIGN.md, "What a run knows about its data"). :func:`bind_run` resolves a run's
parameter values, checked before any task runs, into a :class:`RunInputs`; for each task,
:meth:`RunInputs.of_task` gives a :class:`TaskInputs`:

* the keyword values the task is called with;
* the **extra parts of its derived cache key**: each parameter value's token, the identity
  and the fingerprint of the dataset a source task loads, the identity of the task's output;
* the **note** kept beside its cache entry, for ``explain_cache``: the values shown, and the
  fingerprints of the datasets it reads, so a miss can say ``test_size: 0.2 → 0.3`` or which
  file changed (:func:`changed_inputs`).

Fingerprints are taken on the client, once per run (memoized in the :class:`RunInputs`), when
the run's steps are decided. A source task whose fingerprint is known needs no cache entry:
its output token is the fingerprint, known before it runs, so the tasks using it are looked
up before the run and, when they hit, the file is not even read.

:class:`InputGuard` (``debug_mode``) warns when a task changes a value it was given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dask.base import tokenize

from .datasets import Dataset, Fingerprint, describe_change
from .errors import ConfigError, DatasetError, did_you_mean
from .params import TaskParams, bind, check_params, param_token, shown
from .sources import output_problem
from .spec import Task
from .store import Cache

__all__ = [
    "INVISIBLE",
    "InputGuard",
    "RunInputs",
    "TaskInputs",
    "bind_run",
    "changed_inputs",
    "invisible",
    "saved_output",
]

logger = logging.getLogger("xlibrary.pipeline")


class PlannedTask(Protocol):
    """What this module reads of a :class:`~.plan.PlannedTask`."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> Task: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def source(self) -> Dataset | None: ...
    @property
    def output(self) -> Dataset | None: ...
    @property
    def cache(self) -> object:
        """Its cache rule, if it has one."""


class Plan(Protocol):
    """What this module reads of a :class:`~.plan.Plan`."""

    @property
    def pipeline(self) -> str: ...
    @property
    def tasks(self) -> Sequence[PlannedTask]: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def fingerprinted(self) -> frozenset[str]: ...
    @property
    def has_params(self) -> bool: ...
    @property
    def by_name(self) -> Mapping[str, PlannedTask]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskInputs:
    """What one task reads in one run besides upstream results (see the module docstring)."""

    params: Mapping[str, Any] = field(default_factory=dict)
    """The keyword values the task is called with."""
    extra: tuple[str, ...] = ()
    """Parts of its derived cache key beyond its code and upstream tokens."""
    note: Mapping[str, Any] | None = None
    """Kept beside its cache entry: ``params`` (name → [token, shown]), ``datasets``
    (task → fingerprint)."""
    token: str | None = None
    """A source task's output token, known before it runs (its dataset's fingerprint)."""
    problem: str | None = None
    """Why no cache key can be derived for it (a value that cannot be hashed, a dataset that
    cannot be fingerprinted)."""


@dataclass(frozen=True, kw_only=True)
class RunInputs:
    """The parameter values of one run, what it refreshes, and its dataset fingerprints."""

    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Task → the keyword values it is called with."""
    values: Mapping[str, Any] = field(default_factory=dict)
    """Every parameter value the run uses, by name: what its record shows."""
    refresh: frozenset[str] = frozenset()
    """Tasks that run and rewrite their cache entries even when cached."""
    guard: bool = False
    """Warn when a task changes a value it was given (``debug_mode``)."""
    _fingerprints: dict[str, Fingerprint | str] = field(
        default_factory=dict, repr=False, compare=False
    )

    def fingerprint(self, name: str, dataset: Dataset) -> Fingerprint | str:
        """The fingerprint of source task ``name``'s dataset, taken once per run; or why it
        cannot be taken."""
        found = self._fingerprints.get(name)
        if found is None:
            try:
                found = dataset.fingerprint()
            except DatasetError as exc:
                found = f"cannot fingerprint its dataset: {exc}"
            except Exception as exc:  # the file system is unreachable: no key, the task runs
                found = f"cannot fingerprint its dataset: {type(exc).__name__}: {exc}"
            self._fingerprints[name] = found
        return found

    def of_task(self, plan: Plan, planned: PlannedTask, *, keyed: bool) -> TaskInputs | None:
        """What ``planned`` reads in this run; with ``keyed``, also its key parts and note."""
        values = self.params.get(planned.name, {})
        reads = values or planned.source is not None or planned.output is not None
        if not keyed or not (reads or _reads_datasets(plan, planned)):
            return TaskInputs(params=values) if values else None
        extra: list[str] = []
        problem = None
        shown_params: dict[str, list[str]] = {}
        for name in sorted(values):
            token = param_token(values[name])
            if token is None:
                problem = (
                    f"parameter {name!r} ({type(values[name]).__name__}) cannot be hashed "
                    "deterministically"
                )
            extra.append(f"param {name}={token}")
            shown_params[name] = [str(token), shown(values[name])]
        datasets: dict[str, Any] = {}
        for dep in planned.spec.depends_on:
            if dep in plan.fingerprinted:
                found = self.fingerprint(dep, plan.by_name[dep].source)  # type: ignore[arg-type]
                if isinstance(found, Fingerprint):
                    datasets[dep] = found.to_dict()
        token = None
        source = planned.source
        fingerprinted = planned.name in plan.fingerprinted
        if source is not None and (fingerprinted or planned.cache is not None):
            found = self.fingerprint(planned.name, source)
            if isinstance(found, str):
                problem = found
            elif fingerprinted:
                token = str(tokenize("xlibrary.dataset", source.token, found.token))
                datasets[planned.name] = found.to_dict()
            else:  # cached by value: its fingerprint is part of its key
                extra.append(f"dataset {source.token} {found.token}")
                datasets[planned.name] = found.to_dict()
        if planned.output is not None:
            extra.append(f"output {planned.output.token}")
        note = {k: v for k, v in (("params", shown_params), ("datasets", datasets)) if v}
        return TaskInputs(
            params=values, extra=tuple(extra), note=note or None, token=token, problem=problem
        )


INVISIBLE = "reads nothing the engine can see; declare a dataset or give a key"
"""Why a task with no upstream results, no parameters and no dataset is not cached: whatever
it reads (a file, a database, the clock), a derived key could not change when that does."""


def invisible(spec: Task, params: Mapping[str, Any], source: Dataset | None, policy: Any) -> bool:
    """Whether caching ``spec`` would not see what it reads (see ``INVISIBLE``): no upstream
    results, no parameters, no dataset, and no explicit key or TTL (``policy``)."""
    explicit = policy is not None and (policy.key is not None or policy.ttl is not None)
    return not (spec.depends_on or params or source is not None or explicit)


def saved_output(
    cache: Cache, key: str, planned: PlannedTask
) -> tuple[str | None, Mapping[str, Any] | None]:
    """Where the output a hit of ``planned`` points at lies, or why it cannot stand for the
    task's result now."""
    assert planned.output is not None
    try:
        found = cache.load(key, task=planned.name)
    except Exception as exc:  # the cache is unreachable: a miss, the task runs
        return f"cannot read its cache entry ({exc})", None
    if found is None:
        return "no entry", None
    return output_problem(planned.output, found[1]), found[1]


def _reads_datasets(plan: Plan, planned: PlannedTask) -> bool:
    return any(dep in plan.fingerprinted for dep in planned.spec.depends_on)


def bind_run(
    plan: Plan,
    params: Mapping[str, Any] | None = None,
    *,
    refresh: bool | str | Collection[str] | None = None,
    guard: bool = False,
) -> RunInputs:
    """The inputs of one run of ``plan``: the parameter values (the function defaults, the
    pipeline's ``params``, then ``params``), checked, and the tasks to ``refresh`` (``True``:
    every one). Raises ConfigError before any task runs."""
    given = check_params(params, f"the run of pipeline {plan.pipeline!r}")
    if plan.has_params or given or plan.params:
        tasks = [
            TaskParams(task=p.name, declared=p.params, namespace=getattr(p.spec, "namespace", None))
            for p in plan.tasks
            if p.params
        ]
        bound = bind(tasks, plan.params, given, pipeline=plan.pipeline)
        found, values = bound.tasks, bound.values
    else:
        found, values = {}, {}
    return RunInputs(params=found, values=values, refresh=_refreshed(plan, refresh), guard=guard)


def _refreshed(plan: Plan, refresh: bool | str | Collection[str] | None) -> frozenset[str]:
    if refresh is None or refresh is False:
        return frozenset()
    names = [p.name for p in plan.tasks]
    if refresh is True:
        return frozenset(names)
    wanted = [refresh] if isinstance(refresh, str) else list(refresh)
    for name in wanted:
        if name not in names:
            raise ConfigError(
                f"refresh names {name!r}, which is not a task of pipeline {plan.pipeline!r}"
                f"{did_you_mean(str(name), names)}; refresh=True refreshes every task"
            )
    return frozenset(wanted)


def changed_inputs(
    old: Mapping[str, Any], new: TaskInputs | None, deps: Collection[str], tokens: list[Any]
) -> str | None:
    """Why a task's key changed, from the note of its last entry (``old``) and what it reads
    now: the parameters that changed (``test_size: 0.2 → 0.3``), the files that changed in
    the datasets it reads; ``None`` when neither says."""
    now = (new.note if new is not None else None) or {}
    parts = []
    before, after = old.get("params") or {}, now.get("params") or {}
    for name in sorted(before.keys() | after.keys()):
        was, becomes = before.get(name), after.get(name)
        if was is None or becomes is None or was[0] != becomes[0]:
            parts.append(
                f"parameter {name}: {was[1] if was else '(none)'} → "
                f"{becomes[1] if becomes else '(none)'}"
            )
    before, after = old.get("datasets") or {}, now.get("datasets") or {}
    for name in sorted(before.keys() & after.keys()):
        change = describe_change(Fingerprint.from_dict(before[name]), _fp(after[name]))
        if change:
            parts.append(f"dataset {name!r}: {change}")
    changed_deps = [
        dep
        for dep, was, token in zip(deps, old.get("inputs") or [], tokens, strict=False)
        if was != token and dep not in after
    ]
    if changed_deps and not parts:
        parts.append(f"the results of {', '.join(map(repr, changed_deps))} changed")
    return "; ".join(parts) or None


def _fp(data: Mapping[str, Any]) -> Fingerprint:
    return Fingerprint.from_dict(data)


class InputGuard:
    """Calls a task's function and warns, naming the task, when it changed a value it was
    given (``debug_mode``): results are passed by reference, so the other tasks using that
    value, and ``result.results``, would see the change."""

    __slots__ = ("deps", "func", "task")

    def __init__(self, task: str, func: Callable[..., Any], deps: tuple[str, ...]) -> None:
        self.task = task
        self.func = func
        self.deps = deps

    def __reduce__(self) -> tuple[Any, ...]:
        return (InputGuard, (self.task, self.func, self.deps))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        before = [_token(arg) for arg in args]
        value = self.func(*args, **kwargs)
        for dep, token, arg in zip(self.deps, before, args, strict=False):
            if token is not None and _token(arg) != token:
                logger.warning(
                    "task %r changed its input, the result of %r: results are passed by "
                    "reference, so the other tasks using it and result.results see the "
                    "change; copy it before changing it (df = df.copy())",
                    self.task,
                    dep,
                )
        return value


def _token(value: Any) -> str | None:
    try:
        return str(tokenize(value, ensure_deterministic=True))
    except Exception:  # cannot be hashed: cannot be watched
        return None

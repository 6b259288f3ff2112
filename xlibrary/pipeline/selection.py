"""Selecting what a run runs: ``targets``, ``from_tasks`` and ``tags``.

``pm.execute_pipeline(p, targets=..., from_tasks=..., tags=...)`` runs part of a pipeline.
The selected tasks are those that every given option selects:

* ``targets``: the targets and every task they need (Hamilton's final variables, Kedro's
  ``--to-nodes``); the run's final result is theirs;
* ``from_tasks``: those tasks and every task downstream of them (Kedro's ``--from-nodes``);
  they run even when cached, as a retry does;
* ``tags``: the tasks declared with at least one of the tags (Kedro's ``--tags``).

Output tasks (``"split.X_train"``) are selected with the tasks that use them. The run's final
tasks are the targets, else the selected tasks that no selected task depends on. Every other
task is ``not selected`` in the result, the status and pictures.

A dependency of a selected task that is not selected is an *input*. Its result comes from
the first source that has it, and its record says which (``source``: ``run:<run id>``,
``cache:<key>`` or ``dataset:<url>``; the log says it too):

1. the latest run of the pipeline (of its last :data:`LOOK_BACK`) that finished the task and
   saved its result (``save_intermediate_results``), or the cache entry that run took it from;
2. a declared dataset (:func:`dataset_source`): a dataset's source task reads its file (the
   file is the truth: never an older copy), and a task whose ``save_to`` output exists is read
   from there (its latest version);
3. the cache, by the task's own cache rule (an explicit key, or a key derived from its code
   and inputs when those are known before the run).

An input that no source has fails the selection before any task runs, with a
:class:`~.errors.SelectionError` naming it and the fix; so does a name that is no task (with
a "did you mean"), a tag no task has, and a selection of no task.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .compose import is_output
from .errors import SelectionError, did_you_mean
from .plan import Action, Plan, PlannedTask, Restore, prepare_run
from .recovery import recent_results
from .store import Cache, RunStore

__all__ = ["LOOK_BACK", "Selection", "dataset_source", "select"]

logger = logging.getLogger("xlibrary.pipeline")

LOOK_BACK = 20
"""Recorded runs of a pipeline searched, newest first, for the results of a selection's
inputs."""


@dataclass(frozen=True, kw_only=True)
class Selection:
    """What a run of part of a pipeline runs, restores and leaves out."""

    plan: Plan
    """The pipeline's plan with the selection's final tasks as its sinks."""
    unselected: frozenset[str]
    """Tasks the run leaves out (``not selected``)."""
    inputs: Mapping[str, str]
    """Each input (a task not selected whose result a selected task needs) and, in words,
    where its result comes from."""
    restore: Mapping[str, Restore]
    force: frozenset[str]
    targets: frozenset[str]
    """The final tasks: what the run must produce."""


def select(
    plan: Plan,
    *,
    targets: Iterable[str] | str | None = None,
    from_tasks: Iterable[str] | str | None = None,
    tags: Iterable[str] | str | None = None,
    runs: RunStore | None = None,
    cache: Cache | None = None,
) -> Selection | None:
    """The selection of a run of ``plan``, or ``None`` when no option narrows it."""
    wanted = _names(plan, "targets", targets)
    starts = _names(plan, "from_tasks", from_tasks)
    tagged = _tags(plan, tags)
    if wanted is None and starts is None and tagged is None:
        return None
    asked = _asked(wanted, starts, tagged)
    names = [planned.name for planned in plan.tasks]
    selected = set(names)
    if starts is not None:
        selected &= _downstream(plan, starts)
    if wanted is not None:
        selected &= _upstream(plan, wanted)
    if tagged is not None:
        selected &= {p.name for p in plan.tasks if p.spec.tags & tagged}
    if not selected:
        raise SelectionError(
            f"{asked} select no task of pipeline {plan.pipeline!r} (a task must be downstream "
            "of from_tasks, needed by targets and hold one of the tags); widen the selection"
        )
    by_name = {planned.name: planned for planned in plan.tasks}
    for planned in reversed(plan.tasks):  # an output task goes with the tasks that use it
        if planned.name in selected:
            selected.update(d for d in planned.spec.depends_on if is_output(by_name[d].spec))
    left_out = [name for name in wanted or () if name not in selected]
    if left_out:
        raise SelectionError(
            f"{asked} of pipeline {plan.pipeline!r}: the targets {left_out} are not among the "
            "tasks selected by the other options; drop them, or widen from_tasks or tags"
        )
    finals = wanted or _sinks(plan, selected)
    inputs = list(
        dict.fromkeys(
            dep
            for planned in plan.tasks
            if planned.name in selected
            for dep in planned.spec.depends_on
            if dep not in selected
        )
    )
    restore = dict(recent_results(runs, plan.pipeline, inputs, look_back=LOOK_BACK)) if (
        inputs and runs is not None
    ) else {}  # fmt: skip
    for name in inputs:
        if name not in restore:
            found = dataset_source(by_name[name])
            if found is not None:
                restore[name] = found
    force = frozenset(
        name for name in _downstream(plan, starts) if name in selected
    ) if starts is not None else frozenset()  # fmt: skip
    unselected = frozenset(names) - selected - set(inputs)
    narrowed = dataclasses.replace(plan, sinks=tuple(finals))
    steps = prepare_run(
        narrowed, cache=cache, restore=restore, force=force, targets=finals,
        unselected=unselected,
    )  # fmt: skip
    sources = _sources(steps, set(inputs))
    missing = [name for name in inputs if name not in sources]
    if missing:
        raise SelectionError(_missing_message(plan, asked, missing, runs is not None))
    if sources:
        logger.info(
            "pipeline %r, %s: inputs %s",
            plan.pipeline,
            asked,
            ", ".join(f"{name!r} from {where}" for name, where in sources.items()),
        )
    return Selection(
        plan=narrowed,
        unselected=unselected,
        inputs=sources,
        restore=restore,
        force=force,
        targets=frozenset(finals),
    )


def dataset_source(task: PlannedTask) -> Restore | None:
    """Where a declared dataset holds the result of ``task``, the third source of an input:
    a dataset's own source task (``pipeline.dataset``), or a task whose ``save_to`` output
    exists (a versioned one: its latest version)."""
    if task.source is not None:
        return Restore(dataset=task.source)
    output = task.output
    if output is not None and output.exists():
        return Restore(dataset=output)
    return None


def _names(plan: Plan, option: str, given: Iterable[str] | str | None) -> list[str] | None:
    if given is None:
        return None
    values: Any = [given] if isinstance(given, str) else given
    if not isinstance(values, Iterable) or isinstance(values, Mapping):
        raise SelectionError(f"{option} must be a list of task names, got {given!r}")
    out = list(dict.fromkeys(values))
    if not out:
        return None
    known = [planned.name for planned in plan.tasks]
    for name in out:
        if not isinstance(name, str) or name not in known:
            raise SelectionError(
                f"{option}: pipeline {plan.pipeline!r} has no task {name!r}"
                f"{did_you_mean(str(name), known)} (tasks: {', '.join(known)})"
            )
    return out


def _tags(plan: Plan, given: Iterable[str] | str | None) -> frozenset[str] | None:
    if given is None:
        return None
    values: Any = [given] if isinstance(given, str) else given
    if not isinstance(values, Iterable) or isinstance(values, Mapping):
        raise SelectionError(f"tags must be a list of tags, got {given!r}")
    out = frozenset(values)
    if not out:
        return None
    known = sorted({tag for planned in plan.tasks for tag in planned.spec.tags})
    for tag in sorted(out, key=str):
        if tag not in known:
            raise SelectionError(
                f"tags: no task of pipeline {plan.pipeline!r} has the tag {tag!r}"
                f"{did_you_mean(str(tag), known)} (tags: {', '.join(known) or 'none'}); "
                'declare it with @pipeline.task(..., tags=["..."])'
            )
    return out


def _asked(
    wanted: list[str] | None, starts: list[str] | None, tagged: frozenset[str] | None
) -> str:
    """The selection in words, for messages: ``targets ['a'] and tags ['x']``."""
    parts = [
        f"{option} {value}"
        for option, value in (
            ("targets", wanted),
            ("from_tasks", starts),
            ("tags", sorted(tagged) if tagged is not None else None),
        )
        if value is not None
    ]
    return " and ".join(parts)


def _downstream(plan: Plan, names: Collection[str]) -> set[str]:
    out = set(names)
    for planned in plan.tasks:  # topological: one pass sees every descendant
        if any(dep in out for dep in planned.spec.depends_on):
            out.add(planned.name)
    return out


def _upstream(plan: Plan, names: Collection[str]) -> set[str]:
    out = set(names)
    for planned in reversed(plan.tasks):
        if planned.name in out:
            out.update(planned.spec.depends_on)
    return out


def _sinks(plan: Plan, selected: set[str]) -> list[str]:
    used = {dep for p in plan.tasks if p.name in selected for dep in p.spec.depends_on}
    return [p.name for p in plan.tasks if p.name in selected and p.name not in used]


def _sources(steps: tuple[Any, ...], inputs: set[str]) -> dict[str, str]:
    """Where each input's result comes from, in words (inputs that have a source)."""
    out: dict[str, str] = {}
    for step in steps:
        if step.name not in inputs:
            continue
        if step.action is Action.RESTORE and step.restore_dataset is not None:
            out[step.name] = step.reason.removeprefix("read from ")
        elif step.action is Action.RESTORE:
            out[step.name] = f"run {step.restore_run}"
        elif step.action is Action.LOAD:
            out[step.name] = "the cache"
        elif step.action is Action.PRUNE:  # every task using it is a cache hit
            out[step.name] = "not needed"
    return out


def _missing_message(plan: Plan, asked: str, missing: list[str], recorded: bool) -> str:
    shown = ", ".join(map(repr, missing))
    runs = (
        f"none of the last {LOOK_BACK} runs of {plan.pipeline!r} finished "
        f"{'it' if len(missing) == 1 else 'them'} and saved the result"
        if recorded
        else "no run store to look in"
    )
    return (
        f"cannot run {asked} of pipeline {plan.pipeline!r}: the selected tasks need the "
        f"result of {shown}, which no source has ({runs}, and the cache has no entry for "
        f"{'it' if len(missing) == 1 else 'them'}); run the whole pipeline once with "
        "save_intermediate_results: True (or cache those tasks), or select them too"
    )

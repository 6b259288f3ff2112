"""Debugging and recovery from the store: error details, saved results, retry and resume.

Everything here reads run records and saved results, so it works from a new process with a
new ``PipelineManager`` on the same store: the store is the state.

* :func:`error_details`: the failed task, its message and stack trace, and the run id, from an
  exception, a result, a run id or a pipeline name (its latest run).
* :func:`intermediate_results`: the results a run saved, by task name.
* :func:`retry_plan` / :func:`resume_plan`: what a retry of one failed task, or a resume of a
  whole failed run, restores and what it runs. A retry runs the task and every task
  downstream of it; a resume runs every task that did not finish. Tasks that finished are
  restored from their saved results (or their cache entries), never run again; when a result
  they need was not saved, the error says so and how to fix it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .compose import is_output
from .errors import BadEntry, PipelineError, PipelineExecutionError, did_you_mean
from .plan import Plan, Restore
from .records import RunRecord
from .redact import redact_url
from .result import PipelineResult
from .store import Cache, RunStore
from .store.names import is_run_id
from .stored import opened

__all__ = [
    "ErrorDetails",
    "RecoveryPlan",
    "error_details",
    "intermediate_results",
    "recent_results",
    "resume_plan",
    "retry_plan",
]


@dataclass(frozen=True, kw_only=True)
class ErrorDetails:
    """Why a run failed."""

    pipeline: str
    run_id: str
    failed_task: str
    error_message: str
    stack_trace: str
    """The failed task's traceback, starting at its own frames."""
    summary: str = ""


def error_details(runs: RunStore, source: object) -> ErrorDetails:
    """Details of a failure, from a PipelineExecutionError, a PipelineResult, a run id or a
    pipeline name (its latest run)."""
    if isinstance(source, PipelineResult):
        if source.error is None:
            raise PipelineError(f"run {source.run_id} of {source.pipeline!r} did not fail")
        source = source.error
    if isinstance(source, PipelineExecutionError):
        return ErrorDetails(
            pipeline=source.pipeline,
            run_id=source.run_id,
            failed_task=source.failed_task,
            error_message=source.error_message,
            stack_trace=source.stack_trace,
            summary=str(source),
        )
    if not isinstance(source, str):
        raise PipelineError(
            "get_error_details takes a PipelineExecutionError, a PipelineResult, a run id or a "
            f"pipeline name, got {type(source).__name__}"
        )
    record = runs.find_record(source) or runs.read_record(source)
    if record is None:
        raise PipelineError(
            f"no run or pipeline {source!r} is recorded in the store {redact_url(runs.url)}"
        )
    error = record.error
    if error is None or error.failed_task is None:
        raise PipelineError(
            f"run {record.run_id} of pipeline {record.pipeline!r} did not fail "
            f"(status {record.status})"
        )
    return ErrorDetails(
        pipeline=record.pipeline,
        run_id=record.run_id,
        failed_task=error.failed_task,
        error_message=error.message,
        stack_trace=error.stack_trace,
        summary=error.summary,
    )


def _record(runs: RunStore, pipeline: str, run_id: str | None) -> RunRecord:
    record = runs.read_record(pipeline, run_id)
    if record is None:
        which = f"run {run_id}" if run_id else "run"
        raise PipelineError(
            f"no recorded {which} of pipeline {pipeline!r} in the store {redact_url(runs.url)}; "
            "run it first (with the same store, and save_intermediate_results for its results)"
        )
    return record


def _chain(runs: RunStore, record: RunRecord) -> list[RunRecord]:
    """The record and the records it was resumed from, newest first."""
    chain = [record]
    seen = {record.run_id}
    while (parent := chain[-1].resumed_from) and parent not in seen:
        if not is_run_id(parent):  # a damaged record: look no further back
            break
        older = runs.read_record(record.pipeline, parent)
        if older is None:
            break
        seen.add(parent)
        chain.append(older)
    return chain


def _locations(runs: RunStore, record: RunRecord) -> dict[str, Restore]:
    """Where each finished task's result lies, looking back through resumed runs."""
    found: dict[str, Restore] = {}
    for rec in _chain(runs, record):
        for name, task in rec.tasks.items():
            if name in found or not task.done:
                continue
            source = task.source or ""
            token = task.token
            if task.saved and is_run_id(rec.run_id):
                found[name] = Restore(run_id=rec.run_id, token=token)
            elif source.startswith("run:") and is_run_id(source[4:]):
                found[name] = Restore(run_id=source[4:], token=token)
            elif source.startswith("cache:"):
                found[name] = Restore(cache_key=source[6:], token=token)
    return found


def recent_results(
    runs: RunStore, pipeline: str, tasks: Collection[str], *, look_back: int = 20
) -> dict[str, Restore]:
    """Where the latest of the last ``look_back`` runs of ``pipeline`` that finished each of
    ``tasks`` left its result (saved, or in the cache), for the tasks that have one."""
    found: dict[str, Restore] = {}
    for record in reversed(runs.recent_records(pipeline, look_back)):  # newest first
        if all(name in found for name in tasks):
            break
        for name, where in _locations(runs, record).items():
            if name in tasks:
                found.setdefault(name, where)
    return found


def intermediate_results(
    runs: RunStore,
    cache: Cache | None,
    pipeline: str,
    run_id: str | None = None,
    tasks: Collection[str] | None = None,
) -> dict[str, Any]:
    """The results of the latest run (or ``run_id``) of ``pipeline``, by task name (only
    ``tasks``' when given).

    A run that retried or resumed an earlier one includes the results it took from it.
    """
    record = _record(runs, pipeline, run_id)
    out: dict[str, Any] = {}
    for name, where in _locations(runs, record).items():
        if tasks is not None and name not in tasks:
            continue
        try:
            if where.run_id is not None:  # a Dask collection: read lazily (lazy.opened)
                out[name] = opened(runs.load_result(pipeline, where.run_id, name))
            elif cache is not None and where.cache_key is not None:
                found = cache.load(where.cache_key, task=name)
                if found is not None:
                    out[name] = opened(found[1])
        except BadEntry:
            continue  # a missing or damaged result is left out, as its warning says
    return out


@dataclass(frozen=True, kw_only=True)
class RecoveryPlan:
    """What a retry or resume restores, forces to run, and must produce."""

    run_id: str
    restore: Mapping[str, Restore]
    force: frozenset[str]
    targets: frozenset[str] | None


def _downstream(plan: Plan, names: set[str]) -> set[str]:
    out = set(names)
    for planned in plan.tasks:  # topological: one pass sees every descendant
        if any(dep in out for dep in planned.spec.depends_on):
            out.add(planned.name)
    return out


def retry_plan(runs: RunStore, plan: Plan, task: str, run_id: str | None = None) -> RecoveryPlan:
    """Retry ``task`` of the latest (or ``run_id``) run, then what is downstream of it."""
    record = _record(runs, plan.pipeline, run_id)
    names = [planned.name for planned in plan.tasks]
    if task not in names:
        raise PipelineError(
            f"pipeline {plan.pipeline!r} has no task {task!r}{did_you_mean(task, names)}"
        )
    force = _downstream(plan, {task})
    return _recovery(runs, plan, record, force, targets=frozenset(force))


def resume_plan(runs: RunStore, plan: Plan, run_id: str | None = None) -> RecoveryPlan:
    """Continue the latest (or ``run_id``) run: run every task that did not finish."""
    record = _record(runs, plan.pipeline, run_id)
    tasks = record.tasks
    unfinished = {
        planned.name
        for planned in plan.tasks
        if planned.name not in tasks or not tasks[planned.name].done
    }
    if record.success and not unfinished:
        raise PipelineError(
            f"run {record.run_id} of pipeline {plan.pipeline!r} succeeded: nothing to resume"
        )
    return _recovery(runs, plan, record, _downstream(plan, unfinished), targets=None)


def _recovery(
    runs: RunStore,
    plan: Plan,
    record: RunRecord,
    force: set[str],
    targets: frozenset[str] | None,
) -> RecoveryPlan:
    where = _locations(runs, record)
    restore = {name: place for name, place in where.items() if name not in force}
    by_name = {planned.name: planned for planned in plan.tasks}
    needed = set(force)
    for planned in reversed(plan.tasks):
        if planned.name not in needed or planned.name in restore:
            continue
        for dep in planned.spec.depends_on:
            if dep in restore or dep in force:
                needed.add(dep)
                continue
            if is_output(by_name[dep].spec):  # picked again from its task's result
                needed.add(dep)
                force.add(dep)
                continue
            task = record.tasks.get(dep)
            hint = (
                "its result was not saved: run with save_intermediate_results: True (or cache "
                "the task) so that a retry can start from it"
                if task is not None and task.done
                else f"it did not finish in that run "
                f"({task.status if task else 'not recorded'}): retry or resume it first"
            )
            raise PipelineError(
                f"cannot run {planned.name!r} of pipeline {plan.pipeline!r} from run "
                f"{record.run_id}: it needs the result of {by_name[dep].name!r}, and {hint}"
            )
    return RecoveryPlan(
        run_id=record.run_id, restore=restore, force=frozenset(force), targets=targets
    )

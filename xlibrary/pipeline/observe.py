"""Observe: turn the outcomes of a run into a :class:`PipelineResult` and a run record.

Guarantees: every task of the plan appears in the result, in topological order, as
succeeded, cached, failed or skipped; a task whose upstream did not succeed is reported as
skipped with the failed task it goes back to, whatever the backend reported for it; a task
no one needed (its dependents came from the cache) is skipped with that reason; ``error``
belongs to the first failed task in topological order.

A run that stops before its end (cancelled, Ctrl-C, an error of the engine or the cluster)
still ends its record: the tasks that finished keep their states, the others are
``cancelled`` (``collect(..., stopped=...)``), and the record says ``cancelled`` or
``failed`` with the error that stopped it (``run_record(..., stopped_by=...)``).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Collection, Mapping
from typing import Any

from .errors import PipelineExecutionError
from .plan import Action, Plan, Step
from .result import PipelineResult, TaskRun, TaskStatus
from .runner import CACHED, FAILED, STALE, SUCCEEDED, Failure, Outcome

__all__ = ["collect", "log_result", "result_of_record", "run_record", "start_record"]

logger = logging.getLogger("xlibrary.pipeline")

_DONE = (TaskStatus.SUCCEEDED, TaskStatus.CACHED)
_STATUS = {status.value: status for status in TaskStatus}
# TaskRun fields a record keeps only where they say something: records of big pipelines stay small
_OPTIONAL_FIELDS = (
    "saved", "source", "token", "skipped_because", "reason", "metrics", "peak_memory", "worker",
)  # fmt: skip


def collect(
    plan: Plan,
    run_id: str,
    outcomes: Mapping[str, Outcome],
    steps: tuple[Step, ...],
    *,
    started: float,
    finished: float,
    fetched: Collection[str] | None = None,
    stopped: str | None = None,
) -> PipelineResult:
    """Assemble the result of run ``run_id`` of ``plan`` from each task's outcome; only the
    tasks in ``fetched`` (default: all) brought their values back. ``stopped`` (why, in
    words) marks a run that stopped early: a task without an outcome is cancelled."""
    tasks: dict[str, TaskRun] = {}
    results: dict[str, Any] = {}
    first_failure: tuple[str, Outcome] | None = None
    for step in steps:
        name = step.name
        outcome = outcomes.get(name)
        blocked = None
        if step.action is Action.RUN:
            for dep in step.task.spec.depends_on:
                if tasks[dep].status not in _DONE:
                    blocked = dep
                    break
        if blocked is not None:
            # A backend may report a task downstream of a failure as failed itself (Dask marks
            # dependents of a lost task erred); it never ran, so it is skipped.
            upstream = tasks[blocked]
            if upstream.status is TaskStatus.CANCELLED:  # the run stopped before it
                tasks[name] = TaskRun(name, TaskStatus.CANCELLED, reason=upstream.reason)
                continue
            root = upstream.skipped_because or upstream.name
            tasks[name] = TaskRun(
                name, TaskStatus.SKIPPED, skipped_because=root,
                reason=f"upstream task {root!r} failed",
            )  # fmt: skip
            continue
        if outcome is None:
            if stopped is not None and step.action is not Action.PRUNE:
                tasks[name] = TaskRun(name, TaskStatus.CANCELLED, reason=stopped)
            else:  # pruned: nothing needed it
                tasks[name] = TaskRun(name, TaskStatus.SKIPPED, reason=step.reason)
            continue
        if outcome.status == STALE:
            outcome = _stale_failure(name)
        if outcome.status in (SUCCEEDED, CACHED):
            if fetched is None or name in fetched:
                results[name] = outcome.value
            tasks[name] = TaskRun(  # positional: thousands of these per run
                name,
                _STATUS[outcome.status],
                outcome.attempts,
                outcome.started,
                outcome.finished,
                None,
                None,
                None,
                "cache hit" if outcome.source else None,
                outcome.source,
                outcome.saved,
                outcome.token,
                outcome.metrics,
                outcome.peak_memory,
                outcome.worker,
            )
        elif outcome.status == FAILED and outcome.failure is not None:
            failure = outcome.failure
            tasks[name] = TaskRun(
                name,
                TaskStatus.FAILED,
                outcome.attempts,
                outcome.started,
                outcome.finished,
                error=failure.exception,
                traceback=failure.traceback,
                metrics=outcome.metrics,
                peak_memory=outcome.peak_memory,
                worker=outcome.worker,
            )
            if first_failure is None:
                first_failure = (name, outcome)
        else:  # skipped by the wrapper: an upstream failed (in an earlier round, say)
            tasks[name] = TaskRun(
                name, TaskStatus.SKIPPED, skipped_because=outcome.cause,
                reason=f"upstream task {outcome.cause!r} failed",
            )  # fmt: skip

    error = None
    if first_failure is not None:
        error = _execution_error(plan, run_id, tasks, *first_failure)
    success = error is None and stopped is None  # a run that stopped early did not succeed
    final_result: Any = None
    if success:
        if len(plan.sinks) == 1:
            final_result = results.get(plan.sinks[0])
        else:
            final_result = {name: results[name] for name in plan.sinks if name in results}
    peaks = [run.peak_memory for run in tasks.values() if run.peak_memory]
    result = PipelineResult(
        pipeline=plan.pipeline,
        run_id=run_id,
        success=success,
        tasks=tasks,
        results=results,
        final_result=final_result,
        error=error,
        started=started,
        finished=finished,
        sinks=plan.sinks,
        peak_memory=max(peaks) if peaks else None,
    )
    return result


def _stale_failure(name: str) -> Outcome:
    from .store import BadEntry

    failure = Failure.from_exception(
        name, BadEntry(f"the stored result of task {name!r} was unusable twice in one run")
    )
    return Outcome(FAILED, failure=failure, attempts=0)


def _execution_error(
    plan: Plan, run_id: str, tasks: Mapping[str, TaskRun], name: str, outcome: Outcome
) -> PipelineExecutionError:
    failure = outcome.failure
    assert failure is not None
    attempts = f"{outcome.attempts} attempts" if outcome.attempts > 1 else "1 attempt"
    skipped = [run.name for run in tasks.values() if run.skipped_because]
    skipped_text = f"; skipped downstream: {', '.join(skipped)}" if skipped else ""
    error = PipelineExecutionError(
        f"task {name!r} of pipeline {plan.pipeline!r} failed after {attempts}: "
        f"{failure.type_name}: {failure.message}{skipped_text} (run {run_id})",
        pipeline=plan.pipeline,
        failed_task=name,
        error_message=failure.message,
        stack_trace=failure.traceback,
        run_id=run_id,
        exception=failure.exception,
    )
    error.__cause__ = failure.exception
    return error


def log_result(result: PipelineResult) -> None:
    """One log line for a finished run: INFO when it succeeded, WARNING when it failed."""
    if result.success:
        logger.info(
            "pipeline %r run %s succeeded in %.3fs (%d tasks)",
            result.pipeline,
            result.run_id,
            result.duration,
            len(result.tasks),
        )
    else:
        logger.warning("%s", result.error)


# -- run records ------------------------------------------------------------------------------
def start_record(
    plan: Plan, run_id: str, steps: tuple[Step, ...], started: float, resumed_from: str | None
) -> dict[str, Any]:
    """The record of a run that has just started: its tasks in order, none finished yet."""
    return {
        "run_id": run_id,
        "pipeline": plan.pipeline,
        "status": "running",
        "started": started,
        "finished": None,
        "duration": None,
        "resumed_from": resumed_from,
        "library_version": _version(),
        "sinks": list(plan.sinks),
        "order": [step.name for step in steps],
        "tasks": {},
    }


def run_record(
    result: PipelineResult,
    resumed_from: str | None,
    *,
    status: str | None = None,
    stopped_by: BaseException | None = None,
) -> dict[str, Any]:
    """The JSON record of a finished run; of one that stopped early, with its ``status``
    (``cancelled``, ``failed``) and the exception that stopped it."""
    tasks: dict[str, Any] = {}
    for name, run in result.tasks.items():
        entry: dict[str, Any] = {"status": str(run.status), "attempts": run.attempts}
        if run.started is not None:
            entry["started"], entry["finished"] = run.started, run.finished
        for field in _OPTIONAL_FIELDS:
            value = getattr(run, field)
            if value:
                entry[field] = value
        if run.status == TaskStatus.FAILED:
            entry["error"] = {
                "type": type(run.error).__name__ if run.error is not None else None,
                "message": str(run.error) if run.error is not None else None,
                "traceback": run.traceback,
            }
        tasks[name] = entry
    error = result.error
    if status is None:
        status = "succeeded" if result.success else "failed"
    about: dict[str, Any] | None = None
    if stopped_by is not None:
        about = _stop_error(result, stopped_by)
    elif error is not None:
        about = {
            "failed_task": error.failed_task,
            "message": error.error_message,
            "summary": str(error),
            "stack_trace": error.stack_trace,
        }
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "status": status,
        "started": result.started,
        "finished": result.finished,
        "duration": result.duration,
        "resumed_from": resumed_from,
        "library_version": _version(),
        "sinks": list(result.sinks),
        "peak_memory": result.peak_memory,
        "alerts": [alert.to_dict() for alert in result.alerts],
        "failed_task": result.failed_task,
        "error": about,
        "tasks": tasks,
    }


def _stop_error(result: PipelineResult, exc: BaseException) -> dict[str, Any]:
    """The record's ``error`` for a run that an exception stopped (not a task's failure)."""
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return {
        "failed_task": result.failed_task,
        "message": what,
        "summary": f"run {result.run_id} of pipeline {result.pipeline!r} stopped: {what}",
        "stack_trace": "".join(traceback.format_exception(exc)),
    }


def result_of_record(record: Mapping[str, Any]) -> PipelineResult:
    """How a recorded run went, as a :class:`PipelineResult` without values (results, final
    result, exceptions): what pictures and summaries of a run from another process need. A
    run still going has only its finished tasks."""
    tasks: dict[str, TaskRun] = {}
    entries: Mapping[str, Any] = record.get("tasks") or {}
    for name in dict.fromkeys([*record.get("order", ()), *entries]):
        entry = entries.get(name)
        if entry is None:
            continue
        error = entry.get("error") or {}
        tasks[name] = TaskRun(
            name,
            _STATUS.get(entry.get("status", ""), TaskStatus.SKIPPED),
            entry.get("attempts", 0),
            entry.get("started"),
            entry.get("finished"),
            None,
            error.get("traceback"),
            entry.get("skipped_because"),
            entry.get("reason"),
            entry.get("source"),
            bool(entry.get("saved")),
            entry.get("token"),
            entry.get("metrics"),
            entry.get("peak_memory"),
            entry.get("worker"),
        )
    started = record.get("started") or 0.0
    return PipelineResult(
        pipeline=record.get("pipeline", ""),
        run_id=record.get("run_id", ""),
        success=record.get("status") == "succeeded",
        tasks=tasks,
        results={},
        final_result=None,
        error=None,
        started=started,
        finished=record.get("finished") or started,
        sinks=tuple(record.get("sinks", ())),
        peak_memory=record.get("peak_memory"),
    )


def _version() -> str:
    from . import __version__

    return __version__

"""Observe: turn the outcomes of a run into a :class:`PipelineResult`, and log it.

Guarantees: every task of the plan appears in the result, in topological order, as succeeded,
failed or skipped; a task whose upstream did not succeed is reported as skipped with the failed
task it goes back to, whatever the backend reported for it; ``error`` belongs to the first
failed task in topological order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .errors import PipelineExecutionError
from .lower import FAILED, SKIPPED, SUCCEEDED, Outcome
from .plan import Plan
from .result import PipelineResult, TaskRun, TaskStatus

__all__ = ["collect"]

logger = logging.getLogger("xlibrary.pipeline")


def collect(
    plan: Plan,
    run_id: str,
    outcomes: Mapping[str, Outcome],
    *,
    started: float,
    finished: float,
) -> PipelineResult:
    """Assemble the result of run ``run_id`` of ``plan`` from each task's outcome."""
    tasks: dict[str, TaskRun] = {}
    results: dict[str, Any] = {}
    first_failure: tuple[str, Outcome] | None = None
    for planned in plan.tasks:
        name = planned.name
        outcome = outcomes[name]
        blocked = None
        for dep in planned.spec.depends_on:
            if tasks[dep].status is not TaskStatus.SUCCEEDED:
                blocked = dep
                break
        if blocked is not None:
            # A backend may report a task downstream of a failure as failed itself (Dask marks
            # dependents of a lost task erred); it never ran, so it is skipped.
            upstream = tasks[blocked]
            cause = upstream.skipped_because or upstream.name
            tasks[name] = TaskRun(name, TaskStatus.SKIPPED, skipped_because=cause)
            continue
        if outcome.status == SUCCEEDED:
            results[name] = outcome.value
            tasks[name] = TaskRun(
                name, TaskStatus.SUCCEEDED, outcome.attempts, outcome.started, outcome.finished
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
            )
            if first_failure is None:
                first_failure = (name, outcome)
        else:  # pragma: no cover - the runner only skips when an upstream did not succeed
            assert outcome.status == SKIPPED
            tasks[name] = TaskRun(name, TaskStatus.SKIPPED, skipped_because=outcome.cause)

    error = None
    if first_failure is not None:
        error = _execution_error(plan, run_id, tasks, *first_failure)
    success = error is None
    final_result: Any = None
    if success:
        if len(plan.sinks) == 1:
            final_result = results[plan.sinks[0]]
        else:
            final_result = {name: results[name] for name in plan.sinks}
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
    )
    _log(result)
    return result


def _execution_error(
    plan: Plan, run_id: str, tasks: Mapping[str, TaskRun], name: str, outcome: Outcome
) -> PipelineExecutionError:
    failure = outcome.failure
    assert failure is not None
    attempts = f"{outcome.attempts} attempts" if outcome.attempts > 1 else "1 attempt"
    skipped = [run.name for run in tasks.values() if run.status == TaskStatus.SKIPPED]
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


def _log(result: PipelineResult) -> None:
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

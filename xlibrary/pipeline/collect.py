"""Collect: turn the outcomes of a run into its :class:`~.result.PipelineResult` and record.

Guarantees: every task of the plan appears in the result, in topological order, as
succeeded, cached, failed or skipped; a task whose upstream did not succeed is reported as
skipped with the failed task it goes back to, whatever the backend reported for it; a task
no one needed (its dependents came from the cache) is skipped with that reason; a task the
run's selection left out is ``not_selected``; ``error`` belongs to the first failed task in
topological order.

A run that stops before its end (cancelled, Ctrl-C, an error of the engine or the cluster)
still ends its record: the tasks that finished keep their states, the others are
``cancelled``, and the record says ``cancelled`` or ``failed`` with the error that stopped
it (:func:`collect`'s ``stopped_by``).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Collection, Mapping
from typing import Any

from .errors import BadEntry, PipelineExecutionError, RunCancelled
from .inputs import RunInputs
from .outcome import Failure, Outcome
from .plan import Action, Plan, Step
from .records import RunError, RunRecord, TaskRecord
from .redact import redact_urls_in
from .result import PipelineResult
from .states import DONE, STALE, RunState, TaskStatus

__all__ = ["collect", "log_result", "started_record"]

logger = logging.getLogger("xlibrary.pipeline")

_STATUS = {status.value: status for status in TaskStatus}


def started_record(
    plan: Plan,
    run_id: str,
    steps: tuple[Step, ...],
    started: float,
    resumed_from: str | None,
    inputs: RunInputs | None = None,
    backend: str | None = None,
) -> RunRecord:
    """The record of a run that has just started: its tasks in order, none finished yet."""
    return RunRecord(
        params=(inputs.values or None) if inputs is not None else None,
        run_id=run_id,
        pipeline=plan.pipeline,
        status=RunState.RUNNING,
        started=started,
        resumed_from=resumed_from,
        sinks=plan.sinks,
        order=tuple(step.name for step in steps),
        backend=backend,
    )


def collect(
    plan: Plan,
    run_id: str,
    outcomes: Mapping[str, Outcome],
    steps: tuple[Step, ...],
    *,
    started: float,
    finished: float,
    fetched: Collection[str] | None = None,
    resumed_from: str | None = None,
    stopped_by: BaseException | None = None,
    inputs: RunInputs | None = None,
    backend: str | None = None,
) -> PipelineResult:
    """Assemble the result of run ``run_id`` of ``plan`` from each task's outcome; only the
    tasks in ``fetched`` (default: all) brought their values back. ``stopped_by`` marks a run
    that an exception stopped early: a task without an outcome is cancelled, and the run is
    ``cancelled`` (a cancel, Ctrl-C) or ``failed`` with that exception as its error.
    ``inputs`` gives the parameter values the run and each task used; ``backend`` names
    where the run computed."""
    stopped = None
    if stopped_by is not None:
        stopped = "the run was cancelled" if _is_cancel(stopped_by) else (
            f"the run stopped: {type(stopped_by).__name__}"
        )  # fmt: skip
    tasks: dict[str, TaskRecord] = {}
    results: dict[str, Any] = {}
    first_failure: tuple[str, Outcome] | None = None
    for step in steps:
        name = step.name
        outcome = outcomes.get(name)
        blocked = None
        if step.action is Action.RUN:
            for dep in step.task.spec.depends_on:
                if tasks[dep].status not in DONE:
                    blocked = dep
                    break
        if blocked is not None:
            # A backend may report a task downstream of a failure as failed itself (Dask marks
            # dependents of a lost task erred); it never ran, so it is skipped.
            upstream = tasks[blocked]
            if upstream.status is TaskStatus.CANCELLED:  # the run stopped before it
                tasks[name] = TaskRecord(
                    name=name, status=TaskStatus.CANCELLED, reason=upstream.reason
                )
                continue
            root = upstream.skipped_because or upstream.name
            tasks[name] = TaskRecord(
                name=name, status=TaskStatus.SKIPPED, skipped_because=root,
                reason=f"upstream task {root!r} failed",
            )  # fmt: skip
            continue
        if outcome is None:
            if step.action is Action.UNSELECTED:  # the run's selection left it out
                left_out = TaskStatus.NOT_SELECTED
                tasks[name] = TaskRecord(name=name, status=left_out, reason=step.reason)
                continue
            if stopped is not None and step.action is not Action.PRUNE:
                tasks[name] = TaskRecord(name=name, status=TaskStatus.CANCELLED, reason=stopped)
            else:  # pruned: nothing needed it
                tasks[name] = TaskRecord(name=name, status=TaskStatus.SKIPPED, reason=step.reason)
            continue
        if outcome.status == STALE:
            outcome = _stale_failure(name)
        status = outcome.status
        if status in DONE:
            if fetched is None or name in fetched:
                results[name] = outcome.value
            tasks[name] = TaskRecord(
                name=name,
                status=_STATUS[status],
                attempts=outcome.attempts,
                started=outcome.started,
                finished=outcome.finished,
                reason="cache hit" if outcome.source else None,
                source=outcome.source,
                saved=outcome.saved,
                token=outcome.token,
                metrics=outcome.metrics,
                peak_memory=outcome.peak_memory,
                worker=outcome.worker,
                params=_params_of(inputs, name),
                elements=outcome.elements,
            )
            _warn_skipped(name, outcome.elements, outcome.skipped)
        elif status == TaskStatus.FAILED and outcome.failure is not None:
            failure = outcome.failure
            tasks[name] = TaskRecord(
                name=name,
                status=TaskStatus.FAILED,
                attempts=outcome.attempts,
                started=outcome.started,
                finished=outcome.finished,
                error=failure.exception,
                error_type=failure.type_name,
                error_message=failure.message,
                traceback=failure.traceback,
                metrics=outcome.metrics,
                peak_memory=outcome.peak_memory,
                worker=outcome.worker,
                params=_params_of(inputs, name),
                elements=outcome.elements,
            )
            if first_failure is None:
                first_failure = (name, outcome)
        else:  # skipped by the wrapper: an upstream failed (in an earlier round, say)
            tasks[name] = TaskRecord(
                name=name, status=TaskStatus.SKIPPED, skipped_because=outcome.cause,
                reason=f"upstream task {outcome.cause!r} failed",
            )  # fmt: skip

    error = None
    if first_failure is not None:
        error = _execution_error(plan, run_id, tasks, *first_failure)
    if stopped_by is not None:
        state = RunState.CANCELLED if _is_cancel(stopped_by) else RunState.FAILED
    else:
        state = RunState.FAILED if error is not None else RunState.SUCCEEDED
    final_result: Any = None
    if state is RunState.SUCCEEDED:
        if len(plan.sinks) == 1:
            final_result = results.get(plan.sinks[0])
        else:
            final_result = {name: results[name] for name in plan.sinks if name in results}
    peaks = [run.peak_memory for run in tasks.values() if run.peak_memory]
    record = RunRecord(
        run_id=run_id,
        pipeline=plan.pipeline,
        status=state,
        started=started,
        finished=finished,
        resumed_from=resumed_from,
        sinks=plan.sinks,
        order=tuple(step.name for step in steps),
        tasks=tasks,
        peak_memory=max(peaks) if peaks else None,
        error=_run_error(run_id, plan.pipeline, error, stopped_by, first_failure),
        params=(inputs.values or None) if inputs is not None else None,
        backend=backend,
    )
    return PipelineResult(record, results, final_result, error)


def _params_of(inputs: RunInputs | None, task: str) -> Mapping[str, Any] | None:
    return inputs.params.get(task) if inputs is not None else None


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, RunCancelled | KeyboardInterrupt)


def _run_error(
    run_id: str,
    pipeline: str,
    error: PipelineExecutionError | None,
    stopped_by: BaseException | None,
    first_failure: tuple[str, Outcome] | None,
) -> RunError | None:
    """The record's error: what stopped the run (not a task's failure), else the first
    failed task's."""
    failed_task = first_failure[0] if first_failure is not None else None
    if stopped_by is not None and not _is_cancel(stopped_by):
        what = f"{type(stopped_by).__name__}: {stopped_by}" if str(stopped_by) else (
            type(stopped_by).__name__
        )  # fmt: skip
        return RunError(
            failed_task=failed_task,
            message=what,
            summary=f"run {run_id} of pipeline {pipeline!r} stopped: {what}",
            stack_trace="".join(traceback.format_exception(stopped_by)),
        )
    if error is None:
        return None
    return RunError(
        failed_task=error.failed_task,
        message=error.error_message,
        summary=str(error),
        stack_trace=error.stack_trace,
    )


def _stale_failure(name: str) -> Outcome:
    failure = Failure.from_exception(
        name, BadEntry(f"the stored result of task {name!r} was unusable twice in one run")
    )
    return Outcome(status=TaskStatus.FAILED, failure=failure)


def _execution_error(
    plan: Plan, run_id: str, tasks: Mapping[str, TaskRecord], name: str, outcome: Outcome
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


def log_result(result: PipelineResult, where: str | None = None) -> None:
    """One log line for a finished run: INFO when it succeeded, WARNING when it failed; it
    says where the run computed (``where``, else the record's backend)."""
    where = where or result.backend or "an unknown backend"
    if result.success:
        logger.info(
            "pipeline %r run %s succeeded in %.3fs (%d tasks) on %s",
            result.pipeline,
            result.run_id,
            result.duration,
            len(result.tasks),
            redact_urls_in(where),
        )
    else:
        logger.warning("%s; on %s", redact_urls_in(str(result.error)), redact_urls_in(where))


def _warn_skipped(name: str, elements: Mapping[str, int] | None, indexes: tuple[int, ...]) -> None:
    """Say so when a mapped task went on past failed elements (``on_error="skip"``)."""
    if elements and elements.get("failed"):
        failed, total = elements["failed"], sum(elements.values())
        shown = ", ".join(str(i) for i in indexes) + (" ..." if failed > len(indexes) else "")
        logger.warning(
            "task %r: %d of %d elements failed and were skipped (on_error='skip'): element "
            "%s; their slots in its result hold the exceptions",
            name, failed, total, shown,
        )  # fmt: skip

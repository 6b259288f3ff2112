"""The run events the Pipelines page hears (their shape is drawn in the package docstring)."""

from __future__ import annotations

from typing import Any

from ...records import RunRecord
from ...redact import redact_urls_in
from ...states import TaskStatus

__all__ = ["RUNS_TOPIC", "finished_event", "one_line", "started_event"]

RUNS_TOPIC = "xlibrary-runs"
MAX_LINE = 300
"""Characters of an error line kept (the page and the JSON show one line, not an essay)."""


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """The first non-empty line of ``text``, URLs in it without their secrets, at most
    ``limit`` characters."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    line = redact_urls_in(line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def started_event(record: RunRecord) -> dict[str, Any]:
    """The event of a run that starts, from its start record."""
    return {
        "run_id": record.run_id,
        "pipeline": record.pipeline,
        "status": "running",
        "started": record.started,
        "tasks": list(record.order),
    }


def finished_event(record: RunRecord) -> dict[str, Any]:
    """The event of a run that ended: its status, and each task's status, duration and
    (failed) error or (skipped) the failed task it waited for, or (mapped) its counts."""
    tasks: dict[str, dict[str, Any]] = {}
    for name, run in record.tasks.items():
        entry: dict[str, Any] = {"status": str(run.status), "duration": run.duration}
        if run.status is TaskStatus.FAILED:
            entry["error"] = {
                "type": (run.error_type or "Error").rpartition(".")[2],
                "message": one_line(run.error_message or ""),
            }
        if run.skipped_because:
            entry["skipped_because"] = run.skipped_because
        if run.elements:  # a mapped task: its elements' counts
            entry["elements"] = dict(run.elements)
        tasks[name] = entry
    error = record.error
    return {
        "run_id": record.run_id,
        "pipeline": record.pipeline,
        "status": str(record.status),
        "finished": record.finished,
        "duration": record.duration,
        "failed_task": record.failed_task,
        "error": one_line(error.message) if error is not None and error.message else None,
        "tasks": tasks,
    }

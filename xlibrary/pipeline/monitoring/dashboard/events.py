"""The run events the Pipelines page hears (their shape is drawn in the package docstring)."""

from __future__ import annotations

import re
from typing import Any

from ...redact import redact_url
from ...result import PipelineResult, TaskStatus

__all__ = ["RUNS_TOPIC", "finished_event", "one_line", "started_event"]

RUNS_TOPIC = "xlibrary-runs"
MAX_LINE = 300
"""Characters of an error line kept (the page and the JSON show one line, not an essay)."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """The first non-empty line of ``text``, URLs in it without their secrets, at most
    ``limit`` characters."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    line = _URL.sub(lambda match: redact_url(match.group(0)), line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def started_event(record: dict[str, Any]) -> dict[str, Any]:
    """The event of a run that starts, from its start record."""
    return {
        "run_id": record["run_id"],
        "pipeline": record["pipeline"],
        "status": "running",
        "started": record.get("started"),
        "tasks": list(record.get("order", ())),
    }


def finished_event(result: PipelineResult, record: dict[str, Any]) -> dict[str, Any]:
    """The event of a run that ended: its status, and each task's status, duration and
    (failed) error or (skipped) the failed task it waited for."""
    tasks: dict[str, dict[str, Any]] = {}
    for name, run in result.tasks.items():
        entry: dict[str, Any] = {"status": str(run.status), "duration": run.duration}
        if run.status == TaskStatus.FAILED:
            error = run.error
            entry["error"] = {
                "type": type(error).__name__ if error is not None else "Error",
                "message": one_line(error if error is not None else ""),
            }
        if run.skipped_because:
            entry["skipped_because"] = run.skipped_because
        tasks[name] = entry
    about = record.get("error")
    message = about.get("message") if isinstance(about, dict) else None
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "status": record.get("status") or ("succeeded" if result.success else "failed"),
        "finished": result.finished,
        "duration": result.duration,
        "failed_task": result.failed_task,
        "error": one_line(message) if message else None,
        "tasks": tasks,
    }

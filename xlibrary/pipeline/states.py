"""The words for how tasks and runs are going: one vocabulary for results, records, status,
the web API, the command line, pictures and the dashboard.

::

    task:  pending ─► running ─► succeeded | cached | failed | skipped | cancelled
           (a cluster reports ``finished`` between running and the run's end)
           not_selected: left out of the run by its targets, from_tasks or tags
    run:   pending ─► running ─► succeeded | failed | cancelled
"""

from __future__ import annotations

import enum

__all__ = [
    "DONE",
    "RUN_ENDED",
    "STALE",
    "TASK_ENDED",
    "RunState",
    "TaskStatus",
]


class TaskStatus(enum.StrEnum):
    """The state of one task of a run."""

    PENDING = "pending"
    """Not started yet."""
    RUNNING = "running"
    FINISHED = "finished"
    """Ended on a cluster; how it ended is known when the run's result comes back."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not run, because a task it depends on failed (see ``TaskRecord.skipped_because``), or
    because no task that ran needed its result."""
    CACHED = "cached"
    """Not run, because its result came from the cache or a run that saved it."""
    CANCELLED = "cancelled"
    """Not finished, because the run stopped first: it was cancelled (``handle.cancel()``,
    Ctrl-C), or an error of the engine or the cluster ended it."""
    NOT_SELECTED = "not_selected"
    """Not part of this run: its ``targets``, ``from_tasks`` or ``tags`` left it out (shown as
    "not selected")."""

    def __repr__(self) -> str:  # {'load': 'succeeded'} reads better than the enum repr
        return repr(self.value)


class RunState(enum.StrEnum):
    """The state of a run."""

    PENDING = "pending"
    """Submitted, waiting for its turn (or a pipeline that has not run yet)."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __repr__(self) -> str:
        return repr(self.value)


DONE: frozenset[str] = frozenset({TaskStatus.SUCCEEDED, TaskStatus.CACHED})
"""Task states whose task has a value that downstream tasks can use."""
TASK_ENDED: frozenset[str] = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.CACHED,
        TaskStatus.FAILED,
        TaskStatus.SKIPPED,
        TaskStatus.CANCELLED,
        TaskStatus.NOT_SELECTED,
    }
)
"""Task states that do not change any more."""
RUN_ENDED: frozenset[str] = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
"""Run states that do not change any more."""

STALE = "stale"
"""Not a task state users see: what the task wrapper reports for a result found in the cache
(or saved by an earlier run) that turned out unusable while the run went; the engine runs
the task after all."""

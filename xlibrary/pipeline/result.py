"""What a run returns: :class:`PipelineResult`, with one :class:`TaskRun` per task."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import PipelineExecutionError

__all__ = ["PipelineResult", "TaskRun", "TaskStatus"]


class TaskStatus(enum.StrEnum):
    """The state a task ended a run in."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not run, because a task it depends on failed (see ``TaskRun.skipped_because``)."""
    CACHED = "cached"
    """Not run, because its result came from the cache or a run that saved it."""

    def __repr__(self) -> str:  # {'load': 'succeeded'} reads better than the enum repr
        return repr(self.value)


class TaskRun(NamedTuple):
    """How one task went in one run (immutable; a named tuple, cheap to make by thousands)."""

    name: str
    status: TaskStatus
    attempts: int = 0
    started: float | None = None
    """Wall-clock time (``time.time()``) the first attempt started, where it ran."""
    finished: float | None = None
    error: BaseException | None = None
    """The task's own exception, when it failed."""
    traceback: str | None = None
    """The failure's traceback as text, starting at the task's own frames."""
    skipped_because: str | None = None
    """For a task skipped after a failure: the failed task upstream of it."""
    reason: str | None = None
    """Why a task was skipped or cached, in words."""
    source: str | None = None
    """For a cached task: ``cache:<key>``, or ``run:<run id>`` when an earlier run saved it."""
    saved: bool = False
    """Whether its result was saved in the store under this run."""
    token: str | None = None
    """The cache entry id that stands for its result in downstream cache keys."""
    metrics: dict[str, float] | None = None
    """Metrics the task logged with ``pm.log_metric`` (and ``cpu_seconds``), when monitored."""
    peak_memory: int | None = None
    """Peak resident memory, in bytes, of the process while the task ran, when monitored."""
    worker: str | None = None
    """Where it ran, when monitored: a Dask worker's address, or ``local``."""

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the end, retries and waits included."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


@dataclass(frozen=True, repr=False)
class PipelineResult:
    """The outcome of one run of a pipeline.

    ``final_result`` is the result of the pipeline's only sink task (a task nothing depends
    on); with several sinks it is a dict of their results by task name; when the run failed
    it is ``None``. ``results`` holds every finished task's result by name, also when the run
    failed. ``error`` is a :class:`PipelineExecutionError` for the first failed task (in
    topological order), whose ``__cause__`` is the task's own exception.
    """

    pipeline: str
    run_id: str
    success: bool
    tasks: Mapping[str, TaskRun]
    results: Mapping[str, Any]
    final_result: Any
    error: PipelineExecutionError | None
    started: float
    finished: float
    sinks: tuple[str, ...] = field(default=())
    peak_memory: int | None = None
    """The highest resident memory, in bytes, of the processes that ran the tasks, while they
    ran (monitored runs)."""
    alerts: tuple[Any, ...] = ()
    """The alerts the run raised (monitored runs)."""

    @property
    def duration(self) -> float:
        """Seconds the run took, from submission to the last result."""
        return self.finished - self.started

    @property
    def failed_task(self) -> str | None:
        """The first failed task in topological order, or ``None``."""
        return self.error.failed_task if self.error is not None else None

    @property
    def states(self) -> dict[str, TaskStatus]:
        """Each task's status by name, in topological order."""
        return {name: run.status for name, run in self.tasks.items()}

    def raise_for_status(self) -> PipelineResult:
        """Raise :attr:`error` when the run failed; return the result otherwise."""
        if self.error is not None:
            raise self.error
        return self

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for run in self.tasks.values():
            counts[run.status] = counts.get(run.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        outcome = "succeeded" if self.success else f"failed at {self.failed_task!r}"
        return (
            f"<PipelineResult {self.pipeline!r} run {self.run_id} {outcome} in "
            f"{self.duration:.3f}s: {summary}>"
        )

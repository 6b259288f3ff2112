"""What a run returns: :class:`PipelineResult`, the run's record with its values."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PipelineExecutionError
from .present import outcome_words, result_html, show, text_table
from .records import Alert, RunRecord, TaskRecord
from .states import RunState, TaskStatus

__all__ = ["PipelineResult"]


@dataclass(frozen=True, repr=False)
class PipelineResult:
    """The outcome of one run of a pipeline: its :class:`~.records.RunRecord` (how every task
    went) and the values.

    ``final_result`` is the result of the pipeline's only sink task (a task nothing depends
    on); with several sinks it is a dict of their results by task name; when the run failed
    it is ``None``. ``results`` holds every finished task's result by name, also when the run
    failed. ``error`` is a :class:`PipelineExecutionError` for the first failed task (in
    topological order), whose ``__cause__`` is the task's own exception.
    """

    record: RunRecord
    results: Mapping[str, Any] = field(default_factory=dict)
    final_result: Any = None
    error: PipelineExecutionError | None = None

    @classmethod
    def of_record(cls, record: RunRecord) -> PipelineResult:
        """A recorded run (say, from another process) as a result without values."""
        return cls(record)

    # -- the record's facts -----------------------------------------------------------------
    @property
    def pipeline(self) -> str:
        return self.record.pipeline

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def status(self) -> RunState:
        """``succeeded``, ``failed`` or ``cancelled``."""
        return self.record.status

    @property
    def success(self) -> bool:
        return self.record.status is RunState.SUCCEEDED

    @property
    def tasks(self) -> Mapping[str, TaskRecord]:
        """How each task went, by name, in topological order."""
        return self.record.tasks

    @property
    def started(self) -> float:
        return self.record.started

    @property
    def finished(self) -> float:
        finished = self.record.finished
        return self.record.started if finished is None else finished

    @property
    def duration(self) -> float:
        """Seconds the run took, from submission to the last result."""
        return self.finished - self.started

    @property
    def sinks(self) -> tuple[str, ...]:
        return self.record.sinks

    @property
    def backend(self) -> str | None:
        """Where the run computed: ``threads``, ``distributed``, ``sequential``..."""
        return self.record.backend

    @property
    def peak_memory(self) -> int | None:
        """The highest resident memory, in bytes, of the processes that ran the tasks, while
        they ran (monitored runs)."""
        return self.record.peak_memory

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """The alerts the run raised (monitored runs)."""
        return self.record.alerts

    @property
    def failed_task(self) -> str | None:
        """The first failed task in topological order, or ``None``."""
        return self.record.failed_task

    @property
    def states(self) -> dict[str, TaskStatus]:
        """Each task's status by name, in topological order."""
        return {name: run.status for name, run in self.tasks.items()}

    # -- deriving -----------------------------------------------------------------------------
    def with_record(self, **changes: Any) -> PipelineResult:
        """The same result, its record changed (``peak_memory=``, ``alerts=``...)."""
        return dataclasses.replace(self, record=self.record.replace(**changes))

    def without_values(self) -> PipelineResult:
        """This result without what can be big: no task results, no final result, no
        exception objects (tracebacks and messages stay, as text). Cheap to keep around."""
        record = self.record
        if any(run.error is not None for run in record.tasks.values()):
            tasks = {name: run.without_error() for name, run in record.tasks.items()}
            record = record.replace(tasks=tasks)
        error = self.error
        if error is not None:
            error = error.without_exception()
        return PipelineResult(record, error=error)

    def raise_for_status(self) -> PipelineResult:
        """Raise :attr:`error` when the run failed; return the result otherwise."""
        if self.error is not None:
            raise self.error
        return self

    # -- showing ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for run in self.tasks.values():
            counts[run.status] = counts.get(run.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        return (
            f"<PipelineResult {self.pipeline!r} run {self.run_id} {outcome_words(self)} in "
            f"{self.duration:.3f}s: {summary}>"
        )

    def _repr_html_(self) -> str:
        """An HTML summary for notebooks: the run, then one table row per task with its
        status, duration, attempts and a preview of its result (or its error)."""
        return result_html(self)

    def display_results(self) -> None:
        """Show this summary: as HTML in a notebook, else as a text table on stdout.

        >>> result = pm.execute_pipeline(pipeline)  # doctest: +SKIP
        >>> result.display_results()  # doctest: +SKIP
        pipeline 'etl' run 5f0c... succeeded in 12 ms
        task       status     duration  attempts  result
        extract    succeeded  3 ms      1         [1, 2, 3]
        """
        show(result_html(self), text_table(self))

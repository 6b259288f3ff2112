"""What a run returns: :class:`PipelineResult`, with one :class:`TaskRun` per task."""

from __future__ import annotations

import dataclasses
import enum
import html
import reprlib
import sys
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
    CANCELLED = "cancelled"
    """Not finished, because the run stopped first: it was cancelled (``handle.cancel()``,
    Ctrl-C), or an error of the engine or the cluster ended it."""

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

    def without_values(self) -> PipelineResult:
        """This result without what can be big: no task results, no final result, no
        exception objects (tracebacks and messages stay, as text). Cheap to keep around."""
        tasks = self.tasks
        if any(run.error is not None for run in tasks.values()):
            tasks = {name: run._replace(error=None) for name, run in tasks.items()}
        error = self.error
        if error is not None:
            error = PipelineExecutionError(
                str(error),
                pipeline=error.pipeline,
                failed_task=error.failed_task,
                error_message=error.error_message,
                stack_trace=error.stack_trace,
                run_id=error.run_id,
            )
        return dataclasses.replace(self, tasks=tasks, results={}, final_result=None, error=error)

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
        return (
            f"<PipelineResult {self.pipeline!r} run {self.run_id} {_outcome(self)} in "
            f"{self.duration:.3f}s: {summary}>"
        )

    def _repr_html_(self) -> str:
        """An HTML summary for notebooks: the run, then one table row per task with its
        status, duration, attempts and a preview of its result (or its error)."""
        rows = "".join(_task_row_html(run, self.results) for run in self.tasks.values())
        return (
            f'<div class="xlibrary-pipeline-result">{_headline_html(self)}'
            "<table><thead><tr><th>task</th><th>status</th><th>duration</th>"
            "<th>attempts</th><th>result</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )

    def display_results(self) -> None:
        """Show this summary: as HTML in a notebook, else as a text table on stdout.

        >>> result = pm.execute_pipeline(pipeline)  # doctest: +SKIP
        >>> result.display_results()  # doctest: +SKIP
        pipeline 'etl' run 5f0c... succeeded in 12 ms
        task       status     duration  attempts  result
        extract    succeeded  3 ms      1         [1, 2, 3]
        """
        from .integrations.notebook import show

        show(self._repr_html_(), _text_table(self))


# -- previews: how a result reads in a notebook or a terminal ---------------------------------

_STATUS_COLOURS: dict[TaskStatus | None, tuple[str, str]] = {
    None: ("#ffffff", "#455a64"),
    TaskStatus.SUCCEEDED: ("#c8e6c9", "#2e7d32"),
    TaskStatus.CACHED: ("#bbdefb", "#1565c0"),
    TaskStatus.FAILED: ("#ffcdd2", "#c62828"),
    TaskStatus.SKIPPED: ("#eeeeee", "#757575"),
    TaskStatus.CANCELLED: ("#ffe0b2", "#e65100"),
}
"""(fill, line) colour of each task status (``None``: not run yet), in pictures and tables."""

_PREVIEW_CHARS = 200
_FRAME_ROWS = 5


class _ShortRepr(reprlib.Repr):
    """``reprlib``'s limits, and a DataFrame anywhere inside shown by its shape only."""

    def __init__(self) -> None:
        super().__init__()  # the limits are attributes (keywords only from Python 3.12)
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 8
        self.maxstring = self.maxother = 120

    def repr_DataFrame(self, obj: Any, level: int) -> str:
        rows, columns = obj.shape
        return f"<DataFrame {rows}x{columns}>"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_repr(value: Any, limit: int = _PREVIEW_CHARS) -> str:
    """A one-line ``repr`` of at most ``limit`` characters, whatever ``value`` is."""
    try:
        text = _ShortRepr().repr(value)
    except Exception:  # a broken __repr__ must not break the display of a run
        text = f"<{type(value).__name__} object>"
    return _one_line(text, limit)


def _frame_type() -> type[Any] | None:
    """pandas' DataFrame when pandas is imported (a DataFrame value means it is)."""
    pandas = sys.modules.get("pandas")
    return getattr(pandas, "DataFrame", None) if pandas is not None else None


def _frame_html(frame: Any) -> str:
    rows, columns = frame.shape
    head = frame.head(_FRAME_ROWS).to_html(max_cols=20)
    return f"<div>DataFrame, {rows} rows, {columns} columns</div>{head}"


def _preview_html(value: Any) -> str:
    """HTML preview of a task's result: a DataFrame's head as a table (also for DataFrames
    among a dict's values), anything else an escaped short ``repr``."""
    frame_type = _frame_type()
    if frame_type is not None and isinstance(value, frame_type):
        return _frame_html(value)
    code = f"<code>{html.escape(_short_repr(value))}</code>"
    if frame_type is None or not isinstance(value, Mapping):
        return code
    frames = [(key, v) for key, v in value.items() if isinstance(v, frame_type)][:3]
    return code + "".join(
        f"<div><code>{html.escape(_short_repr(key, 60))}</code>: {_frame_html(frame)}</div>"
        for key, frame in frames
    )


def _preview_text(value: Any, limit: int = 60) -> str:
    """One line of text standing for a task's result."""
    return _short_repr(value, limit)


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f} min {rest:02.0f} s"


def _note(run: TaskRun, results: Mapping[str, Any]) -> str | None:
    """Words standing for a task that has no result to preview, or ``None`` when it has."""
    if run.status is TaskStatus.FAILED:
        if run.error is not None:
            return f"{type(run.error).__name__}: {run.error}"
        # a result without its values (a recorded run, one let go of): the traceback's last line
        last = run.traceback.strip().splitlines()[-1] if run.traceback else ""
        return last or "failed"
    if run.status is TaskStatus.SKIPPED:
        because = f"{run.skipped_because!r} failed" if run.skipped_because else run.reason
        return f"not run: {because}" if because else "not run"
    if run.status is TaskStatus.CANCELLED:
        return run.reason or "not finished: the run was cancelled"
    return None if run.name in results else "result not kept"


def _ended_as(result: PipelineResult) -> TaskStatus:
    """How the run as a whole ended: succeeded, failed, or cancelled (stopped early)."""
    if result.success:
        return TaskStatus.SUCCEEDED
    if result.failed_task is None and TaskStatus.CANCELLED in result.states.values():
        return TaskStatus.CANCELLED
    return TaskStatus.FAILED


def _outcome(result: PipelineResult) -> str:
    ended = _ended_as(result)
    return f"failed at {result.failed_task!r}" if ended is TaskStatus.FAILED else str(ended)


def _headline_html(result: PipelineResult) -> str:
    status = _ended_as(result)
    return (
        f"<p>pipeline <strong>{html.escape(result.pipeline)}</strong> · run "
        f"<code>{html.escape(result.run_id)}</code> · "
        f'<span style="color: {_STATUS_COLOURS[status][1]}">{html.escape(_outcome(result))}</span> '
        f"in {_format_duration(result.duration)}</p>"
    )


def _task_row_html(run: TaskRun, results: Mapping[str, Any]) -> str:
    fill, line = _STATUS_COLOURS.get(run.status, _STATUS_COLOURS[None])
    note = _note(run, results)
    if note is None:
        preview = _preview_html(results[run.name])
    else:
        colour = f' style="color: {line}"' if run.status is TaskStatus.FAILED else ""
        preview = f"<code{colour}>{html.escape(_one_line(note, 500))}</code>"
    return (
        f"<tr><td><code>{html.escape(run.name)}</code></td>"
        f'<td><span style="background: {fill}; color: {line}; padding: 0 0.4em">'
        f"{run.status}</span></td>"
        f"<td>{_format_duration(run.duration)}</td><td>{run.attempts}</td>"
        f'<td style="text-align: left">{preview}</td></tr>'
    )


def _text_table(result: PipelineResult) -> str:
    """The summary as plain text: a headline, then a column-aligned table of the tasks."""
    headline = (
        f"pipeline {result.pipeline!r} run {result.run_id} {_outcome(result)} "
        f"in {_format_duration(result.duration)}"
    )
    rows = [("task", "status", "duration", "attempts", "result")]
    for run in result.tasks.values():
        note = _note(run, result.results)
        text = _preview_text(result.results[run.name]) if note is None else _one_line(note, 80)
        duration = _format_duration(run.duration)
        rows.append((run.name, str(run.status), duration, str(run.attempts), text))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([*(row[i].ljust(widths[i]) for i in range(4)), row[4]]) for row in rows]
    return "\n".join([headline, *lines])

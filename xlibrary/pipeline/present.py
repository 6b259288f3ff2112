"""How runs and task results read: previews, tables and colours for notebooks, terminals and
pictures. Reached lazily from :class:`~.result.PipelineResult` (``_repr_html_``,
``display_results``), and by :mod:`~.pictures` and the notebook integration.
"""

from __future__ import annotations

import html
import logging
import reprlib
import sys
from collections.abc import Mapping
from typing import Any, Protocol

from .records import RunRecord, TaskRecord
from .states import DONE, TaskStatus


class PipelineResult(Protocol):
    """What showing a run reads of it (a :class:`~.result.PipelineResult`)."""

    @property
    def pipeline(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def duration(self) -> float: ...
    @property
    def failed_task(self) -> str | None: ...
    @property
    def tasks(self) -> Mapping[str, TaskRecord]: ...
    @property
    def results(self) -> Mapping[str, Any]: ...
    @property
    def record(self) -> RunRecord: ...

    def display_results(self) -> None: ...


logger = logging.getLogger("xlibrary.pipeline.notebook")

__all__ = [
    "STATUS_COLOURS",
    "LiveResults",
    "NotebookRun",
    "format_duration",
    "in_notebook",
    "outcome_words",
    "params_text",
    "preview_html",
    "preview_text",
    "result_html",
    "show",
    "show_task",
    "status_words",
    "text_table",
]


# -- previews: how a result reads in a notebook or a terminal ---------------------------------

STATUS_COLOURS: dict[TaskStatus | None, tuple[str, str]] = {
    None: ("#ffffff", "#455a64"),
    TaskStatus.SUCCEEDED: ("#c8e6c9", "#2e7d32"),
    TaskStatus.CACHED: ("#bbdefb", "#1565c0"),
    TaskStatus.FAILED: ("#ffcdd2", "#c62828"),
    TaskStatus.SKIPPED: ("#eeeeee", "#757575"),
    TaskStatus.CANCELLED: ("#ffe0b2", "#e65100"),
    TaskStatus.NOT_SELECTED: ("#fafafa", "#bdbdbd"),
}
"""(fill, line) colour of each task status (``None``: not run yet), in pictures and tables."""


def status_words(status: object) -> str:
    """A task status as people read it: ``not selected`` for ``not_selected``."""
    return str(status).replace("_", " ")


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


def preview_html(value: Any) -> str:
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


def preview_text(value: Any, limit: int = 60) -> str:
    """One line of text standing for a task's result."""
    return _short_repr(value, limit)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f} min {rest:02.0f} s"


def elements_words(elements: Mapping[str, int] | None) -> str:
    """A mapped task's element counts: ``9,998 succeeded, 2 failed`` (``""`` unmapped)."""
    if not elements:
        return ""
    succeeded, failed = elements.get("succeeded", 0), elements.get("failed", 0)
    return f"{succeeded:,} succeeded" + (f", {failed:,} failed" if failed else "")


def _status_text(run: TaskRecord) -> str:
    """A task's status in words, with its element counts when it is mapped."""
    counts = elements_words(run.elements)
    return f"{status_words(run.status)} ({counts})" if counts else status_words(run.status)


def _note(run: TaskRecord, results: Mapping[str, Any]) -> str | None:
    """Words standing for a task that has no result to preview, or ``None`` when it has."""
    if run.status is TaskStatus.FAILED:
        if run.error_type is not None:
            return f"{run.error_type.rpartition('.')[2]}: {run.error_message}"
        # a record written without the type: the traceback's last line
        last = run.traceback.strip().splitlines()[-1] if run.traceback else ""
        return last or "failed"
    if run.status is TaskStatus.SKIPPED:
        because = f"{run.skipped_because!r} failed" if run.skipped_because else run.reason
        return f"not run: {because}" if because else "not run"
    if run.status is TaskStatus.CANCELLED:
        return run.reason or "not finished: the run was cancelled"
    if run.status is TaskStatus.NOT_SELECTED:
        return "not run: not selected"
    return None if run.name in results else "result not kept"


def _ended_as(result: PipelineResult) -> TaskStatus:
    """How the run as a whole ended, in the task words that have a colour: succeeded,
    failed, or cancelled (stopped early)."""
    ended = str(result.status)
    return TaskStatus(ended) if ended in _RUN_ENDINGS else TaskStatus.FAILED


_RUN_ENDINGS = frozenset({"succeeded", "failed", "cancelled"})


def outcome_words(result: PipelineResult) -> str:
    ended = _ended_as(result)
    return f"failed at {result.failed_task!r}" if ended is TaskStatus.FAILED else str(ended)


def params_text(params: Mapping[str, Any] | None) -> str:
    """Parameter values in one line: ``test_size=0.3, random_state=3``."""
    return ", ".join(f"{name}={_short_repr(value, 60)}" for name, value in (params or {}).items())


def _headline_html(result: PipelineResult) -> str:
    status = _ended_as(result)
    params = params_text(result.record.params)
    shown = f"<br>params: <code>{html.escape(params)}</code>" if params else ""
    return (
        f"<p>pipeline <strong>{html.escape(result.pipeline)}</strong> · run "
        f"<code>{html.escape(result.run_id)}</code> · "
        f'<span style="color: {STATUS_COLOURS[status][1]}">'
        f"{html.escape(outcome_words(result))}</span> "
        f"in {format_duration(result.duration)}{shown}</p>"
    )


def _task_row_html(run: TaskRecord, results: Mapping[str, Any]) -> str:
    fill, line = STATUS_COLOURS.get(run.status, STATUS_COLOURS[None])
    note = _note(run, results)
    if note is None:
        preview = preview_html(results[run.name])
    else:
        colour = f' style="color: {line}"' if run.status is TaskStatus.FAILED else ""
        preview = f"<code{colour}>{html.escape(_one_line(note, 500))}</code>"
    return (
        f"<tr><td><code>{html.escape(run.name)}</code></td>"
        f'<td><span style="background: {fill}; color: {line}; padding: 0 0.4em">'
        f"{html.escape(_status_text(run))}</span></td>"
        f"<td>{format_duration(run.duration)}</td><td>{run.attempts}</td>"
        f'<td style="text-align: left">{preview}</td></tr>'
    )


def text_table(result: PipelineResult) -> str:
    """The summary as plain text: a headline, then a column-aligned table of the tasks."""
    headline = (
        f"pipeline {result.pipeline!r} run {result.run_id} {outcome_words(result)} "
        f"in {format_duration(result.duration)}"
    )
    params = params_text(result.record.params)
    if params:
        headline += f"\nparams: {params}"
    rows = [("task", "status", "duration", "attempts", "result")]
    for run in result.tasks.values():
        note = _note(run, result.results)
        text = preview_text(result.results[run.name]) if note is None else _one_line(note, 80)
        duration = format_duration(run.duration)
        rows.append((run.name, _status_text(run), duration, str(run.attempts), text))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([*(row[i].ljust(widths[i]) for i in range(4)), row[4]]) for row in rows]
    return "\n".join([headline, *lines])


def in_notebook() -> bool:
    """Whether this code runs in an IPython kernel (Jupyter, VS Code, Colab), which shows HTML.

    A terminal IPython shell is not a notebook: it shows text.
    """
    if "IPython" not in sys.modules:  # never import IPython just to find out
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(html_text: str, plain_text: str) -> None:
    """Display ``html_text`` in a notebook, else print ``plain_text`` to stdout."""
    if in_notebook():
        from IPython.display import HTML, display

        display(HTML(html_text))  # type: ignore[no-untyped-call]  # IPython is untyped here
    else:
        print(plain_text)


def result_html(result: PipelineResult) -> str:
    """The HTML summary of a run: a headline, then one table row per task with its status,
    duration, attempts and a preview of its result (or its error)."""
    rows = "".join(_task_row_html(run, result.results) for run in result.tasks.values())
    return (
        f'<div class="xlibrary-pipeline-result">{_headline_html(result)}'
        "<table><thead><tr><th>task</th><th>status</th><th>duration</th>"
        "<th>attempts</th><th>result</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def show_task(name: str, value: Any) -> None:
    """Show one task's result: in a notebook a small HTML block headed
    "task <name>" with a preview of ``value``; elsewhere one line of text.

    >>> show_task("extract", [1, 2, 3])
    task extract: [1, 2, 3]
    """
    block = (
        '<div class="xlibrary-pipeline-task" style="margin: 0.3em 0">'
        f"<strong>task</strong> <code>{html.escape(name)}</code>"
        f"<div>{preview_html(value)}</div></div>"
    )
    show(block, f"task {name}: {preview_text(value, 100)}")


class LiveResults:
    """A run listener that shows each task's result as soon as the task finishes
    (``show_intermediate``), where the backend has the value at hand (the embedded one); the
    manager shows the rest when the run ends. ``shown`` names the tasks already shown."""

    def __init__(self) -> None:
        self.shown: set[str] = set()

    def started(self, task: str) -> None:
        pass

    def done(self, task: str) -> None:
        pass

    def outcome(self, task: str, outcome: Any) -> None:
        if getattr(outcome, "status", None) not in DONE or task in self.shown:
            return
        self.shown.add(task)
        try:
            show_task(task, outcome.value)
        except Exception:  # showing a result must never fail the run
            logger.exception("could not show the result of task %r", task)

    def close(self) -> None:
        pass


class NotebookRun:
    """The notebook conveniences of one run: each task's result shown as it finishes
    (``show_intermediate``, by default on with ``interactive_mode`` in a notebook), the rest
    when the run ends (a cluster keeps values until then), and the result table
    (``inline_results``)."""

    def __init__(
        self, *, show_intermediate: bool | None, interactive: bool, inline_results: bool
    ) -> None:
        wanted = show_intermediate
        if wanted is None:
            wanted = interactive and in_notebook()
        self.live = LiveResults() if wanted else None
        self.inline_results = inline_results

    @property
    def listeners(self) -> list[LiveResults]:
        return [self.live] if self.live is not None else []

    def after(self, result: PipelineResult) -> None:
        live = self.live
        if live is not None:
            for name, value in result.results.items():
                if name not in live.shown:
                    show_task(name, value)
        if self.inline_results and in_notebook():
            result.display_results()

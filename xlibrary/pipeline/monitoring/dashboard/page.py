"""The Pipelines page as a Bokeh document of Dask's dashboard (imported on the scheduler when
the page is mounted; it needs bokeh, as Dask's dashboard does).

Like Dask's own pages, it is a few Bokeh models fed by data sources that a periodic callback
updates on the scheduler (twice a second, and only when the run book changed), so the browser
redraws the rows that changed and never reloads. Two tables of fixed height: the runs, one
line each, newest first; and the tasks of one run, the newest unless a click picked another.
"""

from __future__ import annotations

import html
import time
from typing import Any

from bokeh.layouts import column
from bokeh.models import ColumnDataSource
from bokeh.models.widgets.markups import Div
from bokeh.models.widgets.tables import DataTable, HTMLTemplateFormatter, TableColumn
from distributed.dashboard.components import add_periodic_callback
from distributed.dashboard.components.scheduler import BOKEH_THEME, env
from distributed.dashboard.utils import _DATATABLE_STYLESHEETS_KWARGS, update
from distributed.utils import log_errors

from .http import COLORS, seconds, summary
from .runs import KEEP, RunRow, TaskRow, book_of, ordered_counts

__all__ = ["PipelinesPage", "pipelines_doc"]

RUN_COLUMNS = ("run_id", "pipeline", "status", "color", "started", "duration", "summary", "error")
TASK_COLUMNS = ("task", "state", "color", "progress", "done", "duration", "worker", "error")
RUN_ROWS, TASK_ROWS = 10, 16
"""Rows each table shows before it scrolls: the page is as tall with 50 runs as with one."""
ROW_HEIGHT = 25

_STATE = '<span style="color:<%= color %>;font-weight:bold"><%- value %></span>'
_TEXT = '<span title="<%- value %>"><%- value %></span>'
_PROGRESS = (
    '<% if (value) { %><div style="display:flex;align-items:center;gap:6px">'
    '<div style="flex:none;width:80px;height:9px;background:#e0e0e0">'
    '<div style="width:<%= done %>%;height:9px;background:<%= color %>"></div></div>'
    "<span><%- value %></span></div><% } %>"
)
"""Cell templates (underscore's: ``<%- %>`` escapes, ``<%= %>`` does not)."""
_STYLESHEETS: list[Any] = list(_DATATABLE_STYLESHEETS_KWARGS["stylesheets"])


def _column(field: str, title: str, width: int, template: str | None = None) -> TableColumn:
    if template is None:
        return TableColumn(field=field, title=title, width=width)
    formatter = HTMLTemplateFormatter(template=template)  # a model belongs to one document
    return TableColumn(field=field, title=title, width=width, formatter=formatter)


class PipelinesPage:
    """The models of one browser session's page, and how they follow the run book."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.seen: int | None = None  # the run book's version last shown
        self.picked: str | None = None  # a run clicked (not the newest): it stays expanded
        self._selecting = False
        self.runs = ColumnDataSource({k: [] for k in RUN_COLUMNS}, name="pipelines-runs")
        self.tasks = ColumnDataSource({k: [] for k in TASK_COLUMNS}, name="pipelines-tasks")
        self.heading = Div(text="", name="pipelines-heading", sizing_mode="stretch_width")
        self.run_title = Div(text="", name="pipelines-run", sizing_mode="stretch_width")
        runs_table = _table(
            self.runs,
            RUN_ROWS,
            [
                _column("pipeline", "Pipeline", 150, _TEXT),
                _column("run_id", "Run", 210, _TEXT),
                _column("status", "Status", 80, _STATE),
                _column("started", "Started", 70),
                _column("duration", "Duration", 70),
                _column("summary", "Tasks", 230, _TEXT),
                _column("error", "Error", 380, _TEXT),
            ],
        )
        tasks_table = _table(
            self.tasks,
            TASK_ROWS,
            [
                _column("task", "Task", 200, _TEXT),
                _column("state", "State", 80, _STATE),
                _column("progress", "Elements", 200, _PROGRESS),
                _column("duration", "Time", 70),
                _column("worker", "Worker", 170, _TEXT),
                _column("error", "Error", 380, _TEXT),
            ],
        )
        self.runs.selected.on_change("indices", self._on_pick)
        self.root = column(
            self.heading, runs_table, self.run_title, tasks_table, sizing_mode="stretch_width"
        )

    @log_errors
    def update(self) -> None:
        book = book_of(self.scheduler)
        version = None if book is None else book.version
        if version == self.seen and version is not None:
            return
        self.seen = version
        runs = book.newest_first() if book is not None else []
        shown = next((r for r in runs if r.run_id == self.picked), runs[0] if runs else None)
        self.heading.text = _heading(len(runs), book is not None)
        update(self.runs, _runs_data(runs))
        update(self.tasks, _tasks_data(shown))
        self.run_title.text = _run_title(shown)
        index = [runs.index(shown)] if shown is not None else []
        if self.runs.selected.indices != index:
            self._selecting = True
            try:
                self.runs.selected.indices = index
            finally:
                self._selecting = False

    def _on_pick(self, attr: str, old: Any, new: Any) -> None:
        if self._selecting or not new:
            return
        run_ids = self.runs.data["run_id"]
        picked = run_ids[new[0]] if new[0] < len(run_ids) else None
        self.picked = None if new[0] == 0 else picked  # the newest: follow new runs
        self.seen = None
        self.update()


@log_errors
def pipelines_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """The document of one session of ``/pipelines`` (Dask's ``doc(scheduler, extra, doc)``)."""
    page = PipelinesPage(scheduler)
    page.update()
    add_periodic_callback(doc, page, 500)  # type: ignore[no-untyped-call]
    doc.title = "Dask: Pipelines"
    doc.add_root(page.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME


def _table(source: ColumnDataSource, rows: int, columns: list[TableColumn]) -> DataTable:
    return DataTable(
        source=source,
        columns=columns,
        height=ROW_HEIGHT * (rows + 1) + 2,
        row_height=ROW_HEIGHT,
        sizing_mode="stretch_width",
        index_position=None,
        sortable=False,
        reorderable=False,
        stylesheets=_STYLESHEETS,  # Dask's: its menus above the table
    )


def _heading(runs: int, listening: bool) -> str:
    if not listening:
        return "<h3>Pipelines</h3><p>This scheduler has no Pipelines plugin.</p>"
    if not runs:
        return (
            "<h3>Pipelines</h3><p>No pipeline runs yet: run one with a PipelineManager "
            "connected to this scheduler.</p>"
        )
    return (
        f"<h3>Pipelines</h3><p>{runs} run{'s' if runs != 1 else ''}, newest first (the last "
        f"{KEEP} are kept). Click a run to see its tasks.</p>"
    )


def _runs_data(runs: list[RunRow]) -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = {k: [] for k in RUN_COLUMNS}
    for run in runs:
        data["run_id"].append(run.run_id)
        data["pipeline"].append(run.pipeline)
        data["status"].append(run.status)
        data["color"].append(COLORS.get(run.status, "#000000"))
        data["started"].append(_clock(run.started))
        data["duration"].append(seconds(run.duration))
        data["summary"].append(summary(run.counts()))
        data["error"].append(run.error_line() or "")
    return data


def _tasks_data(run: RunRow | None) -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = {k: [] for k in TASK_COLUMNS}
    for row in run.tasks.values() if run is not None else ():
        state = row.shown_state()
        data["task"].append(row.name)
        data["state"].append(state)
        data["color"].append(COLORS.get(state, "#000000"))
        progress, done = _progress(row)
        data["progress"].append(progress)
        data["done"].append(done)
        data["duration"].append(seconds(row.duration))
        data["worker"].append(row.worker or "")
        data["error"].append(_task_error(row))
    return data


def _progress(row: TaskRow) -> tuple[str, float]:
    """A mapped task's counts, and the share of its elements that are done (in %)."""
    if not row.counts:
        return "", 0.0
    counts = ordered_counts(row.counts)
    total = sum(counts.values())
    done = total - counts.get("pending", 0) - counts.get("running", 0)
    return summary(counts), round(100 * done / total, 1) if total else 0.0


def _task_error(row: TaskRow) -> str:
    if row.error is not None:
        return f"{row.error['type']}: {row.error['message']}"
    if row.skipped_because:
        return f"skipped: {row.skipped_because!r} failed"
    return ""


def _run_title(run: RunRow | None) -> str:
    if run is None:
        return ""
    color = COLORS.get(run.status, "#000000")
    took = f" in {seconds(run.duration)}" if run.duration is not None else ""
    return (
        f"<h4>{html.escape(run.pipeline)} <small>run {html.escape(run.run_id)}</small>: "
        f"<span style='color:{color}'>{html.escape(run.status)}</span>{took}, started "
        f"{_clock(run.started)}; {html.escape(summary(run.counts()))}</h4>"
    )


def _clock(when: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) if when else ""

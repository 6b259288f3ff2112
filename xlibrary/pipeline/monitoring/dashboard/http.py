"""``/pipelines.json``, and the plain HTML page served where the Bokeh page cannot be."""

from __future__ import annotations

import html
import json
import time

from distributed.http.utils import RequestHandler

from .runs import RunRow, TaskRow, book_of, ordered_counts

__all__ = ["PipelinesHTML", "PipelinesJSON"]

COLORS = {
    "pending": "#757575",
    "running": "#1565c0",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "skipped": "#ef6c00",
    "cached": "#6a1b9a",
    "cancelled": "#8d6e63",
    "not_selected": "#bdbdbd",
}
"""Each state's colour, on both pages."""


class PipelinesJSON(RequestHandler):
    def get(self) -> None:
        book = book_of(self.server)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(book.to_json() if book else {"runs": []}, default=str))


class PipelinesHTML(RequestHandler):
    """The runs one line each, the newest expanded; it reloads itself every 5 s."""

    def get(self) -> None:
        book = book_of(self.server)
        runs = book.newest_first() if book else []
        self.set_header("Content-Type", "text/html; charset=utf-8")
        body = "<p>No pipeline runs yet.</p>"
        if runs:
            lines = "".join(_run_line(run) for run in runs)
            body = (
                "<table><tr><th>pipeline</th><th>run</th><th>status</th><th>tasks</th>"
                f"<th>time</th><th>error</th></tr>{lines}</table>{_run_tasks(runs[0])}"
            )
        style = "".join(f".{state}{{color:{color}}}" for state, color in COLORS.items())
        self.write(
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='5'><title>Pipelines</title>"
            "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:.15em .7em;"
            f"text-align:left}}{style}</style></head><body>"
            "<p><a href='status'>Dask status</a></p><h1>Pipelines</h1>" + body + "</body></html>"
        )


def _cell(text: object, state: str | None = None) -> str:
    css = f" class='{state}'" if state in COLORS else ""
    return f"<td{css}>{html.escape('' if text is None else str(text))}</td>"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}s" if value < 60 else f"{value / 60:.1f} min"


def summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {state}" for state, n in counts.items())


def _run_line(run: RunRow) -> str:
    return (
        "<tr>"
        + _cell(run.pipeline)
        + _cell(run.run_id)
        + _cell(run.status, run.status)
        + _cell(summary(run.counts()))
        + _cell(seconds(run.duration))
        + _cell(run.error_line() or "")
        + "</tr>"
    )


def _run_tasks(run: RunRow) -> str:
    started = time.strftime("%H:%M:%S", time.localtime(run.started)) if run.started else ""
    rows = "".join(_task_line(row) for row in run.tasks.values())
    return (
        f"<h2>{html.escape(run.pipeline)} <small>run {html.escape(run.run_id)}, started "
        f"{started}</small></h2><table><tr><th>task</th><th>state</th><th>elements</th>"
        f"<th>time</th><th>worker</th><th>error</th></tr>{rows}</table>"
    )


def _task_line(row: TaskRow) -> str:
    state = row.shown_state()
    error = f"{row.error['type']}: {row.error['message']}" if row.error else ""
    if row.skipped_because:
        error = error or f"after {row.skipped_because!r} failed"
    return (
        "<tr>"
        + _cell(row.name)
        + _cell(state, state)
        + _cell(summary(ordered_counts(row.counts)) if row.counts else "")
        + _cell(seconds(row.duration))
        + _cell(row.worker or "")
        + _cell(error)
        + "</tr>"
    )

"""A "Pipelines" page on Dask's own dashboard server: runs, their task states and timings.

:class:`PipelinesPlugin` is a scheduler plugin. When the scheduler starts it (or when a client
registers it), it adds two routes to the scheduler's HTTP server, the one that serves the
Bokeh dashboard: ``/pipelines`` (an HTML page that refreshes itself) and ``/pipelines.json``.
It also starts the scheduler's task-stream recording, so that the status page's task stream
shows runs made before anyone opened it. It learns about runs from the client through Dask's
event channel (topic ``xlibrary-runs``:
a run's tasks when it starts, its record when it ends) and follows their tasks live through
the scheduler's transitions of keys ``(task_name, run_id)``. It keeps the last 50 runs.
"""

from __future__ import annotations

import html
import json
import time
from collections import OrderedDict
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.http.utils import RequestHandler

__all__ = ["RUNS_TOPIC", "PipelinesPlugin"]

RUNS_TOPIC = "xlibrary-runs"
PLUGIN_NAME = "xlibrary-pipelines"
KEEP = 50


class PipelinesPlugin(SchedulerPlugin):
    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.runs: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def start(self, scheduler: Any) -> None:
        from distributed.diagnostics.task_stream import TaskStreamPlugin

        if TaskStreamPlugin.name not in scheduler.plugins:
            # The dashboard's task stream records only once someone opens it; record from
            # now, so runs made before the page was opened show on it too.
            scheduler.add_plugin(TaskStreamPlugin(scheduler))  # type: ignore[no-untyped-call]
        app = getattr(scheduler, "http_application", None)
        if app is not None:
            app.add_handlers(
                r".*",
                [
                    (r"/pipelines", PipelinesPage, {"dask_server": scheduler}),
                    (r"/pipelines\.json", PipelinesJSON, {"dask_server": scheduler}),
                ],
            )

    def log_event(self, topic: str, msg: Any) -> None:
        if topic != RUNS_TOPIC or not isinstance(msg, dict) or "run_id" not in msg:
            return
        run = self.runs.setdefault(msg["run_id"], {"tasks": {}})
        tasks = msg.get("tasks", {})
        run.update({k: v for k, v in msg.items() if k != "tasks"})
        for name, facts in tasks.items():
            run["tasks"].setdefault(name, {}).update(facts)
        while len(self.runs) > KEEP:
            self.runs.popitem(last=False)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if type(key) is not tuple or len(key) != 2:
            return
        run = self.runs.get(key[1])
        if run is None:
            return
        task = run["tasks"].setdefault(key[0], {})
        task["state"] = finish
        if start == "processing" and finish in ("memory", "erred"):
            compute = next(
                (s for s in kwargs.get("startstops", ()) if s.get("action") == "compute"), None
            )
            if compute is not None:
                task["duration"] = compute["stop"] - compute["start"]
            task["worker"] = kwargs.get("worker")


def _plugin(handler: RequestHandler) -> PipelinesPlugin | None:
    plugin = handler.server.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, PipelinesPlugin) else None


class PipelinesJSON(RequestHandler):
    def get(self) -> None:
        plugin = _plugin(self)
        self.set_header("Content-Type", "application/json")
        runs = list(reversed(plugin.runs.values())) if plugin else []
        self.write(json.dumps({"runs": runs}, default=str))


class PipelinesPage(RequestHandler):
    def get(self) -> None:
        plugin = _plugin(self)
        runs = list(reversed(plugin.runs.values())) if plugin else []
        sections = [_run_html(run) for run in runs] or ["<p>No pipeline runs yet.</p>"]
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='2'><title>Pipelines</title>"
            "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:.15em .7em;"
            "text-align:left}h2{margin-top:1.4em}.failed,.erred{color:#b00}"
            ".succeeded,.memory{color:#070}.cancelled{color:#e65100}</style></head><body>"
            "<p><a href='status'>Dask status</a></p><h1>Pipelines</h1>"
            + "".join(sections)
            + "</body></html>"
        )


def _run_html(run: dict[str, Any]) -> str:
    status = str(run.get("status", "running"))
    started = run.get("started")
    when = time.strftime("%H:%M:%S", time.localtime(started)) if started else ""
    duration = run.get("duration")
    head = (
        f"<h2>{html.escape(str(run.get('pipeline', '?')))} "
        f"<small>run {html.escape(str(run.get('run_id')))}</small></h2>"
        f"<p class='{html.escape(status)}'>{html.escape(status)}"
        f"{f' in {duration:.3f}s' if isinstance(duration, int | float) else ''}"
        f" &middot; started {when}</p>"
    )
    rows = []
    for name, task in run.get("tasks", {}).items():
        state = str(task.get("status") or task.get("state") or "waiting")
        took = task.get("duration")
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td class='{html.escape(state)}'>"
            f"{html.escape(state)}</td><td>{'' if took is None else f'{took:.3f}s'}</td>"
            f"<td>{html.escape(str(task.get('worker') or ''))}</td></tr>"
        )
    return (
        head
        + "<table><tr><th>task</th><th>state</th><th>time</th><th>worker</th></tr>"
        + "".join(rows)
        + "</table>"
    )

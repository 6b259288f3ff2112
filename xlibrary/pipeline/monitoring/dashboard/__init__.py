"""A "Pipelines" page in Dask's own dashboard: runs and their tasks, in the pipeline's words.

:class:`PipelinesPlugin` is a scheduler plugin. Where it runs (added by a manager with
monitoring or ``dashboard=True``, by ``xlibrary-pipeline dashboard``, or by
``dask scheduler --preload xlibrary.pipeline.monitoring.dashboard``) the scheduler's dashboard
gets:

* ``/pipelines``: a Bokeh document served by the dashboard's Bokeh server and listed in its
  navigation bar, updated live from a data source the way Dask's own pages are (no page
  reloads). The runs, newest first, one line each (status, task counts, duration, the error
  of a failed run); the newest run (or the one clicked) expanded: each task's state, time,
  worker and, when it failed, its error; a mapped task as one row with its counts;
* ``/pipelines.json``: the same for machines (see :meth:`RunBook.to_json`).

It keeps the last 50 runs and starts the scheduler's task-stream recording, so the status
page's task stream shows runs made before anyone opened it.

States are the pipeline's: ``pending``, ``running``, ``succeeded``, ``failed``, ``skipped``,
``cached``, ``cancelled``. While a run runs they come from the scheduler's transitions of keys
``(task, run_id)`` (``waiting``/``queued``/``no-worker`` → pending, ``processing`` → running,
``memory`` → succeeded, ``erred`` → failed; ``released`` and ``forgotten`` change nothing),
sharpened by the workers' outcome reports (``xlibrary-outcomes``: a task that failed inside
its wrapper, was skipped or came from the cache, as soon as it is known); the end of the run
says the last word. Keys ``(task, run_id, i)`` are the elements of a mapped task: they add up
into their task's row (``"elements": {"succeeded": 9998, "failed": 2}``).

Run events (Dask event topic ``xlibrary-runs``, sent with ``client.log_event`` by
:class:`~xlibrary.pipeline.monitoring.hooks.DashboardPublisher`; small JSON dicts)::

    # when a run starts: its tasks, in order
    {"run_id": "20261130T120000.000000-3fa2c1d0", "pipeline": "orders",
     "status": "running", "started": 1796000000.0,
     "tasks": ["extract", "transform", "load"]}

    # when it ends: how each task went; a failed task's error is its type and the first line
    # of its message (URLs in it with their secrets hidden), never a traceback
    {"run_id": "...", "pipeline": "orders", "status": "failed",   # or succeeded, cancelled
     "finished": 1796000002.5, "duration": 2.5,
     "failed_task": "transform", "error": "ValueError: row 17 has no price",
     "tasks": {"extract": {"status": "succeeded", "duration": 0.8},
               "transform": {"status": "failed", "duration": 0.1,
                             "error": {"type": "ValueError", "message": "row 17 has no price"}},
               "load": {"status": "skipped", "duration": null, "skipped_because": "transform"}}}

A mapped task's entry may add ``"elements": {"succeeded": 9998, "failed": 2}``; unknown keys
are ignored, so either side may be newer.

Bokeh pages in Dask's dashboard are private API of distributed (its ``BokehApplication`` and
navigation ``template_variables``): the plugin mounts its page on the running scheduler's
HTTP server with them, so it needs no setup before the scheduler starts. When they are gone
(another distributed version), it serves a plain HTML page at ``/pipelines`` instead and logs
a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from .events import RUNS_TOPIC, finished_event, started_event
from .plugin import PLUGIN_NAME, PipelinesPlugin
from .runs import WORDS, RunBook

__all__ = [
    "RUNS_TOPIC",
    "WORDS",
    "PipelinesPlugin",
    "RunBook",
    "dask_setup",
    "finished_event",
    "serves_pipelines",
    "started_event",
]

logger = logging.getLogger("xlibrary.pipeline.monitoring.dashboard")


async def dask_setup(server: Any) -> None:
    """``dask scheduler --preload xlibrary.pipeline.monitoring.dashboard``: the scheduler
    serves the Pipelines page from its start, and hears every run of every manager."""
    from distributed import Scheduler

    if not isinstance(server, Scheduler):
        logger.warning(
            "xlibrary.pipeline.monitoring.dashboard is a scheduler preload; %s ignores it "
            "(use `dask scheduler --preload xlibrary.pipeline.monitoring.dashboard`)",
            type(server).__name__,
        )
        return
    if PLUGIN_NAME in server.plugins:
        return
    plugin = PipelinesPlugin()
    server.add_plugin(plugin)
    await plugin.start(server)


def serves_pipelines(client: Any) -> bool:
    """Whether the scheduler of ``client`` already has the Pipelines page (it was started
    with it): then a manager tells it about its runs without being asked to monitor."""
    name = PLUGIN_NAME

    def has_plugin(dask_scheduler: Any) -> bool:  # travels by value: no import there
        return name in dask_scheduler.plugins

    try:
        return bool(client.run_on_scheduler(has_plugin))
    except Exception as exc:  # an old scheduler, a comm hiccup: no page to tell
        logger.debug("cannot ask the scheduler for the Pipelines page: %s", exc)
        return False

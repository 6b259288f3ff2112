"""The scheduler plugin behind the Pipelines page (see the package docstring)."""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ...backends.reporting import OUTCOMES_TOPIC
from .events import RUNS_TOPIC
from .runs import PLUGIN_NAME, RunBook

__all__ = ["PLUGIN_NAME", "PipelinesPlugin"]

logger = logging.getLogger("xlibrary.pipeline.monitoring.dashboard")

PAGE = "pipelines"


class PipelinesPlugin(SchedulerPlugin):
    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.book = RunBook()
        self._page: Any = None  # the Bokeh server of the page, when this plugin mounted it

    async def start(self, scheduler: Any) -> None:
        from distributed.diagnostics.task_stream import TaskStreamPlugin

        if TaskStreamPlugin.name not in scheduler.plugins:
            # The dashboard's task stream records only once someone opens it; record from
            # now, so runs made before the page was opened show on it too.
            scheduler.add_plugin(TaskStreamPlugin(scheduler))  # type: ignore[no-untyped-call]
        app = getattr(scheduler, "http_application", None)
        if app is None:
            return
        from .http import PipelinesHTML, PipelinesJSON

        routes: list[Any] = [(r"/pipelines\.json", PipelinesJSON, {"dask_server": scheduler})]
        if not self._mount_page(scheduler, app):
            routes.append((r"/pipelines", PipelinesHTML, {"dask_server": scheduler}))
        app.add_handlers(r".*", routes)

    def _mount_page(self, scheduler: Any, app: Any) -> bool:
        """Serve the page as a Bokeh document of the scheduler's dashboard, listed in its
        navigation; whether it is (or was already) served so."""
        apps = list(getattr(app, "applications", ()))
        bokeh = [a for a in apps if hasattr(a, "app_paths")]  # BokehTornado servers
        if any(f"/{PAGE}" in a.app_paths for a in bokeh):
            return True
        if not bokeh:  # the scheduler runs without Dask's dashboard: a plain page
            return False
        try:
            from distributed.dashboard.core import BokehApplication
            from distributed.dashboard.scheduler import template_variables
            from tornado.ioloop import IOLoop

            from .page import pipelines_doc

            variables = template_variables(scheduler)
            pages = variables["pages"]
            if PAGE not in pages:  # the navigation bar of every dashboard page
                pages.insert(pages.index("status") + 1 if "status" in pages else 0, PAGE)
            server = BokehApplication(  # type: ignore[no-untyped-call]
                {f"/{PAGE}": pipelines_doc},
                scheduler,
                prefix=getattr(bokeh[0], "prefix", ""),
                template_variables=variables,
            )
            app.add_application(server)
            server.initialize(IOLoop.current())
            server.start()
        except Exception as exc:  # private API of distributed: it may change
            logger.warning(
                "cannot add the Pipelines page to Dask's Bokeh dashboard (%s: %s); serving a "
                "plain HTML page at /%s instead. Use a distributed version this xlibrary "
                "supports for the live page",
                type(exc).__name__,
                exc,
                PAGE,
            )
            return False
        self._page = server
        return True

    async def close(self) -> None:
        if self._page is not None:
            self._page.stop()
            self._page = None

    def log_event(self, topic: str, msg: Any) -> None:
        if topic == RUNS_TOPIC:
            self.book.on_run_event(msg)
        elif topic == OUTCOMES_TOPIC:
            self.book.on_outcome(msg)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if type(key) is tuple and self.book.runs:
            self.book.on_transition(key, start, finish, kwargs)

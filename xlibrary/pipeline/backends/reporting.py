"""Outcome reports from workers, for runs that keep only the final tasks' results.

:class:`OutcomeReporter` is a worker plugin: when a task of a run finishes on a worker, it
sends the task's outcome without its value (status, attempts, timings, failure, metrics) on
the Dask event topic ``xlibrary-outcomes``. The client that runs the pipeline subscribes to
the topic, so it learns how every task went while their results stay on the workers and are
released as soon as no later task needs them.
"""

from __future__ import annotations

from typing import Any

import cloudpickle
from distributed.diagnostics.plugin import WorkerPlugin

from ..keys import run_of, task_of
from ..outcome import Outcome

__all__ = ["OUTCOMES_TOPIC", "OutcomeReporter"]

OUTCOMES_TOPIC = "xlibrary-outcomes"


class OutcomeReporter(WorkerPlugin):
    name = "xlibrary-outcome-reporter"
    idempotent = True

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "memory" or start != "executing":
            return
        task, run = task_of(key), run_of(key)
        if task is None or run is None:
            return
        value = self.worker.data.get(key)
        if type(value) is not Outcome:
            return
        meta = cloudpickle.dumps(value.without_value())
        self.worker.log_event(OUTCOMES_TOPIC, {"run": run, "task": task, "meta": meta})

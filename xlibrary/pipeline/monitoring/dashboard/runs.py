"""What the Pipelines page knows: the last runs and their tasks, in the pipeline's words.

A :class:`RunBook` lives in the scheduler. It is fed run events (``xlibrary-runs``), the
workers' outcome reports (``xlibrary-outcomes``) and the scheduler's transitions of the runs'
keys, all on the scheduler's event loop; the page and ``/pipelines.json`` read it there too,
so it needs no lock. ``version`` grows with every change: a reader that saw it before can
skip its work.
"""

from __future__ import annotations

import ast
import pickle
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ...keys import element_of, run_of, task_of
from .events import one_line

__all__ = ["KEEP", "PLUGIN_NAME", "WORDS", "RunBook", "RunRow", "TaskRow", "book_of"]

KEEP = 50
"""Runs kept: the oldest goes when a new one starts."""

WORDS = (
    "pending", "running", "succeeded", "failed", "skipped", "cached", "cancelled", "not_selected",
)  # fmt: skip
"""A task's states, in the order counts are shown."""

_FROM_DASK: dict[str, str | None] = {
    "released": None,  # before waiting, or after memory/erred: no news
    "waiting": "pending",
    "queued": "pending",
    "no-worker": "pending",
    "processing": "running",
    "memory": "succeeded",  # the run's outcome (or the worker's report) may say otherwise
    "erred": "failed",
    "forgotten": None,
}
_FROM_OUTCOME = {"stale": "pending"}  # a cached result that could not be used: it runs next
_REPR = re.compile(r"^([A-Za-z_][\w.]*)\((.*)\)$", re.S)


@dataclass(slots=True)
class TaskRow:
    """One pipeline task of a run (a mapped task's elements add up here)."""

    name: str
    state: str = "pending"
    duration: float | None = None
    worker: str | None = None
    error: dict[str, str] | None = None
    skipped_because: str | None = None
    elements: dict[int, str] | None = None
    """A mapped task: each element's state."""
    counts: Counter[str] | None = None
    """A mapped task: its elements by state (from ``elements``, or the run's end)."""
    span: tuple[float, float] | None = None
    """A mapped task: first start and last stop of its elements."""
    reported: bool = False
    """The worker's report (or the run's end) said how it went: transitions say no more."""

    def shown_state(self) -> str:
        counts = self.counts
        if not counts or self.reported:
            return self.state
        busy = counts.get("running", 0)
        waiting = counts.get("pending", 0)
        if busy or (waiting and len(counts) > 1):
            return "running"
        if waiting:
            return "pending"
        for word in ("failed", "cancelled", "skipped"):
            if counts.get(word):
                return word
        return "cached" if set(counts) == {"cached"} else "succeeded"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.shown_state(),
            "duration": self.duration,
            "worker": self.worker,
            "error": self.error,
            "skipped_because": self.skipped_because,
        }
        if self.counts is not None:
            out["elements"] = ordered_counts(self.counts)
        return out


@dataclass(slots=True)
class RunRow:
    """One run: what its events said, and its tasks."""

    run_id: str
    pipeline: str = "?"
    status: str = "running"
    started: float | None = None
    finished: float | None = None
    duration: float | None = None
    failed_task: str | None = None
    error: str | None = None
    tasks: dict[str, TaskRow] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status != "running"

    def task(self, name: str) -> TaskRow:
        row = self.tasks.get(name)
        if row is None:
            row = self.tasks[name] = TaskRow(name)
        return row

    def counts(self) -> dict[str, int]:
        return ordered_counts(Counter(row.shown_state() for row in self.tasks.values()))

    def error_line(self) -> str | None:
        """The run's error in one line: its failed task's, else the one the run ended with."""
        row = self.tasks.get(self.failed_task) if self.failed_task else None
        if row is not None and row.error is not None:
            return f"{row.name}: {row.error['type']}: {row.error['message']}"
        return self.error

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "duration": self.duration,
            "counts": self.counts(),
            "failed_task": self.failed_task,
            "error": self.error_line(),
            "tasks": {name: row.to_json() for name, row in self.tasks.items()},
        }


def ordered_counts(counts: Counter[str]) -> dict[str, int]:
    return {word: counts[word] for word in WORDS if counts.get(word)}


class RunBook:
    """The last :data:`KEEP` runs, newest last."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.runs: OrderedDict[str, RunRow] = OrderedDict()
        self.version = 0

    def newest_first(self) -> list[RunRow]:
        return list(reversed(self.runs.values()))

    def to_json(self) -> dict[str, Any]:
        """``{"runs": [...]}``, newest first; each run as :meth:`RunRow.to_json` makes it:
        ``run_id``, ``pipeline``, ``status``, ``started``, ``finished``, ``duration``,
        ``counts`` (tasks by state), ``failed_task``, ``error`` (one line) and ``tasks``:
        by name, in the pipeline's order, ``state``, ``duration``, ``worker``, ``error``
        (``{"type", "message"}``), ``skipped_because`` and, for a mapped task, ``elements``."""
        return {"runs": [run.to_json() for run in self.newest_first()]}

    # -- run events (xlibrary-runs) -----------------------------------------------------
    def on_run_event(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("run_id"), str):
            return
        run = self.runs.get(msg["run_id"])
        if run is None:
            run = self.runs[msg["run_id"]] = RunRow(msg["run_id"])
            while len(self.runs) > self.keep:
                self.runs.popitem(last=False)
        for name in ("pipeline", "status"):
            if isinstance(msg.get(name), str):
                setattr(run, name, msg[name])
        for name in ("started", "finished", "duration"):
            if isinstance(msg.get(name), int | float):
                setattr(run, name, float(msg[name]))
        if isinstance(msg.get("failed_task"), str):
            run.failed_task = msg["failed_task"]
        if isinstance(msg.get("error"), str):
            run.error = one_line(msg["error"])
        tasks = msg.get("tasks")
        if isinstance(tasks, dict):
            for name, facts in tasks.items():
                if isinstance(name, str) and isinstance(facts, dict):
                    self._task_facts(run.task(name), facts, final=run.final)
        elif isinstance(tasks, list):
            for name in tasks:
                if isinstance(name, str):
                    run.task(name)
        self.version += 1

    @staticmethod
    def _task_facts(row: TaskRow, facts: dict[str, Any], *, final: bool) -> None:
        status = facts.get("status")
        if status in WORDS:
            row.state = status
            row.reported = final
        if isinstance(facts.get("duration"), int | float):
            row.duration = float(facts["duration"])
        error = facts.get("error")
        if isinstance(error, dict):
            row.error = {
                "type": one_line(error.get("type") or "Error"),
                "message": one_line(error.get("message") or ""),
            }
        if isinstance(facts.get("skipped_because"), str):
            row.skipped_because = facts["skipped_because"]
        elements = facts.get("elements")
        if isinstance(elements, dict):
            row.counts = Counter(
                {k: int(v) for k, v in elements.items() if k in WORDS and isinstance(v, int)}
            )
            row.elements = None  # the end's counts are the word; forget the elements

    # -- the workers' outcome reports (xlibrary-outcomes) --------------------------------
    def on_outcome(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("task"), str):
            return
        run_id = msg.get("run")
        run = self.runs.get(run_id) if isinstance(run_id, str) else None
        if run is None or run.final or not isinstance(msg.get("meta"), bytes):
            return
        try:  # an Outcome without its value (pickled by the worker)
            outcome = pickle.loads(msg["meta"])
            status = _FROM_OUTCOME.get(outcome.status, outcome.status)
        except Exception:
            return
        if status not in WORDS:
            return
        row = run.task(msg["task"])
        row.state, row.reported = status, status != "pending"
        started, finished = getattr(outcome, "started", None), getattr(outcome, "finished", None)
        if started is not None and finished is not None:
            row.duration = finished - started
        failure = getattr(outcome, "failure", None)
        if status == "failed" and failure is not None:
            row.error = {"type": one_line(failure.type_name), "message": one_line(failure.message)}
        if status == "skipped" and isinstance(getattr(outcome, "cause", None), str):
            row.skipped_because = outcome.cause
        elements = getattr(outcome, "elements", None)  # a mapped task, gathered
        if isinstance(elements, dict):
            row.counts = Counter({k: v for k, v in elements.items() if k in WORDS and v})
            row.elements = None
        self.version += 1

    # -- the scheduler's transitions -----------------------------------------------------
    def on_transition(self, key: Any, start: str, finish: str, facts: dict[str, Any]) -> None:
        """A transition of a key of a run (see :mod:`~xlibrary.pipeline.keys`): ``(task,
        run_id)``, ``(group, run_id, task)``, or ``(task, run_id, i)`` for element ``i`` of a
        mapped task. Called for every key the scheduler moves: cheap."""
        name, run_id = task_of(key), run_of(key)
        if name is None or run_id is None:
            return
        run = self.runs.get(run_id)
        if run is None or run.final:
            return
        row = run.task(name)
        word = _FROM_DASK.get(finish)
        compute = None
        if start == "processing" and finish in ("memory", "erred"):
            compute = next(
                (s for s in facts.get("startstops", ()) if s["action"] == "compute"), None
            )
            worker = facts.get("worker")
            row.worker = worker if isinstance(worker, str) else row.worker
            if finish == "erred" and row.error is None:
                row.error = _error_of(facts.get("exception_text"))
        index = element_of(key)
        if index is not None:
            self._element(row, index, word, compute)
        elif not row.reported:  # the worker's report knows better (retries, waits included)
            if word is not None:
                row.state = word
            if compute is not None:
                row.duration = compute["stop"] - compute["start"]
        self.version += 1

    @staticmethod
    def _element(row: TaskRow, index: Any, word: str | None, compute: Any) -> None:
        if row.elements is None:
            row.elements, row.counts = {}, Counter()
        counts = row.counts
        assert counts is not None
        old = row.elements.get(index)
        new = word or old or "pending"
        if new != old:
            if old is not None:
                counts[old] -= 1
                if counts[old] <= 0:
                    del counts[old]
            counts[new] += 1
            row.elements[index] = new
        if compute is not None:
            first, last = row.span or (compute["start"], compute["stop"])
            row.span = (min(first, compute["start"]), max(last, compute["stop"]))
            row.duration = row.span[1] - row.span[0]


def _error_of(text: Any) -> dict[str, str]:
    """``{"type", "message"}`` from Dask's ``exception_text``, the exception's repr."""
    text = str(text or "")
    match = _REPR.match(text.strip()) if len(text) < 4000 else None
    if match is None:
        return {"type": "Error", "message": one_line(text)}
    args: Any
    try:
        args = ast.literal_eval(f"({match.group(2)},)") if match.group(2) else ()
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        args = (match.group(2),)
    message = str(args[0]) if len(args) == 1 else ", ".join(map(str, args))
    return {"type": match.group(1).rsplit(".", 1)[-1], "message": one_line(message)}


PLUGIN_NAME = "xlibrary-pipelines"


def book_of(scheduler: Any) -> RunBook | None:
    """The run book of the Pipelines plugin on ``scheduler``, if it has one."""
    plugin = getattr(scheduler, "plugins", {}).get(PLUGIN_NAME)
    book = getattr(plugin, "book", None)
    return book if isinstance(book, RunBook) else None

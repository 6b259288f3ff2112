"""The run model: what is known about a run and its tasks, as frozen value objects.

* :class:`TaskRecord` (also exported as ``TaskRun``): how one task went.
* :class:`RunRecord`: how one run went, or is going: its tasks, timings, error, alerts. It is
  what the store keeps (:meth:`RunRecord.to_json` / :meth:`RunRecord.from_json` are the only
  place its JSON form is written or read), what a :class:`~.result.PipelineResult` carries
  besides the values, and what reports, recovery, the web API and the command line read.
* :class:`RunStatus`: what ``pm.get_pipeline_status`` answers, built from a record, from a
  run going in this process, or for a pipeline that has not run yet.

Records keep only what says something: a task's optional fields that are empty are left out
of its JSON, so the records of big pipelines stay small.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._version import __version__
from .states import DONE, RunState, TaskStatus

__all__ = ["Alert", "RunError", "RunRecord", "RunStatus", "TaskRecord", "TaskRun", "TaskState"]

_TASK_STATUS = {status.value: status for status in TaskStatus}
_RUN_STATE = {state.value: state for state in RunState}


def _task_status(value: object) -> TaskStatus:
    return _TASK_STATUS.get(str(value), TaskStatus.SKIPPED)


def _run_state(value: object) -> RunState:
    return _RUN_STATE.get(str(value), RunState.FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """How one task went in one run."""

    name: str
    status: TaskStatus
    attempts: int = 0
    started: float | None = None
    """Wall-clock time (``time.time()``) the first attempt started, where it ran."""
    finished: float | None = None
    error: BaseException | None = field(default=None, compare=False)
    """The task's own exception, when it failed in this process's run (not kept in records:
    ``error_type`` and ``error_message`` say what it was)."""
    error_type: str | None = None
    """The failure's exception type (``ValueError``, ``my_module.MyError``)."""
    error_message: str | None = None
    traceback: str | None = None
    """The failure's traceback as text, starting at the task's own frames."""
    skipped_because: str | None = None
    """For a task skipped after a failure: the failed task upstream of it."""
    reason: str | None = None
    """Why a task was skipped, cached or cancelled, in words."""
    source: str | None = None
    """For a cached task: ``cache:<key>``, or ``run:<run id>`` when an earlier run saved it."""
    saved: bool = False
    """Whether its result was saved in the store under this run."""
    token: str | None = None
    """The cache entry id that stands for its result in downstream cache keys."""
    metrics: Mapping[str, float] | None = None
    """Metrics the task logged with ``pm.log_metric`` (and ``cpu_seconds``), when monitored."""
    peak_memory: int | None = None
    """Peak resident memory, in bytes, of the process while the task ran, when monitored."""
    worker: str | None = None
    """Where it ran, when monitored: a Dask worker's address, or ``local``."""
    params: Mapping[str, Any] | None = None
    """The parameter values it was called with (its keyword-only parameters)."""
    elements: Mapping[str, int] | None = None
    """For a mapped task: how many of its elements ``succeeded`` and ``failed``."""

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the end, retries and waits included."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    @property
    def done(self) -> bool:
        """Whether the task has a value downstream tasks can use (succeeded or cached)."""
        return self.status in DONE

    def without_error(self) -> TaskRecord:
        """The same record without the exception object (its type, message and traceback
        stay, as text)."""
        return self if self.error is None else dataclasses.replace(self, error=None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": str(self.status), "attempts": self.attempts}
        if self.started is not None:
            data["started"], data["finished"] = self.started, self.finished
        for name in _OPTIONAL_TASK_FIELDS:
            value = getattr(self, name)
            if value:
                data[name] = dict(value) if name in ("metrics", "elements") else value
        if self.params:
            data["params"] = _plain(self.params)
        if self.status is TaskStatus.FAILED:
            data["error"] = {
                "type": self.error_type,
                "message": self.error_message,
                "traceback": self.traceback,
            }
        return data

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> TaskRecord:
        error = data.get("error") or {}
        metrics = data.get("metrics")
        params = data.get("params")
        elements = data.get("elements")  # absent from records older than mapped tasks
        return cls(
            name=name,
            status=_task_status(data.get("status")),
            attempts=int(data.get("attempts") or 0),
            started=data.get("started"),
            finished=data.get("finished"),
            error_type=error.get("type"),
            error_message=error.get("message"),
            traceback=error.get("traceback"),
            skipped_because=data.get("skipped_because"),
            reason=data.get("reason"),
            source=data.get("source"),
            saved=bool(data.get("saved")),
            token=data.get("token"),
            metrics=dict(metrics) if isinstance(metrics, Mapping) else None,
            peak_memory=data.get("peak_memory"),
            worker=data.get("worker"),
            params=dict(params) if isinstance(params, Mapping) and params else None,
            elements=(
                {str(k): int(v) for k, v in elements.items()}
                if isinstance(elements, Mapping)
                else None
            ),
        )


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values as JSON holds them: as they are when JSON can, else their repr."""
    out = {}
    for name, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        out[str(name)] = value
    return out


_OPTIONAL_TASK_FIELDS = (
    "saved", "source", "token", "skipped_because", "reason", "metrics", "peak_memory", "worker",
    "elements",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """Something a finished run did that someone should know about (see
    :mod:`~xlibrary.pipeline.monitoring.alerts`)."""

    kind: str
    pipeline: str
    run_id: str
    message: str
    task: str | None = None
    value: float | None = None
    threshold: float | None = None
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True, kw_only=True)
class RunError:
    """Why a run failed: its first failed task's error, or what stopped the run."""

    failed_task: str | None
    message: str
    summary: str
    """One line: the task, the pipeline, the error and the run."""
    stack_trace: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """How one run went (or is going): what the store keeps, and every report reads."""

    run_id: str
    pipeline: str
    status: RunState
    started: float
    finished: float | None = None
    resumed_from: str | None = None
    """The run this one retried or resumed."""
    library_version: str = __version__
    sinks: tuple[str, ...] = ()
    """The final tasks, whose results make the run's final result."""
    order: tuple[str, ...] = ()
    """Every task of the run, in topological order."""
    tasks: Mapping[str, TaskRecord] = field(default_factory=dict)
    """The tasks that ended (all of them once the run has ended), by name, in order."""
    peak_memory: int | None = None
    """Bytes: the highest resident memory of the processes that ran the tasks (monitored)."""
    alerts: tuple[Alert, ...] = ()
    error: RunError | None = None
    params: Mapping[str, Any] | None = None
    """Every parameter value the run used, by name."""
    backend: str | None = None
    """Where the run computed: ``threads``, ``distributed`` (a cluster or a Client), a
    registered backend's name, or ``sequential`` (``parallel=False``: in the calling thread)."""

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    @property
    def success(self) -> bool:
        return self.status is RunState.SUCCEEDED

    @property
    def failed_task(self) -> str | None:
        return None if self.error is None else self.error.failed_task

    def replace(self, **changes: Any) -> RunRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        error = self.error
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": str(self.status),
            "started": self.started,
            "finished": self.finished,
            "duration": self.duration,
            "resumed_from": self.resumed_from,
            "library_version": self.library_version,
            "sinks": list(self.sinks),
            "order": list(self.order),
            "peak_memory": self.peak_memory,
            "alerts": [alert.to_dict() for alert in self.alerts],
            "failed_task": self.failed_task,
            "error": None if error is None else dataclasses.asdict(error),
            "tasks": {name: task.to_json() for name, task in self.tasks.items()},
        }
        if self.params:
            data["params"] = _plain(self.params)
        if self.backend:
            data["backend"] = self.backend
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """The record of ``data`` (a stored record, written by this or an older version)."""
        entries: Mapping[str, Any] = data.get("tasks") or {}
        order = tuple(data.get("order") or entries)
        names = dict.fromkeys([*order, *entries])  # in order, then any the order missed
        error = data.get("error")
        started = data.get("started")
        params = data.get("params")
        return cls(
            run_id=str(data["run_id"]),
            pipeline=str(data["pipeline"]),
            status=_run_state(data.get("status")),
            started=float(started) if started is not None else 0.0,
            finished=data.get("finished"),
            resumed_from=data.get("resumed_from"),
            library_version=str(data.get("library_version") or ""),
            sinks=tuple(data.get("sinks") or ()),
            order=tuple(names),
            tasks={
                name: TaskRecord.from_json(name, entries[name]) for name in names if name in entries
            },
            peak_memory=data.get("peak_memory"),
            alerts=tuple(Alert.from_dict(a) for a in data.get("alerts") or ()),
            error=None
            if not error
            else RunError(
                failed_task=error.get("failed_task"),
                message=str(error.get("message") or ""),
                summary=str(error.get("summary") or ""),
                stack_trace=str(error.get("stack_trace") or ""),
            ),
            params=dict(params) if isinstance(params, Mapping) and params else None,
            backend=data.get("backend"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskState:
    """One task in a :class:`RunStatus`."""

    status: TaskStatus
    duration: float | None = None
    attempts: int | None = None
    params: Mapping[str, Any] | None = None
    """The parameter values the task was called with."""


@dataclass(frozen=True, kw_only=True)
class RunStatus(Mapping[str, Any]):
    """What ``pm.get_pipeline_status`` answers: a run's state and each task's.

    Reads as a dict too (``status["status"]``, ``status["tasks"]["load"]["status"]``): the
    keys of :meth:`to_json`, which is what the web API sends.
    """

    pipeline: str
    run_id: str | None
    """``None`` for a pipeline that has not run yet."""
    status: RunState
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    duration: float | None = None
    failed_task: str | None = None
    error: str | None = None
    """One line: why the run failed or stopped."""
    tasks: Mapping[str, TaskState] = field(default_factory=dict)
    params: Mapping[str, Any] | None = None
    """The run's parameter values, by name (``None``: it has none)."""

    @classmethod
    def of_record(cls, record: RunRecord, *, submitted: float | None = None) -> RunStatus:
        """The status of a recorded run: a run still going lists its unfinished tasks as
        ``pending``."""
        tasks = {
            name: TaskState(
                status=task.status,
                duration=task.duration,
                attempts=task.attempts,
                params=task.params,
            )
            for name, task in record.tasks.items()
        }
        for name in record.order:
            tasks.setdefault(name, TaskState(status=TaskStatus.PENDING))
        error = record.error
        return cls(
            pipeline=record.pipeline,
            run_id=record.run_id,
            status=record.status,
            submitted=submitted,
            started=record.started,
            finished=record.finished,
            duration=record.duration,
            failed_task=record.failed_task,
            error=None if error is None else error.summary,
            tasks={name: tasks[name] for name in (*record.order, *tasks) if name in tasks},
            params=record.params,
        )

    @classmethod
    def not_started(cls, pipeline: str, tasks: list[str] | tuple[str, ...]) -> RunStatus:
        """The status of a pipeline declared here that has not run yet."""
        pending = TaskState(status=TaskStatus.PENDING)
        return cls(
            pipeline=pipeline,
            run_id=None,
            status=RunState.PENDING,
            tasks=dict.fromkeys(tasks, pending),
        )

    def to_json(self) -> dict[str, Any]:
        data = {
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "status": str(self.status),
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
            "duration": self.duration,
            "failed_task": self.failed_task,
            "error": self.error,
            "tasks": {name: _task_state(task) for name, task in self.tasks.items()},
        }
        if self.params is not None:
            data["params"] = _plain(self.params)
        return data

    # -- read as a dict ---------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


def _task_state(task: TaskState) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": str(task.status),
        "duration": task.duration,
        "attempts": task.attempts,
    }
    if task.params:
        data["params"] = _plain(task.params)
    return data


TaskRun = TaskRecord
"""The name ``PipelineResult.tasks`` values went by first: the same class."""

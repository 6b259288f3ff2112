"""Non-blocking runs: ``pm.submit(pipeline)`` returns a :class:`RunHandle` at once.

A handle knows its run id before the run starts, answers ``status()`` (``pending``,
``running``, ``succeeded``, ``failed``, ``cancelled``) with the state of each task while the
run goes, waits with ``result(timeout=)``, and ``cancel()`` stops the run from starting any
further task (tasks already running finish; their results are dropped). A cancelled run keeps
the states of the tasks that finished; the others are ``cancelled``. A manager keeps the
handles of its last ``KEEP_HANDLES`` runs, and the values of its last ``KEEP_VALUES`` finished
ones: older results keep their task states and error text only, so memory stays bounded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from .errors import PipelineError, RunCancelled
from .result import PipelineResult

if TYPE_CHECKING:
    from .monitoring.progress import RunWatch

__all__ = [
    "KEEP_HANDLES",
    "KEEP_VALUES",
    "SUBMIT_THREADS",
    "RunHandle",
    "RunTracker",
    "Submitted",
    "status_of_record",
]

KEEP_HANDLES = 1000
"""Submitted runs whose handles a manager keeps (older ones are answered from the store)."""
KEEP_VALUES = 100
"""Finished submitted runs whose results keep their values; older handles keep the result
without them (:meth:`PipelineResult.without_values`), so a long-lived server holds at most this
many runs' data. Their values are in the store when the runs saved them."""
SUBMIT_THREADS = 32
"""Submitted runs that go at once; more wait their turn (``pending``)."""


_ENDED = frozenset({"succeeded", "cached", "failed", "skipped"})


class RunTracker:
    """Follows a run's tasks as the backend reports them (a run listener): ``pending``,
    ``running`` (reported by the embedded backend; asked of the scheduler on a cluster), then
    how it ended (the embedded backend) or ``finished`` (a cluster, until the run's result)."""

    def __init__(self, tasks: list[str]) -> None:
        self.states: dict[str, str] = dict.fromkeys(tasks, "pending")
        self.watch: RunWatch | None = None

    def watching(self, watch: RunWatch) -> None:
        self.watch = watch

    def current(self) -> dict[str, str]:
        """Each task's state now. On a cluster, which reports tasks only as they end, the
        tasks processing on a worker are asked of the scheduler and count as running."""
        states = dict(self.states)
        if self.watch is not None:
            for name in self.watch.running():
                if states.get(name) == "pending":
                    states[name] = "running"
        return states

    def started(self, task: str) -> None:
        self.states[task] = "running"

    def done(self, task: str) -> None:
        self.states[task] = "finished"

    def outcome(self, task: str, outcome: Any) -> None:
        """How the task ended, where the backend hands over outcomes (the embedded one): its
        state then reads as it will in the result (a cluster's stay ``finished``)."""
        status = getattr(outcome, "status", None)
        if status in _ENDED:
            self.states[task] = status

    def close(self) -> None:
        pass


class RunHandle:
    """A run submitted with ``pm.submit``."""

    def __init__(self, pipeline: str, run_id: str, tasks: list[str]) -> None:
        self.pipeline = pipeline
        self.run_id = run_id
        self.submitted = time.time()
        self.started: float | None = None
        """When the run started going (``None`` while pending)."""
        self.finished: float | None = None
        """When it ended (``None`` until then)."""
        self.tracker = RunTracker(tasks)
        self.cancel_event = threading.Event()
        self.future: Future[PipelineResult] = Future()
        self.released = False
        """Whether the result has been let go of its values (see ``KEEP_VALUES``)."""
        self._release_lock = threading.Lock()

    def begin(self) -> bool:
        """Mark the run as going; False when it was cancelled while pending."""
        if not self.future.set_running_or_notify_cancel():
            return False
        self.started = time.time()
        return True

    def release(self) -> None:
        """Keep the finished result without its values (task states, timings, error text)."""
        with self._release_lock:
            future = self.future
            if self.released or not future.done() or future.cancelled():
                return
            if future.exception() is not None:
                return  # an exception (cancelled, bad pipeline) holds no task values
            light: Future[PipelineResult] = Future()
            light.set_running_or_notify_cancel()
            light.set_result(future.result().without_values())
            self.future = light
            self.released = True

    def result_with_values(self, timeout: float | None = None) -> PipelineResult | None:
        """Like :meth:`result`, or ``None`` when the result has let go of its values."""
        with self._release_lock:  # the flag and the future, read together
            if self.released:
                return None
            future = self.future
        return _wait(self, future, timeout)

    def status(self) -> str:
        """``pending``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        future = self.future  # one future throughout: cancel() may land between two reads
        if not future.done():
            return "running" if future.running() else "pending"
        if future.cancelled():
            return "cancelled"
        error = future.exception()
        if isinstance(error, RunCancelled):
            return "cancelled"
        if error is not None:
            return "failed"
        return "succeeded" if future.result().success else "failed"

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> PipelineResult:
        """The run's result, waiting up to ``timeout`` seconds (TimeoutError after that);
        RunCancelled when it was cancelled."""
        return _wait(self, self.future, timeout)

    def cancel(self) -> bool:
        """Cancel the run: a pending run never starts; a running one starts no further task.
        False when it had already finished."""
        if self.future.done():
            return False
        self.cancel_event.set()
        self.future.cancel()  # succeeds only while pending
        return True

    def describe(self) -> dict[str, Any]:
        """What ``get_pipeline_status`` answers for this run."""
        future = self.future  # one future throughout: it may end between two reads
        out: dict[str, Any] = {
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "status": "pending",
            "submitted": self.submitted,
            "started": self.started,
            "finished": None,
            "duration": None,
            "failed_task": None,
            "error": None,
        }
        if not future.done():
            out["status"] = "running" if future.running() else "pending"
            out["tasks"] = {name: {"status": s} for name, s in self.tracker.current().items()}
            return out
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            return {**out, **self._stopped(error)}
        return {**out, **_from_result(future.result())}

    def _stopped(self, error: BaseException | None) -> dict[str, Any]:
        """How a run that ended with ``error`` went (``None``: cancelled before it started)."""
        partial = getattr(error, "result", None)
        if isinstance(error, RunCancelled) and isinstance(partial, PipelineResult):
            return {**_from_result(partial), "status": "cancelled"}
        # cancelled while pending, or stopped by an error: the tasks as far as they got
        ended = {"pending": "cancelled", "running": "cancelled"}
        tasks = {n: ended.get(s, s) for n, s in self.tracker.current().items()}
        started, finished = self.started, self.finished
        failed = error is not None and not isinstance(error, RunCancelled)
        return {
            "status": "failed" if failed else "cancelled",
            "finished": finished,
            "duration": None if started is None or finished is None else finished - started,
            "error": f"{type(error).__name__}: {error}" if failed else None,
            "tasks": {name: {"status": s} for name, s in tasks.items()},
        }

    def __repr__(self) -> str:
        return f"<RunHandle {self.pipeline!r} run {self.run_id} {self.status()}>"


class Submitted:
    """A manager's submitted runs: the pool they run on (started on first use) and the handles
    of the last ``KEEP_HANDLES`` runs, by run id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: OrderedDict[str, RunHandle] = OrderedDict()
        self._finished: deque[RunHandle] = deque()  # succeeded or failed, oldest first
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def start(self, handle: RunHandle, run: Callable[[RunHandle], PipelineResult]) -> None:
        """Run ``run(handle)`` on the pool; its result or exception completes the handle."""

        def work() -> None:
            if not handle.begin():
                return  # cancelled while pending
            try:
                result = run(handle)
            except BaseException as exc:
                handle.finished = time.time()
                handle.future.set_exception(exc)
                return
            handle.finished = time.time()
            with self._lock:  # the newest KEEP_VALUES finished runs keep their values
                self._finished.append(handle)
                while len(self._finished) > KEEP_VALUES:
                    self._finished.popleft().release()
            handle.future.set_result(result)

        with self._lock:
            if self._closed:
                raise PipelineError("this PipelineManager is closed; create a new one to run")
            self._handles[handle.run_id] = handle
            while len(self._handles) > KEEP_HANDLES:
                self._handles.popitem(last=False)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    SUBMIT_THREADS, thread_name_prefix="xlibrary-submit"
                )
            self._pool.submit(work)

    def get(self, run_id: str) -> RunHandle | None:
        return self._handles.get(run_id)

    def latest(self, pipeline: str) -> RunHandle | None:
        """The handle of the last run of ``pipeline`` submitted here."""
        with self._lock:
            handles = list(self._handles.values())
        return next((h for h in reversed(handles) if h.pipeline == pipeline), None)

    def close(self) -> None:
        """Cancel the runs still going and wait for them to stop."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            handles = list(self._handles.values())
        for handle in handles:
            handle.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _wait(
    handle: RunHandle, future: Future[PipelineResult], timeout: float | None
) -> PipelineResult:
    try:
        return future.result(timeout)
    except CancelledError:
        raise RunCancelled(f"run {handle.run_id} of {handle.pipeline!r} was cancelled") from None
    except FutureTimeout:
        raise TimeoutError(
            f"run {handle.run_id} of {handle.pipeline!r} is still {handle.status()} after "
            f"{timeout:g}s"
        ) from None


def _from_result(result: PipelineResult) -> dict[str, Any]:
    return {
        "status": "succeeded" if result.success else "failed",
        "started": result.started,
        "finished": result.finished,
        "duration": result.duration,
        "failed_task": result.failed_task,
        "error": None if result.error is None else str(result.error),
        "tasks": {
            name: {"status": str(run.status), "duration": run.duration, "attempts": run.attempts}
            for name, run in result.tasks.items()
        },
    }


def not_started(pipeline: str, tasks: list[str]) -> dict[str, Any]:
    """What ``get_pipeline_status`` answers for a pipeline that has not run yet."""
    return {
        "pipeline": pipeline,
        "run_id": None,
        "status": "pending",
        "started": None,
        "finished": None,
        "duration": None,
        "failed_task": None,
        "error": None,
        "tasks": {name: {"status": "pending"} for name in tasks},
    }


def status_of_record(record: dict[str, Any]) -> dict[str, Any]:
    """What ``get_pipeline_status`` answers from a run record of the store."""
    tasks = record.get("tasks") or {}
    if not tasks:  # the record of a run that has started: only the task names
        tasks = {name: {"status": "pending"} for name in record.get("order", [])}
    return {
        "pipeline": record["pipeline"],
        "run_id": record["run_id"],
        "status": record.get("status"),
        "started": record.get("started"),
        "finished": record.get("finished"),
        "duration": record.get("duration"),
        "failed_task": record.get("failed_task"),
        "error": (record.get("error") or {}).get("summary"),
        "tasks": {
            name: {
                "status": task.get("status"),
                "duration": None
                if task.get("started") is None or task.get("finished") is None
                else task["finished"] - task["started"],
                "attempts": task.get("attempts", 0),
            }
            for name, task in tasks.items()
        },
    }

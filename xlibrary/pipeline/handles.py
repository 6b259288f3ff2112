"""Runs going in this process, each with a :class:`RunHandle`; one registry of them.

``pm.submit(pipeline)`` returns a handle at once; ``execute_pipeline`` makes one too, for the
run it waits on, so ``get_pipeline_status`` follows both the same way. A handle knows its run
id before the run starts, answers ``status()`` (``pending``, ``running``, ``succeeded``,
``failed``, ``cancelled``) and ``describe()`` (a :class:`~.records.RunStatus` with each task's
state while the run goes), waits with ``result(timeout=)``, and ``cancel()`` stops the run from
starting any further task (tasks already running finish; their results are dropped). A
cancelled run keeps the states of the tasks that finished; the others are ``cancelled``.

A manager's :class:`RunRegistry` keeps the handles of its last ``KEEP_HANDLES`` runs, and the
values of its last ``KEEP_VALUES`` finished submitted ones: older results keep their task
states and error text only, so memory stays bounded (a blocking run's caller has its values,
so its handle keeps none).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from .errors import PipelineError, RunCancelled
from .records import RunStatus, TaskState
from .result import PipelineResult
from .states import TASK_ENDED, RunState, TaskStatus

if TYPE_CHECKING:
    from .watch import RunWatch

__all__ = [
    "KEEP_HANDLES",
    "KEEP_VALUES",
    "SUBMIT_THREADS",
    "RunHandle",
    "RunRegistry",
    "RunTracker",
]

KEEP_HANDLES = 1000
"""Runs whose handles a manager keeps (older ones are answered from the store)."""
KEEP_VALUES = 100
"""Finished submitted runs whose results keep their values; older handles keep the result
without them (:meth:`PipelineResult.without_values`), so a long-lived server holds at most this
many runs' data. Their values are in the store when the runs saved them."""
SUBMIT_THREADS = 32
"""Submitted runs that go at once; more wait their turn (``pending``)."""


class RunTracker:
    """Follows a run's tasks as the backend reports them (a run listener): ``pending``,
    ``running`` (reported by the embedded backend; asked of the scheduler on a cluster), then
    how it ended (the embedded backend) or ``finished`` (a cluster, until the run's result)."""

    def __init__(self, tasks: list[str]) -> None:
        self.states: dict[str, TaskStatus] = dict.fromkeys(tasks, TaskStatus.PENDING)
        self.watch: RunWatch | None = None

    def watching(self, watch: RunWatch) -> None:
        self.watch = watch

    def current(self) -> dict[str, TaskStatus]:
        """Each task's state now. On a cluster, which reports tasks only as they end, the
        tasks processing on a worker are asked of the scheduler and count as running."""
        states = dict(self.states)
        if self.watch is not None:
            for name in self.watch.running():
                if states.get(name) is TaskStatus.PENDING:
                    states[name] = TaskStatus.RUNNING
        return states

    def started(self, task: str) -> None:
        self.states[task] = TaskStatus.RUNNING

    def done(self, task: str) -> None:
        self.states[task] = TaskStatus.FINISHED

    def outcome(self, task: str, outcome: Any) -> None:
        """How the task ended, where the backend hands over outcomes (the embedded one): its
        state then reads as it will in the result (a cluster's stay ``finished``)."""
        status = getattr(outcome, "status", None)
        if status in TASK_ENDED:  # a TaskStatus (the wrapper's outcomes use its members)
            self.states[task] = status

    def close(self) -> None:
        pass


class RunHandle:
    """A run of this process: submitted with ``pm.submit``, or one ``execute_pipeline`` waits on."""

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
        self.params: Mapping[str, Any] | None = None
        """The run's parameter values, once bound (before it starts)."""
        self._release_lock = threading.Lock()

    def begin(self) -> bool:
        """Mark the run as going; False when it was cancelled while pending."""
        if not self.future.set_running_or_notify_cancel():
            return False
        self.started = time.time()
        return True

    def end(self, result: PipelineResult | None, error: BaseException | None = None) -> None:
        """The run ended, with ``result`` or stopped by ``error``."""
        self.finished = time.time()
        if error is not None:
            self.future.set_exception(error)
        else:
            assert result is not None
            self.future.set_result(result)

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

    def status(self) -> RunState:
        """``pending``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        future = self.future  # one future throughout: cancel() may land between two reads
        if not future.done():
            return RunState.RUNNING if future.running() else RunState.PENDING
        if future.cancelled():
            return RunState.CANCELLED
        error = future.exception()
        if isinstance(error, RunCancelled | KeyboardInterrupt):
            return RunState.CANCELLED
        if error is not None:
            return RunState.FAILED
        return future.result().status

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

    def describe(self) -> RunStatus:
        """What ``get_pipeline_status`` answers for this run."""
        future = self.future  # one future throughout: it may end between two reads
        if not future.done():
            return self._live(RunState.RUNNING if future.running() else RunState.PENDING)
        error = None if future.cancelled() else future.exception()
        if error is None and not future.cancelled():
            return RunStatus.of_record(future.result().record, submitted=self.submitted)
        partial = getattr(error, "result", None)
        if isinstance(partial, PipelineResult):  # cancelled while it ran: as far as it got
            return RunStatus.of_record(partial.record, submitted=self.submitted)
        # cancelled while pending, or stopped by an error before a result: the tasks as far
        # as they got, the rest cancelled
        failed = error is not None and not isinstance(error, RunCancelled | KeyboardInterrupt)
        return self._live(
            RunState.FAILED if failed else RunState.CANCELLED,
            error=f"{type(error).__name__}: {error}" if failed else None,
        )

    def _live(self, state: RunState, *, error: str | None = None) -> RunStatus:
        ended = state not in (RunState.PENDING, RunState.RUNNING)
        tasks = {}
        for name, status in self.tracker.current().items():
            if ended and status in (TaskStatus.PENDING, TaskStatus.RUNNING):
                status = TaskStatus.CANCELLED
            tasks[name] = TaskState(status=status)
        started, finished = self.started, self.finished if ended else None
        return RunStatus(
            pipeline=self.pipeline,
            run_id=self.run_id,
            status=state,
            submitted=self.submitted,
            started=started,
            finished=finished,
            duration=None if started is None or finished is None else finished - started,
            error=error,
            tasks=tasks,
            params=self.params,
        )

    def __repr__(self) -> str:
        return f"<RunHandle {self.pipeline!r} run {self.run_id} {self.status()}>"


class RunRegistry:
    """A manager's runs in this process: the handles of the last ``KEEP_HANDLES`` (submitted
    or blocking), by run id, and the pool submitted runs go on (started on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: OrderedDict[str, RunHandle] = OrderedDict()
        self._finished: deque[RunHandle] = deque()  # submitted, succeeded or failed
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def _add(self, handle: RunHandle) -> None:
        with self._lock:
            if self._closed:
                raise PipelineError("this PipelineManager is closed; create a new one to run")
            self._handles[handle.run_id] = handle
            while len(self._handles) > KEEP_HANDLES:
                self._handles.popitem(last=False)

    def submit(self, handle: RunHandle, run: Callable[[RunHandle], PipelineResult]) -> None:
        """Run ``run(handle)`` on the pool; its result or exception completes the handle."""

        def work() -> None:
            if not handle.begin():
                return  # cancelled while pending
            try:
                result = run(handle)
            except BaseException as exc:
                handle.end(None, exc)
                return
            with self._lock:  # the newest KEEP_VALUES finished runs keep their values
                self._finished.append(handle)
                while len(self._finished) > KEEP_VALUES:
                    self._finished.popleft().release()
            handle.end(result)

        self._add(handle)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    SUBMIT_THREADS, thread_name_prefix="xlibrary-submit"
                )
            self._pool.submit(work)

    def run_here(
        self, handle: RunHandle, run: Callable[[RunHandle], PipelineResult]
    ) -> PipelineResult:
        """Run ``run(handle)`` in this thread (a blocking run), followed like a submitted one;
        its handle keeps the result without values (the caller has them)."""
        self._add(handle)
        handle.begin()
        try:
            result = run(handle)
        except BaseException as exc:
            handle.end(None, exc)
            raise
        handle.end(result.without_values())
        handle.released = True
        return result

    def get(self, run_id: str) -> RunHandle | None:
        return self._handles.get(run_id)

    def latest(self, pipeline: str) -> RunHandle | None:
        """The handle of the newest run of ``pipeline`` here."""
        with self._lock:
            handles = [h for h in self._handles.values() if h.pipeline == pipeline]
        return max(handles, key=lambda h: h.run_id, default=None)

    def close(self) -> None:
        """Cancel the runs still going and wait for the submitted ones to stop."""
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

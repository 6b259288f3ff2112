"""Lower: turn a plan into one Dask graph, and the wrapper each task runs in.

Guarantees:

* One run is one Dask graph, built as a raw ``dask.task_spec`` dict (a few microseconds a task;
  never ``dask.delayed``, whose chains cost the square of their depth to build).
* Each pipeline task is one Dask task keyed ``(task_name, run_id)``: Dask's dashboard, task
  stream and progress bars group by the first element, so they show the task names, and two
  runs never share a key.
* Each Dask task runs a :class:`TaskRunner`, which does what Dask does not: retries with backoff
  and an exception filter, a per-attempt timeout, timing, and turning an exception into a
  failed :class:`Outcome`. It never raises, so one failing task cannot abort the graph: tasks
  downstream of it see the failure and return a skipped outcome without calling their
  function, and independent branches run to the end. With no retry and no timeout it costs
  two clock reads and one small object per task.

The runner and outcome classes are imported by workers, so workers need xlibrary installed.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle
from dask.sizeof import sizeof
from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef

from .errors import TaskError, TaskTimeoutError
from .pipeline import RetryPolicy
from .plan import Plan

__all__ = ["FAILED", "SKIPPED", "SUCCEEDED", "Failure", "Outcome", "TaskRunner", "lower"]

logger = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"

Key = tuple[str, str]


class Failure:
    """Why a task failed, in a form that crosses processes.

    ``exception`` is the task's own exception when it can be pickled; otherwise a
    :class:`TaskError` carrying its type and message. ``traceback`` starts at the user's frames.
    """

    __slots__ = ("exception", "message", "task", "traceback", "type_name")

    def __init__(
        self, task: str, type_name: str, message: str, traceback: str, exception: BaseException
    ) -> None:
        self.task = task
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.exception = exception

    @classmethod
    def from_exception(cls, task: str, exc: BaseException) -> Failure:
        exc_type = type(exc)
        module = exc_type.__module__
        if module in ("builtins", "__main__"):
            type_name = exc_type.__qualname__
        elif module.startswith("xlibrary.pipeline."):  # errors.ValidationError -> public name
            type_name = f"xlibrary.pipeline.{exc_type.__qualname__}"
        else:
            type_name = f"{module}.{exc_type.__qualname__}"
        text = "".join(traceback.format_exception(exc_type, exc, _user_frames(exc.__traceback__)))
        try:
            cloudpickle.dumps(exc)
            kept: BaseException = exc
        except Exception:
            kept = TaskError(f"{type_name}: {exc} (the original exception could not be pickled)")
        return cls(task, type_name, str(exc), text, kept)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            Failure,
            (self.task, self.type_name, self.message, self.traceback, self.exception),
        )


def _user_frames(tb: Any) -> Any:
    """Skip this module's frames at the top of a traceback, so it starts at the user's code."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


class Outcome:
    """What one task of a run produced: its value, or why it has none."""

    __slots__ = ("attempts", "cause", "failure", "finished", "started", "status", "value")

    def __init__(
        self,
        status: str,
        value: Any = None,
        attempts: int = 0,
        started: float | None = None,
        finished: float | None = None,
        failure: Failure | None = None,
        cause: str | None = None,
    ) -> None:
        self.status = status
        self.value = value
        self.attempts = attempts
        self.started = started
        self.finished = finished
        self.failure = failure
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            Outcome,
            (
                self.status,
                self.value,
                self.attempts,
                self.started,
                self.finished,
                self.failure,
                self.cause,
            ),
        )

    def __repr__(self) -> str:
        return f"<Outcome {self.status} attempts={self.attempts}>"

    @property
    def root_cause(self) -> str | None:
        """The failed task that this outcome (failed or skipped) goes back to."""
        if self.failure is not None:
            return self.failure.task
        return self.cause


def _sizeof_outcome(outcome: Outcome) -> int:
    return int(sizeof(outcome.value)) + 100


# Dask's memory accounting (and its dashboard) should see the task's value, not the envelope.
sizeof.register(Outcome)(_sizeof_outcome)  # type: ignore[no-untyped-call]


class TaskRunner:
    """The callable each Dask task runs: one pipeline task with its policy."""

    __slots__ = ("func", "name", "retry", "timeout")

    def __init__(
        self,
        name: str,
        func: Callable[..., Any],
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self.func = func
        self.retry = retry
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskRunner, (self.name, self.func, self.retry, self.timeout))

    def __repr__(self) -> str:
        return f"TaskRunner({self.name!r})"

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        # dask.distributed tokenizes the whole graph on submit, and would otherwise pickle
        # every runner (and the user's function) to do it. Keys already hold the run id, so
        # identity is all the token needs.
        return ("xlibrary.TaskRunner", self.name, id(self))

    def __call__(self, *upstream: Outcome) -> Outcome:
        for outcome in upstream:
            if outcome.status != SUCCEEDED:
                return Outcome(SKIPPED, cause=outcome.root_cause)
        args = [outcome.value for outcome in upstream]
        started = time.time()
        if self.retry is None and self.timeout is None:
            try:
                value = self.func(*args)
            except Exception as exc:
                failure = Failure.from_exception(self.name, exc)
                return Outcome(FAILED, None, 1, started, time.time(), failure)
            return Outcome(SUCCEEDED, value, 1, started, time.time())
        return self._run_with_policy(args, started)

    def _run_with_policy(self, args: list[Any], started: float) -> Outcome:
        retry = self.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                if self.timeout is None:
                    value = self.func(*args)
                else:
                    value = _call_with_timeout(self.func, args, self.timeout, self.name)
            except Exception as exc:
                if (
                    retry is None
                    or attempt > retry.max_retries
                    or not isinstance(exc, retry.retry_on)
                ):
                    failure = Failure.from_exception(self.name, exc)
                    return Outcome(FAILED, None, attempt, started, time.time(), failure)
                wait = retry.delay_before(attempt)
                logger.warning(
                    "task %r attempt %d of %d failed with %s: %s; retrying in %.3gs",
                    self.name,
                    attempt,
                    retry.max_retries + 1,
                    type(exc).__name__,
                    exc,
                    wait,
                )
                if wait:
                    time.sleep(wait)
                continue
            return Outcome(SUCCEEDED, value, attempt, started, time.time())


def _call_with_timeout(func: Callable[..., Any], args: list[Any], timeout: float, name: str) -> Any:
    """Run ``func`` in a helper thread and stop waiting after ``timeout`` seconds.

    Python cannot kill a thread: on timeout the helper (a daemon thread) runs on until the
    function returns, and its result is thrown away.
    """
    box: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box.append((True, context.run(func, *args)))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=target, name=f"xlibrary-task-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TaskTimeoutError(
            f"task {name!r} ran longer than its timeout of {timeout:g}s and was abandoned "
            "(its thread runs on in the background until the function returns); raise "
            "fault_tolerance.task_timeout or the task's timeout= if it needs longer"
        )
    ok, value = box[0]
    if ok:
        return value
    raise value


def lower(plan: Plan, run_id: str) -> tuple[dict[Key, DaskTask], dict[str, Key]]:
    """The Dask graph of one run of ``plan``, and each task's key by task name."""
    keys = {planned.name: (planned.name, run_id) for planned in plan.tasks}
    graph: dict[Key, DaskTask] = {}
    for planned in plan.tasks:
        key = keys[planned.name]
        runner = TaskRunner(planned.name, planned.spec.func, planned.retry, planned.timeout)
        refs = [TaskRef(keys[dep]) for dep in planned.spec.depends_on]
        graph[key] = DaskTask(key, runner, *refs)
    return graph, keys

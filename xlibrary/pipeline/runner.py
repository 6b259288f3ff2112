"""The in-worker task wrapper: what each Dask task of a run executes.

:class:`TaskRunner` does what Dask does not: retries with backoff and an exception filter, a
per-attempt timeout, timing, the cache (look up, then save) and saving intermediate results,
and turning an exception into a failed :class:`Outcome`. It never raises, so one failing task
cannot abort the graph: tasks downstream of it see the failure and return a skipped outcome
without calling their function, and independent branches run to the end. With no retry,
timeout, cache or saving it costs two clock reads and one small object per task.

"An exception" is any ``BaseException``: a task that calls ``sys.exit()`` or raises
``GeneratorExit`` or ``KeyboardInterrupt`` fails with it, and neither the caller's program nor
a Dask worker goes down with it. The one exception is a ``KeyboardInterrupt`` in the main
thread (a sequential run, ``parallel=False``): that is the user's Ctrl-C, and it goes up to
stop the run (the engine records the run ``cancelled`` and raises it on).

On ``dask.distributed`` an outcome travels (to the client, or to a task on another worker)
through :func:`register_with_distributed`'s serializer: a value that cannot be pickled (a
lock, a generator) turns the outcome into the failure of its task, naming the task and the
type, instead of an error that Dask cannot deliver.

:class:`CacheLoader` and :class:`SavedLoader` stand in for tasks whose result is already in
the cache or saved by an earlier run. When that result turns out unusable (expired between
plan and run, corrupt, tampered with) they return a ``stale`` outcome, and the engine runs
the task after all (see :mod:`~xlibrary.pipeline.execute`).

These classes are imported by workers, so workers need xlibrary installed.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle
from dask.sizeof import sizeof

from .errors import ClusterError, TaskError, TaskTimeoutError
from .fingerprint import UnhashableInput, derive_key, input_token
from .monitoring.metrics import TaskContext, current_task, rss_bytes, sampler, summarize
from .pipeline import RetryPolicy
from .store import Cache, RunStore, SerializationError

__all__ = [
    "CACHED",
    "DONE",
    "FAILED",
    "SKIPPED",
    "STALE",
    "SUCCEEDED",
    "CacheLoader",
    "Failure",
    "Monitor",
    "Outcome",
    "Persist",
    "SavedLoader",
    "TaskRunner",
]

logger = logging.getLogger("xlibrary.pipeline.runner")
task_log = logging.getLogger("xlibrary.pipeline.tasks")
"""Detailed logging: one line per task start and end."""

SUCCEEDED = "succeeded"
CACHED = "cached"
FAILED = "failed"
SKIPPED = "skipped"
STALE = "stale"
"""A cached or saved result that could not be used after all: the task must run."""
DONE = frozenset({SUCCEEDED, CACHED})
"""Statuses whose outcome carries a value downstream tasks can use."""


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

    __slots__ = (
        "attempts",
        "cause",
        "failure",
        "finished",
        "metrics",
        "peak_memory",
        "saved",
        "source",
        "started",
        "status",
        "token",
        "value",
        "worker",
    )

    def __init__(
        self,
        status: str,
        value: Any = None,
        attempts: int = 0,
        started: float | None = None,
        finished: float | None = None,
        failure: Failure | None = None,
        cause: str | None = None,
        token: str | None = None,
        source: str | None = None,
        saved: bool = False,
        metrics: dict[str, float] | None = None,
        peak_memory: int | None = None,
        worker: str | None = None,
    ) -> None:
        self.status = status
        self.value = value
        self.attempts = attempts
        self.started = started
        self.finished = finished
        self.failure = failure
        self.cause = cause
        self.token = token
        """Stands for the value in downstream cache keys: the id of its cache entry."""
        self.source = source
        """Where a cached value came from: ``cache:<key>`` or ``run:<run id>``."""
        self.saved = saved
        """Whether the value was saved in the store under this run."""
        self.metrics = metrics
        """Custom metrics the task logged with ``log_metric`` (monitored runs)."""
        self.peak_memory = peak_memory
        """Peak resident memory (bytes) of the process while the task ran (monitored runs)."""
        self.worker = worker
        """Where the task ran: a Dask worker's address, or ``local``."""

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
                self.token,
                self.source,
                self.saved,
                self.metrics,
                self.peak_memory,
                self.worker,
            ),
        )

    def __repr__(self) -> str:
        return f"<Outcome {self.status} attempts={self.attempts}>"

    def without_value(self) -> Outcome:
        """The same outcome with its value left out: how the task went, for reports."""
        return Outcome(
            self.status, None, self.attempts, self.started, self.finished, self.failure,
            self.cause, self.token, self.source, self.saved, self.metrics, self.peak_memory,
            self.worker,
        )  # fmt: skip

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


# -- outcomes on dask.distributed -------------------------------------------------------------
_registered = False


def register_with_distributed() -> None:
    """Send outcomes through ``dask.distributed`` with a way out (idempotent).

    An outcome leaves its worker for the client or for a task on another worker. When its
    value cannot be pickled (a lock, a generator), Dask alone cannot deliver it: the client
    gets a raw ``TypeError`` and the run is lost, and a task on another worker waits for the
    value for ever. Through this serializer what arrives instead is the failure of its task,
    naming the task and the value's type. It costs nothing more when the value pickles; a
    value that cannot be spilled to disk stays in memory, as Dask does without it.
    """
    global _registered
    if _registered:
        return
    serialize: Any = importlib.import_module("distributed.protocol.serialize")

    def dumps(outcome: Outcome, context: dict[str, Any] | None = None) -> Any:
        try:
            return serialize.pickle_dumps(outcome, context)
        except Exception as exc:
            if context is None:  # spilling to disk, not sending: Dask keeps it in memory
                raise
            return serialize.pickle_dumps(_unsendable(outcome, exc), context)

    serialize.dask_serialize.register(Outcome)(dumps)
    serialize.dask_deserialize.register(Outcome)(serialize.pickle_loads)
    _registered = True


def _unsendable(outcome: Outcome, exc: Exception) -> Outcome:
    """The failure standing for ``outcome``, whose value could not be pickled (``exc``)."""
    name, where = _holder_of(outcome)
    kind = type(outcome.value)
    type_name = kind.__qualname__
    if kind.__module__ != "builtins":
        type_name = f"{kind.__module__}.{type_name}"
    who = f"task {name!r}" if name else "a task"
    error = SerializationError(
        f"{who} returned a {type_name} that cannot be sent from the Dask worker"
        f"{' ' + where if where else ''} to where it is needed: {exc}; return plain data "
        "(dicts, lists, DataFrames, arrays), or run the pipeline on threads (the embedded "
        "backend), where results are not serialized"
    )
    error.__cause__ = exc
    return Outcome(
        FAILED, None, outcome.attempts, outcome.started, outcome.finished,
        Failure.from_exception(name, error), metrics=outcome.metrics,
        peak_memory=outcome.peak_memory, worker=outcome.worker,
    )  # fmt: skip


def _holder_of(outcome: Outcome) -> tuple[str, str]:
    """The task whose outcome this is and the address of the worker holding it, looked up in
    the memory of this process's Dask workers (``""`` when not found: the backend names it)."""
    worker_class = getattr(sys.modules.get("distributed.worker"), "Worker", None)
    try:
        for worker in list(getattr(worker_class, "_instances", ())):
            data = getattr(worker.data, "fast", worker.data)  # in memory, never from disk
            for key, value in list(data.items()):
                if value is outcome and type(key) is tuple:
                    return str(key[0]), str(worker.address)
    except Exception:  # a worker closing under us: the name is only for the message
        pass
    return "", ""


@dataclass(frozen=True, slots=True)
class Persist:
    """What a task needs of the store and cache in one run (absent when it needs nothing)."""

    pipeline: str
    run_id: str
    cache: Cache | None = None
    cache_key: str | None = None
    cache_checked: bool = False
    code: str = ""
    """The task's code fingerprint, for derived cache keys ("" for explicit ones)."""
    ttl: float | None = None
    runs: RunStore | None = None
    """Where to save the task's result, when intermediates are saved."""


@dataclass(frozen=True, slots=True)
class Monitor:
    """What a task reports about itself in a monitored run (absent when unmonitored)."""

    run_id: str
    memory: bool = False
    """Record the peak memory of the process while the task ran (from the sampler)."""
    cpu: bool = False
    """Record the CPU seconds the task's thread used, as metric ``cpu_seconds``."""
    exact_memory: bool = False
    """Also read memory exactly at start and end (tasks tracked by a decorator)."""
    real_time: bool = False
    detailed: bool = False
    """Log one line when the task starts and one when it ends."""

    def tracking(self) -> Monitor:
        """The same, for a task tracked by ``@pm.track_performance``: everything measured."""
        return dataclasses.replace(self, memory=True, cpu=True, exact_memory=True)


def _where() -> str:
    """The address of the Dask worker running this thread, or ``local``."""
    worker_module = sys.modules.get("distributed.worker")
    if worker_module is not None:
        state = getattr(worker_module.thread_state, "execution_state", None)
        if state is not None:
            return str(state["worker"].address)
    return "local"


class TaskRunner:
    """The callable each Dask task runs: one pipeline task with its policy."""

    __slots__ = ("func", "monitor", "name", "persist", "retry", "timeout")

    def __init__(
        self,
        name: str,
        func: Callable[..., Any],
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        persist: Persist | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        self.name = name
        self.func = func
        self.retry = retry
        self.timeout = timeout
        self.persist = persist
        self.monitor = monitor

    def __reduce__(self) -> tuple[Any, ...]:
        # The user's code (the function, and the retry policy whose exception classes may be
        # the user's) travels as one cloudpickle payload (by value for __main__ and modules
        # registered with register_pickle_by_value, as `xlibrary-pipeline run` does with its
        # file). Unpickled by _runner_from, it need not load where the runner only passes
        # through (a scheduler); where it cannot load, the task fails with an error naming it
        # and the cause, instead of the worker's connection breaking and the run hanging.
        func = self.func
        code = func.payload if type(func) is _Unloadable else cloudpickle.dumps((func, self.retry))
        return (_runner_from, (self.name, code, self.timeout, self.persist, self.monitor))

    def __repr__(self) -> str:
        return f"TaskRunner({self.name!r})"

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        # dask.distributed tokenizes the whole graph on submit, and would otherwise pickle
        # every runner (and the user's function) to do it. Keys already hold the run id, so
        # identity is all the token needs.
        return ("xlibrary.TaskRunner", self.name, id(self))

    def __call__(self, *upstream: Outcome) -> Outcome:
        for outcome in upstream:
            if outcome.status not in DONE:
                return _skipped_after(outcome)
        args = [outcome.value for outcome in upstream]
        started = time.time()
        if (
            self.persist is None
            and self.retry is None
            and self.timeout is None
            and self.monitor is None
        ):
            try:
                value = self.func(*args)
            except BaseException as exc:  # sys.exit() in a task fails the task, not the run
                if isinstance(exc, KeyboardInterrupt) and _is_ctrl_c():
                    raise
                failure = Failure.from_exception(self.name, exc)
                return Outcome(FAILED, None, 1, started, time.time(), failure)
            return Outcome(SUCCEEDED, value, 1, started, time.time())
        if self.monitor is not None:
            return self._run_monitored(upstream, args, started, self.monitor)
        return self._run(upstream, args, started)

    def _run(self, upstream: tuple[Outcome, ...], args: list[Any], started: float) -> Outcome:
        if self.persist is None:
            return self._run_with_policy(args, started)
        return self._run_persisted(upstream, args, started, self.persist)

    def _run_monitored(
        self, upstream: tuple[Outcome, ...], args: list[Any], started: float, monitor: Monitor
    ) -> Outcome:
        if monitor.memory:
            sampler.ensure_running()
        context = TaskContext(self.name, monitor.run_id, monitor.real_time)
        first = rss_bytes() if monitor.exact_memory else 0
        cpu = time.thread_time() if monitor.cpu else 0.0
        if monitor.detailed:
            task_log.info(
                "task %r started with %s", self.name,
                ", ".join(summarize(a) for a in args) or "no inputs",
            )  # fmt: skip
        token = current_task.set(context)
        try:
            outcome = self._run(upstream, args, started)
        finally:
            current_task.reset(token)
        if monitor.cpu:
            context.metrics.setdefault("cpu_seconds", time.thread_time() - cpu)
        if monitor.memory:
            peak = sampler.peak_between(started) or 0
            if monitor.exact_memory:
                peak = max(peak, first, rss_bytes())
            outcome.peak_memory = peak or None
        outcome.metrics = context.metrics or None
        outcome.worker = _where()
        if monitor.detailed:
            took = time.time() - started
            if outcome.status == FAILED and outcome.failure is not None:
                task_log.info(
                    "task %r failed after %.3fs: %s: %s", self.name, took,
                    outcome.failure.type_name, outcome.failure.message,
                )  # fmt: skip
            else:
                task_log.info(
                    "task %r %s in %.3fs -> %s", self.name, outcome.status, took,
                    summarize(outcome.value),
                )  # fmt: skip
        return outcome

    def _run_persisted(
        self, upstream: tuple[Outcome, ...], args: list[Any], started: float, persist: Persist
    ) -> Outcome:
        key, inputs = None, None
        if persist.cache is not None:
            key, inputs = self._cache_key(upstream, persist)
            if key is not None and not persist.cache_checked:
                found = _quietly(persist.cache.load, key, task=self.name)
                if found is not None:
                    header, value = found
                    return Outcome(
                        CACHED, value, 0, started, time.time(),
                        token=header.entry_id, source=f"cache:{key}",
                    )  # fmt: skip
        outcome = self._run_with_policy(args, started)
        if outcome.status != SUCCEEDED:
            return outcome
        try:
            if persist.cache is not None and key is not None:
                header = persist.cache.save(
                    key, outcome.value, ttl=persist.ttl, task=self.name, pipeline=persist.pipeline,
                    meta={"code": persist.code, "inputs": inputs} if persist.code else None,
                )  # fmt: skip
                if header is not None:  # None: the cache is being skipped, nothing was saved
                    outcome.token = header.entry_id
            if persist.runs is not None:
                persist.runs.save_result(persist.pipeline, persist.run_id, self.name, outcome.value)
                outcome.saved = True
        except SerializationError as exc:
            return Outcome(
                FAILED, None, outcome.attempts, started, time.time(),
                Failure.from_exception(self.name, exc),
            )  # fmt: skip
        except Exception as exc:  # the store is down: the result itself is good
            logger.warning("task %r: could not write its result to the store: %s", self.name, exc)
        return outcome

    def _cache_key(
        self, upstream: tuple[Outcome, ...], persist: Persist
    ) -> tuple[str | None, list[str] | None]:
        if persist.cache_key is not None:
            return persist.cache_key, None
        try:
            inputs = [o.token if o.token is not None else input_token(o.value) for o in upstream]
        except UnhashableInput as exc:
            logger.warning(
                "task %r is not cached: one of its inputs cannot be hashed (%s); give it an "
                "explicit key with @pm.cache_result(key=...)",
                self.name,
                exc,
            )
            return None, None
        return derive_key(self.name, persist.code, inputs), inputs

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
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt) and _is_ctrl_c():
                    raise
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


def _is_ctrl_c() -> bool:
    """Whether a KeyboardInterrupt here can be the user's Ctrl-C: Python delivers it to the
    main thread only, so on any other thread (a pool's, a Dask worker's) the task raised it."""
    return threading.current_thread() is threading.main_thread()


def _skipped_after(upstream: Outcome) -> Outcome:
    """The outcome of a task that does not run because ``upstream`` has no value.

    A value that could not travel to this task's worker fails its task on the way (see
    :func:`register_with_distributed`), after that task already reported success: the skip
    carries that failure, so the run can tell which task really failed and why.
    """
    failure = upstream.failure
    if failure is not None and not isinstance(failure.exception, SerializationError):
        failure = None
    return Outcome(SKIPPED, failure=failure, cause=upstream.root_cause)


def _runner_from(
    name: str,
    code: bytes,
    timeout: float | None,
    persist: Persist | None,
    monitor: Monitor | None,
) -> TaskRunner:
    """A pickled TaskRunner, with its code loaded if it can be here (see its __reduce__)."""
    try:
        func, retry = cloudpickle.loads(code)
    except Exception as exc:  # ModuleNotFoundError mostly; AttributeError for a renamed function
        return TaskRunner(name, _Unloadable(name, code, exc), None, timeout, persist, monitor)
    return TaskRunner(name, func, retry, timeout, persist, monitor)


class _Unloadable:
    """Stands in for a task's code that could not be unpickled in this process; running it
    fails the task with the reason. Pickled again, it is the original code."""

    __slots__ = ("error", "name", "payload")

    def __init__(self, name: str, payload: bytes, error: Exception) -> None:
        self.name = name
        self.payload = payload
        self.error = error

    def __call__(self, *args: Any) -> Any:
        error = self.error
        raise ClusterError(
            f"task {self.name!r} cannot run on {_where()}: its code could not be loaded there "
            f"({type(error).__name__}: {error}). Install what the task's code imports where "
            "the Dask workers run (the same packages and modules as this client), or define "
            "the task in the script you run or in the file given to `xlibrary-pipeline run` "
            "(their functions travel by value)"
        ) from error


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


def _quietly(load: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A cache read that fails (the store is unreachable) is a miss, with a warning."""
    try:
        return load(*args, **kwargs)
    except Exception as exc:
        logger.warning("could not read the cache (%s); treating it as a miss", exc)
        return None


class CacheLoader:
    """Stands in for a task whose result was found in the cache before the run."""

    __slots__ = ("cache", "key", "name")

    def __init__(self, name: str, cache: Cache, key: str) -> None:
        self.name = name
        self.cache = cache
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (CacheLoader, (self.name, self.cache, self.key))

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        return ("xlibrary.CacheLoader", self.name, id(self))

    def __call__(self) -> Outcome:
        started = time.time()
        found = _quietly(self.cache.load, self.key, task=self.name)
        if found is None:
            return Outcome(STALE, cause=self.name)
        header, value = found
        return Outcome(
            CACHED, value, 0, started, time.time(), token=header.entry_id,
            source=f"cache:{self.key}",
        )  # fmt: skip


class SavedLoader:
    """Stands in for a task whose result an earlier run saved in the store."""

    __slots__ = ("name", "pipeline", "run_id", "runs", "token")

    def __init__(
        self, name: str, runs: RunStore, pipeline: str, run_id: str, token: str | None
    ) -> None:
        self.name = name
        self.runs = runs
        self.pipeline = pipeline
        self.run_id = run_id
        self.token = token

    def __reduce__(self) -> tuple[Any, ...]:
        return (SavedLoader, (self.name, self.runs, self.pipeline, self.run_id, self.token))

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        return ("xlibrary.SavedLoader", self.name, id(self))

    def __call__(self) -> Outcome:
        started = time.time()
        try:
            value = self.runs.load_result(self.pipeline, self.run_id, self.name)
        except Exception as exc:
            logger.warning(
                "the result of task %r saved by run %s cannot be used (%s); the task runs again",
                self.name,
                self.run_id,
                exc,
            )
            return Outcome(STALE, cause=self.name)
        return Outcome(
            CACHED, value, 0, started, time.time(), token=self.token,
            source=f"run:{self.run_id}",
        )  # fmt: skip


if "distributed.protocol" in sys.modules:  # a Dask worker (the client's backend registers too)
    register_with_distributed()

"""The in-worker task wrapper: what each Dask task of a run executes.

:class:`TaskWrapper` does what Dask does not: retries with backoff and an exception filter, a
per-attempt timeout, timing, the cache (look up, then save) and saving intermediate results,
a place in a concurrency pool around each attempt (:mod:`~.pools`), and turning an exception
into a failed :class:`~.outcome.Outcome`. It never raises, so one
failing task cannot abort the graph: tasks downstream of it see the failure and return a
skipped outcome without calling their function, and independent branches run to the end.
With no retry, timeout, cache or saving it costs two clock reads and one small object per
task.

A result that is a Dask collection is settled where the task ran (:mod:`~.lazy`); a cached or
saved one is written by the workers (parquet, zarr), its entry by the client at the end.

"An exception" is any ``BaseException``: a task that calls ``sys.exit()`` or raises
``GeneratorExit`` or ``KeyboardInterrupt`` fails with it, and neither the caller's program nor
a Dask worker goes down with it. The one exception is a ``KeyboardInterrupt`` in the main
thread (a sequential run, ``parallel=False``): that is the user's Ctrl-C, and it goes up to
stop the run (the engine records the run ``cancelled`` and raises it on).

On a cluster the user's code (the function, and the retry policy, whose exception classes may
be the user's) travels as one cloudpickle payload, by value for ``__main__`` and for files run
by ``xlibrary-pipeline run``; where it cannot be loaded, the task fails naming it and the
cause, instead of the worker's connection breaking and the run hanging.

These classes are imported by workers, so workers need xlibrary installed.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from .calls import call_in_pool, call_with_timeout
from .datasets import Dataset
from .errors import ClusterError, SerializationError, TaskOutputError
from .fingerprint import UnhashableInput, derive_key, input_token
from .inputs import TaskInputs
from .lazy import is_collection
from .loaders import held, held_collection, opened_or_miss, quietly
from .outcome import Failure, Outcome
from .pipeline import RetryPolicy
from .pools import Pool
from .saving import read_output, source_of_output, write_output
from .states import DONE, TaskStatus
from .store import Cache, RunStore
from .taskmetrics import TaskContext, current_task, rss_bytes, sampler, summarize

__all__ = ["Measures", "TaskStorage", "TaskWrapper"]

logger = logging.getLogger("xlibrary.pipeline.wrapper")
task_log = logging.getLogger("xlibrary.pipeline.tasks")
"""Detailed logging: one line per task start and end."""

SUCCEEDED, CACHED, FAILED, SKIPPED = (
    TaskStatus.SUCCEEDED,
    TaskStatus.CACHED,
    TaskStatus.FAILED,
    TaskStatus.SKIPPED,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStorage:
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
    inputs: TaskInputs | None = None
    """What its parameters and datasets add to its derived key and cache note; a source
    task's output token."""
    output: Dataset | None = None
    """Where to write its result after it succeeds (``save_to``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Measures:
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

    def tracking(self) -> Measures:
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


class TaskWrapper:
    """The callable each Dask task runs: one pipeline task with its policy."""

    __slots__ = ("func", "measures", "name", "pool", "retry", "storage", "timeout")

    def __init__(
        self,
        *,
        name: str,
        func: Callable[..., Any],
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        storage: TaskStorage | None = None,
        measures: Measures | None = None,
        pool: Pool | None = None,
    ) -> None:
        self.name = name
        self.func = func
        self.retry = retry
        self.timeout = timeout
        self.storage = storage
        self.measures = measures
        self.pool = pool

    def __reduce__(self) -> tuple[Any, ...]:
        # The user's code (the function, and the retry policy whose exception classes may be
        # the user's) travels as one cloudpickle payload (by value for __main__ and modules
        # registered with register_pickle_by_value, as `xlibrary-pipeline run` does with its
        # file). Unpickled by _wrapper_from, it need not load where the runner only passes
        # through (a scheduler); where it cannot load, the task fails with an error naming it
        # and the cause, instead of the worker's connection breaking and the run hanging.
        func = self.func
        code = func.payload if type(func) is _Unloadable else cloudpickle.dumps((func, self.retry))
        state = (self.name, code, self.timeout, self.storage, self.measures, self.pool)
        return (_wrapper_from, state)

    def __repr__(self) -> str:
        return f"TaskWrapper({self.name!r})"

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        # dask.distributed tokenizes the whole graph on submit, and would otherwise pickle
        # every runner (and the user's function) to do it. Keys already hold the run id, so
        # identity is all the token needs.
        return ("xlibrary.TaskWrapper", self.name, id(self))

    def __call__(self, *upstream: Outcome) -> Outcome:
        for outcome in upstream:
            if outcome.status not in DONE:
                return _skipped_after(outcome)
        args = [outcome.value for outcome in upstream]
        started = time.time()
        if (
            self.storage is None
            and self.retry is None
            and self.timeout is None
            and self.measures is None
            and self.pool is None
        ):
            try:
                value = self.func(*args)
            except BaseException as exc:  # sys.exit() in a task fails the task, not the run
                if isinstance(exc, KeyboardInterrupt) and _is_ctrl_c():
                    raise
                failure = Failure.from_exception(self.name, exc)
                return Outcome(
                    status=FAILED, attempts=1, started=started, finished=time.time(),
                    failure=failure,
                )  # fmt: skip
            outcome = Outcome(
                status=SUCCEEDED, value=value, attempts=1, started=started, finished=time.time()
            )
            if getattr(type(value), "__dask_graph__", None) is not None:  # a Dask collection?
                return held(outcome, self.name)
            return outcome
        if self.measures is not None:
            return self._run_measured(upstream, args, started, self.measures)
        return self._run(upstream, args, started)

    def _run(self, upstream: tuple[Outcome, ...], args: list[Any], started: float) -> Outcome:
        if self.storage is None:
            return held(self._run_with_policy(args, started), self.name)
        return self._run_stored(upstream, args, started, self.storage)

    def _run_measured(
        self, upstream: tuple[Outcome, ...], args: list[Any], started: float, measures: Measures
    ) -> Outcome:
        if measures.memory:
            sampler.ensure_running()
        context = TaskContext(self.name, measures.run_id, measures.real_time)
        first = rss_bytes() if measures.exact_memory else 0
        cpu = time.thread_time() if measures.cpu else 0.0
        if measures.detailed:
            task_log.info(
                "task %r started with %s", self.name,
                ", ".join(summarize(a) for a in args) or "no inputs",
            )  # fmt: skip
        token = current_task.set(context)
        try:
            outcome = self._run(upstream, args, started)
        finally:
            current_task.reset(token)
        if measures.cpu:
            context.metrics.setdefault("cpu_seconds", time.thread_time() - cpu)
        if measures.memory:
            peak = sampler.peak_between(started) or 0
            if measures.exact_memory:
                peak = max(peak, first, rss_bytes())
            outcome.peak_memory = peak or None
        outcome.metrics = context.metrics or None
        outcome.worker = _where()
        if measures.detailed:
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

    def _run_stored(
        self, upstream: tuple[Outcome, ...], args: list[Any], started: float, storage: TaskStorage
    ) -> Outcome:
        key, inputs = None, None
        if storage.cache is not None:
            key, inputs = self._cache_key(upstream, storage)
            if key is not None and not storage.cache_checked:
                found = quietly(storage.cache.load, key, task=self.name)
                if found is not None:
                    header, value = found
                    source, ok = f"cache:{key}", True
                    if storage.output is not None:  # the entry says where the output lies
                        ok, value = read_output(storage.output, value, self.name)
                        source = source_of_output(storage.output, found[1])
                    else:  # a collection the workers stored is read back lazily
                        ok, value = opened_or_miss(value, self.name)
                    if ok:
                        return held(Outcome(
                            status=CACHED, value=value, started=started, finished=time.time(),
                            token=header.entry_id, source=source,
                        ), self.name)  # fmt: skip
        outcome = self._run_with_policy(args, started)
        if outcome.status != SUCCEEDED:
            return outcome
        if is_collection(outcome.value):  # written by the workers, entries at the end
            return held_collection(
                outcome, self.name, output=storage.output, token=_token_of(storage),
                pipeline=storage.pipeline, run_id=storage.run_id, cache=storage.cache,
                cache_key=key, ttl=storage.ttl, runs=storage.runs,
                meta=_meta(storage, inputs) if storage.code else None,
            )  # fmt: skip
        kept = outcome.value
        if storage.output is not None:
            try:
                kept = write_output(
                    storage.output, outcome.value, storage.run_id, keyed=key is not None
                )
            except Exception as exc:  # a declared output that was not written fails the task
                return self._failed(outcome, exc)
        outcome.token = _token_of(storage) or outcome.token
        try:
            if storage.cache is not None and key is not None:
                header = storage.cache.save(
                    key, kept, ttl=storage.ttl, task=self.name, pipeline=storage.pipeline,
                    meta=_meta(storage, inputs) if storage.code else None,
                )  # fmt: skip
                if header is not None:  # None: the cache is being skipped, nothing was saved
                    outcome.token = header.entry_id
            if storage.runs is not None:
                storage.runs.save_result(storage.pipeline, storage.run_id, self.name, outcome.value)
                outcome.saved = True
        except SerializationError as exc:
            return self._failed(outcome, exc)
        except Exception as exc:  # the store is down: the result itself is good
            logger.warning("task %r: could not write its result to the store: %s", self.name, exc)
        return outcome

    def _failed(self, outcome: Outcome, exc: Exception) -> Outcome:
        return Outcome(
            status=FAILED, attempts=outcome.attempts, started=outcome.started,
            finished=time.time(), failure=Failure.from_exception(self.name, exc),
        )  # fmt: skip

    def _cache_key(
        self, upstream: tuple[Outcome, ...], storage: TaskStorage
    ) -> tuple[str | None, list[str] | None]:
        if storage.cache_key is not None:
            return storage.cache_key, None
        extra: tuple[str, ...] = ()
        if storage.inputs is not None:
            if storage.inputs.problem:
                logger.warning("task %r is not cached: %s", self.name, storage.inputs.problem)
                return None, None
            extra = storage.inputs.extra
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
        return derive_key(self.name, storage.code, inputs, extra), inputs

    def _run_with_policy(self, args: list[Any], started: float) -> Outcome:
        retry = self.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                if self.pool is not None:
                    value = call_in_pool(self.func, args, self.timeout, self.name, self.pool)
                elif self.timeout is None:
                    value = self.func(*args)
                else:
                    value = call_with_timeout(self.func, args, self.timeout, self.name)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt) and _is_ctrl_c():
                    raise
                if (
                    retry is None
                    or attempt > retry.max_retries
                    or not isinstance(exc, retry.retry_on)
                    or isinstance(exc, TaskOutputError)  # the same function returns the same
                ):
                    failure = Failure.from_exception(self.name, exc)
                    return Outcome(
                        status=FAILED, attempts=attempt, started=started,
                        finished=time.time(), failure=failure,
                    )  # fmt: skip
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
            return Outcome(
                status=SUCCEEDED, value=value, attempts=attempt, started=started,
                finished=time.time(),
            )  # fmt: skip


def _token_of(storage: TaskStorage) -> str | None:
    """A dataset's output: its fingerprint stands for it in downstream keys."""
    return storage.inputs.token if storage.inputs is not None else None


def _meta(storage: TaskStorage, inputs: list[str] | None) -> dict[str, Any]:
    """What the cache keeps beside a derived entry, for ``explain_cache``."""
    note = storage.inputs.note if storage.inputs is not None else None
    return {"code": storage.code, "inputs": inputs, **(note or {})}


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
    return Outcome(status=SKIPPED, failure=failure, cause=upstream.root_cause)


def _wrapper_from(
    name: str,
    code: bytes,
    timeout: float | None,
    storage: TaskStorage | None,
    measures: Measures | None,
    pool: Pool | None = None,
) -> TaskWrapper:
    """A pickled TaskWrapper, with its code loaded if it can be here (see its __reduce__)."""
    try:
        func, retry = cloudpickle.loads(code)
    except Exception as exc:  # ModuleNotFoundError mostly; AttributeError for a renamed function
        func, retry = _Unloadable(name, code, exc), None
    return TaskWrapper(
        name=name, func=func, retry=retry, timeout=timeout, storage=storage, measures=measures,
        pool=pool,
    )  # fmt: skip


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

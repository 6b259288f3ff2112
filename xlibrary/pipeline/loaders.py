"""Stand-ins for tasks whose result is already in hand before the run starts.

:class:`CacheLoader` and :class:`SavedLoader` replace, in a run's graph, tasks whose result
was found in the cache or saved by an earlier run. When that result turns out unusable
(expired between plan and run, corrupt, tampered with) they return a ``stale`` outcome, and
the engine runs the task after all (see :mod:`~xlibrary.pipeline.execute`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from .datasets import Dataset
from .fingerprint import input_token
from .lazy import hold, is_collection
from .outcome import Failure, Outcome
from .redact import redact_url
from .states import DONE, STALE, TaskStatus
from .store import Cache, RunStore
from .stored import PendingWrite, abandon, opened, output_write, pending_writes

__all__ = [
    "CacheLoader", "DatasetLoader", "SavedLoader", "held", "held_collection", "opened_or_miss",
    "quietly", "writes_of",
]  # fmt: skip

logger = logging.getLogger("xlibrary.pipeline.wrapper")


def quietly(load: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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
        found = quietly(self.cache.load, self.key, task=self.name)
        try:
            value = None if found is None else opened(found[1])
        except Exception as exc:  # a stored collection that is gone
            logger.warning("the cached result of task %r cannot be read: %s", self.name, exc)
            found = None
        if found is None:
            return Outcome(status=STALE, cause=self.name)
        return held(Outcome(
            status=TaskStatus.CACHED, value=value, started=started, finished=time.time(),
            token=found[0].entry_id, source=f"cache:{self.key}",
        ), self.name)  # fmt: skip


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
            value = opened(self.runs.load_result(self.pipeline, self.run_id, self.name))
        except Exception as exc:
            logger.warning(
                "the result of task %r saved by run %s cannot be used (%s); the task runs again",
                self.name,
                self.run_id,
                exc,
            )
            return Outcome(status=STALE, cause=self.name)
        return held(Outcome(
            status=TaskStatus.CACHED, value=value, started=started, finished=time.time(),
            token=self.token, source=f"run:{self.run_id}",
        ), self.name)  # fmt: skip


class DatasetLoader:
    """Stands in for a task whose result a declared dataset holds: a dataset's source task,
    or a task whose ``save_to`` output is there (the inputs of a run ``from_tasks``)."""

    __slots__ = ("dataset", "name")

    def __init__(self, name: str, dataset: Dataset) -> None:
        self.name = name
        self.dataset = dataset

    def __reduce__(self) -> tuple[Any, ...]:
        return (DatasetLoader, (self.name, self.dataset))

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        return ("xlibrary.DatasetLoader", self.name, id(self))

    def __call__(self) -> Outcome:
        started = time.time()
        try:
            value = self.dataset.load()
        except Exception as exc:
            failure = Failure.from_exception(self.name, exc)
            return Outcome(status=TaskStatus.FAILED, failure=failure, started=started)
        return held(Outcome(
            status=TaskStatus.CACHED, value=value, started=started, finished=time.time(),
            source=f"dataset:{redact_url(self.dataset.url)}",
        ), self.name)  # fmt: skip


def held(outcome: Outcome, task: str, writes: Sequence[PendingWrite] = ()) -> Outcome:
    """``outcome``, its Dask collection (and ``writes`` of it) settled where the task ran
    (:mod:`~.lazy`); a collection that cannot be persisted fails the task."""
    if outcome.status not in DONE or not is_collection(outcome.value):
        return outcome
    try:
        outcome.value, outcome.held = hold(outcome.value, writes)
    except Exception as exc:  # the graph cannot be persisted (or the cluster is gone)
        abandon(writes)
        return Outcome(
            status=TaskStatus.FAILED, attempts=outcome.attempts, started=outcome.started,
            finished=time.time(), failure=Failure.from_exception(task, exc),
        )  # fmt: skip
    if outcome.token is None and outcome.held.keys:  # persisted: its keys say what it is
        outcome.token = input_token(("xlibrary.collection", outcome.held.keys))
    return outcome


def writes_of(outcome: Outcome, task: str, **where: Any) -> list[PendingWrite]:
    """The lazy writes of ``outcome``'s collection to the cache and the run's saved results
    (:func:`~.stored.pending_writes` with ``where``); its token becomes the cache entry's id.
    A collection the writers refuse is not stored, with a warning: the result is good."""
    try:
        writes, outcome.token = pending_writes(outcome.value, task=task, **where)
    except Exception as exc:
        logger.warning("task %r: its result cannot be written to the store: %s", task, exc)
        return []
    return writes


def held_collection(
    outcome: Outcome,
    task: str,
    *,
    output: Dataset | None,
    token: str | None,
    **where: Any,
) -> Outcome:
    """``outcome`` of a task whose result is a Dask collection, settled where it ran and
    written by the workers: to its declared ``output`` (``save_to``; a failed write fails
    the task once the run settles), else to the cache and the run's saved results
    (``where``: pipeline, run_id, cache, cache_key, ttl, runs, meta). Never computed here:
    a nested compute in a worker task can deadlock (issue 14)."""
    if output is None:
        return held(outcome, task, writes_of(outcome, task, **where))
    where.pop("runs", None)  # its output is where it is kept
    try:
        write, entry_id = output_write(outcome.value, output, task=task, **where)
    except Exception as exc:  # the output cannot hold it: the task fails, as a failed save
        return Outcome(
            status=TaskStatus.FAILED, attempts=outcome.attempts, started=outcome.started,
            finished=time.time(), failure=Failure.from_exception(task, exc),
        )  # fmt: skip
    outcome.token = entry_id or token
    return held(outcome, task, [write])


def opened_or_miss(value: Any, task: str) -> tuple[bool, Any]:
    """``(True, value)``, a collection the workers stored opened lazily; ``(False, None)``
    with a warning when it cannot be read (the task runs again)."""
    try:
        return True, opened(value)
    except Exception as exc:
        logger.warning("task %r is not cached: %s; it runs again", task, exc)
        return False, None

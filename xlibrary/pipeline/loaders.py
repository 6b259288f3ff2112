"""Stand-ins for tasks whose result is already in hand before the run starts.

:class:`CacheLoader` and :class:`SavedLoader` replace, in a run's graph, tasks whose result
was found in the cache or saved by an earlier run. When that result turns out unusable
(expired between plan and run, corrupt, tampered with) they return a ``stale`` outcome, and
the engine runs the task after all (see :mod:`~xlibrary.pipeline.execute`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .lazy import hold, is_collection
from .outcome import Outcome
from .states import STALE, TaskStatus
from .store import Cache, RunStore
from .stored import opened

__all__ = ["CacheLoader", "SavedLoader", "loaded", "quietly"]

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
        value = None if found is None else quietly(opened, found[1])
        if found is None or value is None:
            return Outcome(status=STALE, cause=self.name)
        return loaded(Outcome(
            status=TaskStatus.CACHED, value=value, started=started, finished=time.time(),
            token=found[0].entry_id, source=f"cache:{self.key}",
        ))  # fmt: skip


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
        return loaded(Outcome(
            status=TaskStatus.CACHED, value=value, started=started, finished=time.time(),
            token=self.token, source=f"run:{self.run_id}",
        ))  # fmt: skip


def loaded(outcome: Outcome) -> Outcome:
    """``outcome`` of a loader, a Dask collection held as a task's result is (see
    :mod:`~.lazy`): read once into cluster memory, not once per task that uses it."""
    if is_collection(outcome.value):
        outcome.value, outcome.held = hold(outcome.value)
    return outcome

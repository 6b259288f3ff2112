"""The embedded default: Dask's threaded scheduler in this process.

Threads share the GIL: pure-Python CPU-bound tasks take turns rather than run at once, while
tasks that wait (I/O, ``time.sleep``) or release the GIL (NumPy, pandas, most compiled code)
run in parallel. For processes, use ``distributed_mode`` (a LocalCluster of worker processes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.local
import dask.threaded

from ..keys import name_in
from ..lower import Key
from ..outcome import Outcome
from ..settings import Settings
from ..watch import RunWatch, dask_callbacks
from .settle import settle_here

__all__ = ["LocalBackend", "default_num_workers", "run_locally"]


def default_num_workers() -> int:
    """``min(32, cpu_count + 4)``: Python's own default for thread pools that wait on I/O."""
    return min(32, (os.cpu_count() or 1) + 4)


class LocalBackend:
    """Runs graphs on Dask's threaded scheduler, on a thread pool it owns."""

    name = "threads"

    @classmethod
    def from_settings(cls, settings: Settings, **_: Any) -> LocalBackend:
        return cls(settings.num_workers)

    def __init__(self, num_workers: int | None = None) -> None:
        self.num_workers = num_workers or default_num_workers()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The thread pool tasks run on, started on first use."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this local backend is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.num_workers, thread_name_prefix="xlibrary-pipeline"
                )
            return self._pool

    def start(self) -> None:
        self.pool  # noqa: B018 - starts the pool

    def threads(self) -> int:
        """How many tasks run at once."""
        return self.num_workers

    def run(
        self,
        graph: Mapping[Key, Any],
        keys: Mapping[str, Key],
        *,
        parallel: bool = True,
        progress: RunWatch | None = None,
        wanted: Collection[str] | None = None,
        restrictions: Mapping[Key, Mapping[str, float]] | None = None,
        compute: Collection[str] = (),
        hold: Collection[str] = (),
    ) -> dict[str, Outcome]:
        pool = self.pool if parallel else None
        if hold and wanted is not None:  # a later round takes them from here
            wanted = {*wanted, *hold}
        return run_locally(graph, keys, pool, progress=progress, wanted=wanted, compute=compute)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def run_locally(
    graph: Mapping[Key, Any],
    keys: Mapping[str, Key],
    pool: ThreadPoolExecutor | None,
    *,
    progress: RunWatch | None = None,
    wanted: Collection[str] | None = None,
    compute: Collection[str] = (),
) -> dict[str, Outcome]:
    """Compute ``graph`` in this process: on ``pool``'s threads, or in this thread when
    ``pool`` is None. With ``wanted``, only those tasks' outcomes keep their values; the
    others are taken, without their values, as each task finishes, so Dask releases the
    values as soon as no later task needs them. When the run stops early (a cancel, Ctrl-C),
    ``progress.finished`` gets the outcomes of the tasks that had finished. Dask
    collections are settled at the end (:func:`~.settle.settle_here`)."""
    names = list(keys) if wanted is None else [name for name in keys if name in wanted]
    seen: dict[str, Outcome] = {}
    callbacks: list[tuple[Any, ...]] = []
    if progress is not None:
        callbacks.append(dask_callbacks(progress))
    if wanted is not None:
        fetched = {keys[name] for name in names}

        def keep(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if key not in fetched and type(result) is Outcome:
                seen[name_in(key)] = result.without_value()

        callbacks.append((None, None, None, keep, None))
    if progress is not None:
        watch = progress

        def stopped(dsk: Any, state: Any, errored: bool) -> None:
            """Once per run: when it stops early, what had finished (values left out)."""
            if errored:
                for key, value in (state.get("cache") or {}).items():
                    if type(value) is Outcome:
                        watch.finished[name_in(key)] = value.without_value()
                watch.finished.update(seen)

        callbacks.append((None, None, None, None, stopped))
    wanted_keys = [keys[name] for name in names]
    if pool is not None:
        values = dask.threaded.get(graph, wanted_keys, pool=pool, callbacks=callbacks or None)
    else:
        values = dask.local.get_sync(graph, wanted_keys, callbacks=callbacks or None)
    outcomes = dict(zip(names, values, strict=True))
    outcomes.update(seen)
    return settle_here(outcomes, compute, pool=pool)

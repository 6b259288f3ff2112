"""The embedded default: Dask's threaded scheduler in this process.

Threads share the GIL: pure-Python CPU-bound tasks take turns rather than run at once, while
tasks that wait (I/O, ``time.sleep``) or release the GIL (NumPy, pandas, most compiled code)
run in parallel. For processes, use ``distributed_mode`` (a LocalCluster of worker processes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.local
import dask.threaded

from ..lower import Key
from ..monitoring.progress import Progress, dask_callbacks
from ..runner import Outcome

__all__ = ["LocalBackend", "default_num_workers"]


def default_num_workers() -> int:
    """``min(32, cpu_count + 4)``: Python's own default for thread pools that wait on I/O."""
    return min(32, (os.cpu_count() or 1) + 4)


class LocalBackend:
    """Runs graphs on Dask's threaded scheduler, on a thread pool it owns."""

    name = "local"

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

    def run(
        self,
        graph: Mapping[Key, Any],
        keys: Mapping[str, Key],
        *,
        parallel: bool = True,
        progress: Progress | None = None,
    ) -> dict[str, Outcome]:
        names = list(keys)
        wanted = [keys[name] for name in names]
        callbacks = [dask_callbacks(progress)] if progress is not None else None
        if parallel:
            values = dask.threaded.get(graph, wanted, pool=self.pool, callbacks=callbacks)
        else:
            values = dask.local.get_sync(graph, wanted, callbacks=callbacks)
        return dict(zip(names, values, strict=True))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

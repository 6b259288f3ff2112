"""Runs on a cluster that has lost every worker fail instead of waiting for ever.

A cluster with no workers at all for ``no_workers_timeout`` seconds while a run waits (they
died, e.g. nanny-less workers of a task that crashes its process, or never joined) fails the
run: a watcher thread asks the scheduler for its worker count about once a second, and at the
deadline cancels the run's tasks, which fail with a :class:`~..errors.ClusterError` naming
them. It is watched on the client side, because a scheduler we did not start keeps its own
config (Dask's ``distributed.scheduler.no-workers-timeout``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["NoWorkersWatch", "WorkerCount"]

logger = logging.getLogger(__name__)


class WorkerCount:
    """The scheduler's worker count, asked at most every half second whatever the number of
    runs watching it; ``None`` when the scheduler does not answer in time."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._asked = -1.0
        self._count: int | None = None

    def count(self) -> int | None:
        with self._lock:
            if time.monotonic() - self._asked < 0.5:
                return self._count
            client = self._client()
            try:
                info = client.sync(client.scheduler.identity, n_workers=0, callback_timeout=5)
            except Exception:  # a slow or closed scheduler: Dask's own errors say so
                info = None
            count = info.get("n_workers") if isinstance(info, dict) else None
            self._count = count if isinstance(count, int) else None
            self._asked = time.monotonic()
            return self._count


class NoWorkersWatch:
    """Cancels a run's futures once the cluster has had no workers for ``timeout`` seconds."""

    def __init__(
        self,
        client: Any,
        futures: list[Any],
        timeout: float,
        workers: Callable[[], int | None],
    ) -> None:
        self.timeout = timeout
        self.fired = False
        self._client = client
        self._futures = futures
        self._workers = workers
        self._stop = threading.Event()
        thread = threading.Thread(target=self._watch, name="xlibrary-no-workers", daemon=True)
        thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        interval = max(0.05, min(1.0, self.timeout / 4))
        since: float | None = None
        while not self._stop.wait(interval):
            count = self._workers()
            if count is None or count > 0:
                since = None
                continue
            now = time.monotonic()
            since = now if since is None else since
            if now - since >= self.timeout:
                self.fired = True
                try:
                    self._client.cancel(self._futures, reason="no-workers")
                except Exception:  # the client is closing: the run ends anyway
                    logger.debug("could not cancel a run without workers", exc_info=True)
                return

"""A circuit breaker: after a few failures in a row, stop asking a cache for a while.

A cache that hangs or is down would otherwise cost every task its full timeout, on every
lookup, load and save. :class:`Breaker` counts consecutive failures of the backend; at
``threshold`` it *opens*: for ``cooldown`` seconds the cache is skipped (a miss, a save not
made) at no cost, with one warning for the whole outage. After the cool-down the next
operation is tried again; one more failure opens it at once, a success closes it (and says
so). Thread-safe; an open check is one attribute read while the breaker is closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import PipelineError
from ..redact import redact_text, redact_url

__all__ = ["DEFAULT_COOLDOWN", "DEFAULT_THRESHOLD", "DEFAULT_TIMEOUT", "Breaker"]

logger = logging.getLogger("xlibrary.pipeline.cache")

DEFAULT_THRESHOLD = 3
DEFAULT_COOLDOWN = 60.0
DEFAULT_TIMEOUT = 2.0
"""Seconds a networked cache (Redis) may keep one operation waiting."""

_T = TypeVar("_T")


class Breaker:
    """Counts a backend's consecutive failures; open means: skip it until the cool-down ends."""

    def __init__(
        self, url: str, threshold: int = DEFAULT_THRESHOLD, cooldown: float = DEFAULT_COOLDOWN
    ) -> None:
        self.url = url
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._open_until = 0.0  # 0: closed
        self._warned = False  # this outage has had its warning
        self._lock = threading.Lock()

    def allows(self) -> bool:
        """Whether to ask the backend now (closed, or its cool-down is over)."""
        if not self._open_until:
            return True
        if time.monotonic() < self._open_until:
            return False
        with self._lock:
            if self._open_until and time.monotonic() >= self._open_until:
                self._open_until = 0.0
                self._failures = self.threshold - 1  # on trial: one failure opens it again
        return True

    def guard(self, op: Callable[..., _T], *args: Any) -> _T:
        """``op(*args)``, counted: an exception other than our own errors (a bad entry, a
        missing package) is a failure of the backend, and is raised on."""
        try:
            result = op(*args)
        except PipelineError:
            raise
        except Exception as exc:
            self.failed(exc)
            raise
        self.succeeded()
        return result

    def succeeded(self) -> None:
        if not (self._failures or self._warned):
            return
        with self._lock:
            recovered, self._warned, self._failures = self._warned, False, 0
        if recovered:
            logger.info("the cache at %s answers again; tasks use it", redact_url(self.url))

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if self._failures < self.threshold:
                return
            self._open_until = time.monotonic() + self.cooldown
            first, self._warned = not self._warned, True
        why = redact_text(f"{type(exc).__name__}: {exc}", self.url)
        if first:
            logger.warning(
                "the cache at %s failed %d time(s) in a row (last: %s); tasks run without it "
                "for %gs, then it is tried again (caching.failure_threshold, "
                "caching.failure_cooldown, caching.redis_timeout)",
                redact_url(self.url),
                self._failures,
                why,
                self.cooldown,
            )
        else:
            logger.debug("the cache at %s still fails (%s)", redact_url(self.url), why)

"""Persistence: the fsspec result store, the result cache, run records and intermediates.

``open_store``, ``open_runs`` and ``open_cache`` return one object per process for the same
arguments, and the objects pickle as those calls: a task on a worker that unpickles them
reuses the worker's own connection rather than opening one per task.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from typing import Any

from ..errors import BadEntry, SerializationError
from ..extensions import caches
from ..settings import Settings
from .breaker import DEFAULT_COOLDOWN, DEFAULT_THRESHOLD, DEFAULT_TIMEOUT
from .cache import Cache, CacheBackend, FsCacheBackend, Lookup
from .codec import EntryHeader
from .fs import FsStore, default_store_url, open_store
from .runs import RunStore

__all__ = [
    "BadEntry",
    "Cache",
    "CacheBackend",
    "EntryHeader",
    "FsCacheBackend",
    "FsStore",
    "Lookup",
    "RunStore",
    "SerializationError",
    "cache_of",
    "default_store_url",
    "open_cache",
    "open_runs",
    "open_store",
    "runs_of",
]

Options = tuple[tuple[str, Any], ...]

logger = logging.getLogger(__name__)
_warned_writable: set[str] = set()
_warned_lock = threading.Lock()


def _items(options: Mapping[str, Any] | None) -> Options:
    return tuple(sorted((options or {}).items()))


def open_runs(
    url: str, storage_options: Mapping[str, Any] | None = None, secret: bytes | None = None
) -> RunStore:
    return _runs(url, _items(storage_options), secret)


@functools.lru_cache(maxsize=32)
def _runs(url: str, options: Options, secret: bytes | None) -> RunStore:
    runs = RunStore(open_store(url, dict(options)), secret=secret)
    _warn_if_others_can_write(runs.store, secret)
    runs.opened_by = (open_runs, (url, dict(options), secret))
    return runs


def open_cache(
    kind: str,
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    secret: bytes | None = None,
    default_ttl: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    failure_threshold: int = DEFAULT_THRESHOLD,
    failure_cooldown: float = DEFAULT_COOLDOWN,
) -> Cache:
    """The cache of ``kind`` (``"fsspec"``: the store at ``url``; ``"redis"``: Redis at ``url``,
    each operation waiting at most ``timeout`` seconds; or a cache backend registered in
    :data:`~xlibrary.pipeline.extensions.caches`), skipped for ``failure_cooldown`` seconds
    after ``failure_threshold`` failures in a row."""
    breaker = (timeout, failure_threshold, failure_cooldown)
    return _cache(kind, url, _items(storage_options), secret, default_ttl, breaker)


@functools.lru_cache(maxsize=32)
def _cache(
    kind: str,
    url: str,
    options: Options,
    secret: bytes | None,
    default_ttl: float | None,
    breaker: tuple[float, int, float],
) -> Cache:
    timeout, threshold, cooldown = breaker
    backend: CacheBackend = caches.get(kind).open(url, dict(options), timeout)
    if isinstance(backend, FsCacheBackend):
        _warn_if_others_can_write(backend.store, secret)
    cache = Cache(
        backend,
        secret=secret,
        default_ttl=default_ttl,
        failure_threshold=threshold,
        failure_cooldown=cooldown,
    )
    cache.opened_by = (open_cache, (kind, url, dict(options), secret, default_ttl, *breaker))
    return cache


def _warn_if_others_can_write(store: FsStore, secret: bytes | None) -> None:
    """Once per store and process: unsigned pickles in a directory others can write are code
    that others can make this process run."""
    if secret is not None:
        return
    where = store.writable_by_others()
    if where is None:
        return
    with _warned_lock:
        if store.root in _warned_writable:
            return
        _warned_writable.add(store.root)
    logger.warning(
        "the store %s can be written by other users (%s is group- or world-writable) and no "
        "caching.secret is set: loading a pickled entry runs code, so anyone who can write "
        "there can run code in this process; set caching.secret (or XLIBRARY_CACHE_SECRET) "
        "to sign entries, or make the directory private (chmod go-w)",
        store.root,
        where,
    )


def runs_of(settings: Settings, default_url: str) -> RunStore:
    """The run records and saved results ``settings`` name (``store.url``, else
    ``default_url``)."""
    store = settings.store
    return open_runs(store.url or default_url, store.storage_options, _secret(settings))


def cache_of(settings: Settings, default_url: str) -> Cache | None:
    """The result cache ``settings`` name, or ``None`` when ``caching.enabled`` is off."""
    caching = settings.caching
    if not caching.enabled:
        return None
    breaker = (caching.redis_timeout, caching.failure_threshold, caching.failure_cooldown)
    if caching.cache_type == "redis":
        url, options = caching.redis_url, {}
    else:  # in the store (a registered cache type gets its URL and options too)
        url, options = settings.store.url or default_url, settings.store.storage_options
    return open_cache(caching.cache_type, url, options, _secret(settings), caching.ttl, *breaker)


def _secret(settings: Settings) -> bytes | None:
    secret = settings.caching.secret
    return secret.encode() if secret else None

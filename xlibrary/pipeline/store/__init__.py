"""Persistence: the fsspec result store, the result cache, run records and intermediates.

``open_store``, ``open_runs`` and ``open_cache`` return one object per process for the same
arguments, and the objects pickle as those calls: a task on a worker that unpickles them
reuses the worker's own connection rather than opening one per task.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .cache import Cache, CacheBackend, FsCacheBackend, Lookup
from .codec import BadEntry, EntryHeader, SerializationError
from .fs import FsStore, default_store_url
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
    "default_store_url",
    "open_cache",
    "open_runs",
    "open_store",
]

Options = tuple[tuple[str, Any], ...]


def _items(options: Mapping[str, Any] | None) -> Options:
    return tuple(sorted((options or {}).items()))


def open_store(url: str, storage_options: Mapping[str, Any] | None = None) -> FsStore:
    return _store(url, _items(storage_options))


@functools.lru_cache(maxsize=32)
def _store(url: str, options: Options) -> FsStore:
    return FsStore(url, dict(options))


def open_runs(
    url: str, storage_options: Mapping[str, Any] | None = None, secret: bytes | None = None
) -> RunStore:
    return _runs(url, _items(storage_options), secret)


@functools.lru_cache(maxsize=32)
def _runs(url: str, options: Options, secret: bytes | None) -> RunStore:
    runs = RunStore(_store(url, options), secret=secret)
    runs.opened_by = (open_runs, (url, dict(options), secret))
    return runs


def open_cache(
    kind: str,
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    secret: bytes | None = None,
    default_ttl: float | None = None,
) -> Cache:
    """The cache of ``kind`` (``"fsspec"``: the store at ``url``; ``"redis"``: Redis at ``url``)."""
    return _cache(kind, url, _items(storage_options), secret, default_ttl)


@functools.lru_cache(maxsize=32)
def _cache(
    kind: str, url: str, options: Options, secret: bytes | None, default_ttl: float | None
) -> Cache:
    backend: CacheBackend
    if kind == "redis":
        from .redis import RedisCacheBackend

        backend = RedisCacheBackend(url)
    else:
        backend = FsCacheBackend(_store(url, options))
    cache = Cache(backend, secret=secret, default_ttl=default_ttl)
    cache.opened_by = (open_cache, (kind, url, dict(options), secret, default_ttl))
    return cache

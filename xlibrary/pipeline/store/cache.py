"""The result cache: entries under keys, with a TTL, on the fsspec store or in Redis.

:class:`Cache` holds the policy (TTL, signing, what a bad entry means) and talks to a
:class:`CacheBackend`, which only keeps bytes: :class:`FsCacheBackend` (the store, the default)
and ``RedisCacheBackend`` (``cache_type: "redis"``). Both pass one contract test suite.

Guarantees: an expired entry is never returned; a corrupt, truncated, foreign or tampered
entry, or one that belongs to another key, is reported as a miss with a warning and deleted,
never returned and never a crash.
Besides entries, the cache keeps for each task the facts of its last entry (code fingerprint,
input token, key), so that :meth:`Cache.explain` can say why a task misses.

A Dask collection is not an entry's payload: the workers write it into the store beside the
entries (:meth:`Cache.collection_place`: ``cache/collections/ab/<key digest>/<entry id>.parquet``)
and the entry, written once they are done, names it (:class:`~.codec.StoredCollection`).
Deleting, replacing or pruning an entry deletes its directory too. Only a cache on the store
keeps collections (a Redis cache keeps bytes).

A cache that fails ``failure_threshold`` times in a row (down, or hung past its timeout) is
skipped for ``failure_cooldown`` seconds (:mod:`.breaker`): lookups and loads miss and saves
are not made, at no cost and with one warning, so a broken cache slows a run by a few
timeouts at most, never one per task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..errors import BadEntry
from ..redact import redact_url
from . import codec
from .breaker import DEFAULT_COOLDOWN, DEFAULT_THRESHOLD, Breaker
from .codec import EntryHeader, StoredCollection
from .fs import FsStore, open_store

__all__ = ["Cache", "CacheBackend", "FsCacheBackend", "Lookup"]

logger = logging.getLogger("xlibrary.pipeline.cache")

_T = TypeVar("_T")
SKIPPED = "cache skipped (it failed several times in a row; asked again after its cool-down)"


class CacheBackend(Protocol):
    """Keeps entries (header bytes and payload) under string keys."""

    url: str

    def read_header(self, key: str) -> bytes | None:
        """The header bytes of ``key``'s entry, without reading its payload."""
        ...

    def read(self, key: str) -> tuple[bytes, bytes] | None:
        """``(header bytes, payload)`` of ``key``'s entry, or ``None``."""
        ...

    def write(self, key: str, header: bytes, payload: bytes, ttl: float | None) -> None:
        """Store an entry atomically; the backend may drop it once ``ttl`` has passed."""
        ...

    def delete(self, key: str) -> bool: ...

    def keys(self) -> Iterator[str]:
        """Every key with an entry (expired ones included until pruned)."""
        ...

    def write_note(self, name: str, data: bytes) -> None:
        """Keep a small note (the facts of a task's last entry)."""
        ...

    def read_note(self, name: str) -> bytes | None: ...


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class FsCacheBackend:
    """Entries as files on the fsspec store: ``cache/ab/abcd....entry``."""

    @classmethod
    def open(cls, url: str, storage_options: Mapping[str, Any], timeout: float) -> FsCacheBackend:
        """The cache in the store at ``url`` (``timeout`` is the filesystem's own)."""
        return cls(open_store(url, storage_options))

    def __init__(self, store: FsStore) -> None:
        self.store = store
        self.url = store.url

    def __reduce__(self) -> tuple[Any, ...]:
        return (FsCacheBackend, (self.store,))

    def _path(self, key: str) -> str:
        digest = _digest(key)
        return f"cache/entries/{digest[:2]}/{digest}.entry"

    def read_header(self, key: str) -> bytes | None:
        path = self._path(key)
        data = self.store.read_prefix(path, 4096)  # headers are ~500 bytes: one read
        if data is None:
            return None
        end = codec.PREFIX_SIZE + codec.header_length(data)
        if len(data) < end:
            data = self.store.read_prefix(path, end)
            if data is None or len(data) < end:
                raise BadEntry("entry is truncated inside its header")
        return data[codec.PREFIX_SIZE : end]

    def read(self, key: str) -> tuple[bytes, bytes] | None:
        blob = self.store.read(self._path(key))
        return None if blob is None else codec.split(blob)

    def write(self, key: str, header: bytes, payload: bytes, ttl: float | None) -> None:
        self.store.write(self._path(key), codec.frame(header, payload))

    def delete(self, key: str) -> bool:
        deleted = self.store.delete(self._path(key))
        self.store.remove_tree(self._collections(key))  # a collection the entry named
        return deleted

    def _collections(self, key: str) -> str:
        digest = _digest(key)
        return f"cache/collections/{digest[:2]}/{digest}"

    def place_collection(
        self, key: str, entry_id: str, fmt: str, extension: str
    ) -> StoredCollection:
        """Where the workers write the collection of ``key``'s entry ``entry_id``."""
        return self.resolve(
            StoredCollection(fmt, f"{self._collections(key)}/{entry_id}{extension}")
        )

    def resolve(self, stored: StoredCollection) -> StoredCollection:
        """``stored`` with the URL and options to open it with."""
        return dataclasses.replace(
            stored, url=self.store.url_of(stored.path), storage_options=self.store.storage_options
        )

    def drop_collections(self, key: str, keep: str | None = None) -> None:
        """Delete the collections written for ``key``, but the one at path ``keep``."""
        folder = self._collections(key)
        for name in self.store.listdir(folder):
            if keep is None or f"{folder}/{name}" != keep:
                self.store.remove_tree(f"{folder}/{name}")

    def drop_orphan_collections(self, live: set[tuple[str, str]]) -> None:
        """Delete the collections that no live entry (``(key, entry id)``) names: left by
        a run that stopped before its entry was written."""
        kept = {f"{self._collections(key)}/{entry_id}" for key, entry_id in live}
        for fan in self.store.listdir("cache/collections"):
            for digest in self.store.listdir(f"cache/collections/{fan}"):
                folder = f"cache/collections/{fan}/{digest}"
                for name in self.store.listdir(folder):
                    if f"{folder}/{name.rpartition('.')[0] or name}" not in kept:
                        self.store.remove_tree(f"{folder}/{name}")

    def keys(self) -> Iterator[str]:
        for path in self.store.files("cache/entries"):
            try:
                prefix = self.store.read_prefix(path, 1 << 16)
                if prefix is None:
                    continue
                length = codec.header_length(prefix)
                yield codec.read_header(prefix[codec.PREFIX_SIZE : codec.PREFIX_SIZE + length]).key
            except BadEntry:
                logger.warning("removing unreadable cache file %s", path)
                self.store.delete(path)

    def write_note(self, name: str, data: bytes) -> None:
        self.store.write(f"cache/notes/{_digest(name)}.json", data)

    def read_note(self, name: str) -> bytes | None:
        return self.store.read(f"cache/notes/{_digest(name)}.json")


@dataclass(frozen=True)
class Lookup:
    """What a look at one key found, without loading the value."""

    key: str
    hit: bool
    reason: str
    """``"hit"``, ``"no entry"``, ``"expired"``, or why the entry is unusable."""
    header: EntryHeader | None = None


class Cache:
    """Cache policy over a backend: TTL, signing, and what a bad entry means."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        secret: bytes | None = None,
        default_ttl: float | None = None,
        failure_threshold: int = DEFAULT_THRESHOLD,
        failure_cooldown: float = DEFAULT_COOLDOWN,
    ) -> None:
        self.backend = backend
        self.secret = secret
        self.default_ttl = default_ttl
        self.breaker = Breaker(backend.url, failure_threshold, failure_cooldown)
        self.opened_by: tuple[Any, ...] | None = None
        """``(factory, args)`` when made by ``open_cache``: pickles as that call."""

    def __reduce__(self) -> tuple[Any, ...]:
        if self.opened_by is not None:
            return self.opened_by
        breaker = self.breaker
        args = (self.backend, self.secret, self.default_ttl, breaker.threshold, breaker.cooldown)
        return (_rebuild, args)

    def __repr__(self) -> str:
        return f"<Cache {redact_url(self.backend.url)}>"

    def lookup(self, key: str, *, now: float | None = None) -> Lookup:
        """Whether ``key`` has a live entry, from its header alone."""
        if not self.breaker.allows():
            return Lookup(key, False, SKIPPED)
        return self._look(key, now, self.breaker.guard)

    def _look(self, key: str, now: float | None, ask: Callable[..., Any]) -> Lookup:
        try:
            raw = ask(self.backend.read_header, key)
        except BadEntry as exc:
            self._discard(key, str(exc))
            return Lookup(key, False, f"unusable entry ({exc})")
        if raw is None:
            return Lookup(key, False, "no entry")
        try:
            header = codec.read_header(raw)
            codec.check_header(header, {"key": key})
        except BadEntry as exc:
            self._discard(key, str(exc))
            return Lookup(key, False, f"unusable entry ({exc})")
        if header.expired(now):
            return Lookup(key, False, "expired", header)
        return Lookup(key, True, "hit", header)

    def load(self, key: str, *, task: str | None = None) -> tuple[EntryHeader, Any] | None:
        """``(header, value)`` of a live, whole entry for ``key``; ``None`` on a miss.

        An expired entry is deleted; a bad one is deleted with a warning.
        """
        if not self.breaker.allows():
            return None
        try:
            found = self.breaker.guard(self.backend.read, key)
            if found is None:
                return None
            header, value = codec.decode_entry(*found, secret=self.secret, expect={"key": key})
        except BadEntry as exc:
            self._discard(key, str(exc), task=task)
            return None
        if header.expired():
            self.backend.delete(key)
            return None
        if isinstance(value, StoredCollection):
            resolve = getattr(self.backend, "resolve", None)
            if resolve is None:
                self._discard(key, "it names a collection, and this cache keeps none", task=task)
                return None
            value = resolve(value)
        return header, value

    def collection_place(
        self, key: str, entry_id: str, fmt: str, extension: str
    ) -> StoredCollection | None:
        """Where the workers write a Dask collection that entry ``entry_id`` of ``key`` will
        name, as the dataset format ``fmt`` (``parquet``, ``zarr``, ``npy``); ``None`` when
        this cache keeps no collections (Redis). Save the entry once the data is written:
        ``save(key, place, entry_id=entry_id)``."""
        place = getattr(self.backend, "place_collection", None)
        return None if place is None else place(key, entry_id, fmt, extension)

    def save(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        task: str | None = None,
        pipeline: str | None = None,
        meta: dict[str, Any] | None = None,
        entry_id: str | None = None,
    ) -> EntryHeader | None:
        """Store ``value`` under ``key`` and return its header (``None``: the cache is being
        skipped, nothing was stored); raises SerializationError if it cannot be. ``entry_id``
        is the id handed out before the write (a collection's, see :meth:`collection_place`).
        """
        if not self.breaker.allows():
            return None
        ttl = ttl if ttl is not None else self.default_ttl
        header, header_bytes, payload = codec.encode_entry(
            key, value, ttl=ttl, task=task, pipeline=pipeline, meta=meta, secret=self.secret,
            entry_id=entry_id,
        )  # fmt: skip
        self.breaker.guard(self.backend.write, key, header_bytes, payload, ttl)
        drop = getattr(self.backend, "drop_collections", None)
        if isinstance(value, StoredCollection) and drop is not None:
            drop(key, keep=value.path)  # the collection of the entry this one replaced
        if task is not None and pipeline is not None and meta:  # derived keys: for explain
            note = {
                "key": key,
                "created": header.created,
                "expires": header.expires,
                **(meta or {}),
            }
            self.backend.write_note(f"{pipeline}\x00{task}", json.dumps(note).encode())
        return header

    def last_entry_of(self, pipeline: str, task: str) -> dict[str, Any] | None:
        """The facts kept about the last entry ``task`` of ``pipeline`` wrote, if any."""
        if not self.breaker.allows():
            return None
        raw = self.breaker.guard(self.backend.read_note, f"{pipeline}\x00{task}")
        if raw is None:
            return None
        try:
            note: dict[str, Any] = json.loads(raw)
        except ValueError:
            return None
        return note

    def delete(self, key: str) -> bool:
        return self.backend.delete(key)

    def headers(self) -> Iterator[EntryHeader]:
        """Headers of every entry, expired ones included."""
        for key in list(self.backend.keys()):
            found = self._look(key, None, _call)  # every entry, whatever the breaker says
            if found.header is not None:
                yield found.header

    def clear(self, *, pipeline: str | None = None, task: str | None = None) -> int:
        """Delete entries (of one pipeline, or one task of it); returns how many."""
        removed = 0
        for header in list(self.headers()):
            if pipeline is not None and header.pipeline != pipeline:
                continue
            if task is not None and header.task != task:
                continue
            removed += self.backend.delete(header.key)
        return removed

    def prune(self, *, now: float | None = None) -> int:
        """Delete expired entries (and collections no entry names); returns how many."""
        now = time.time() if now is None else now
        headers = list(self.headers())
        removed = sum(self.backend.delete(h.key) for h in headers if h.expired(now))
        orphans = getattr(self.backend, "drop_orphan_collections", None)
        if orphans is not None:
            orphans({(h.key, h.entry_id) for h in headers if not h.expired(now)})
        return removed

    def _discard(self, key: str, why: str, *, task: str | None = None) -> None:
        who = f" of task {task!r}" if task else ""
        logger.warning(
            "cache entry %r%s is unusable and was removed: %s; the task recomputes", key, who, why
        )
        try:
            self.backend.delete(key)
        except Exception:  # a read-only store: the miss still stands
            logger.debug("could not delete cache entry %r", key, exc_info=True)


def _call(op: Callable[..., _T], *args: Any) -> _T:
    return op(*args)


def _rebuild(
    backend: CacheBackend,
    secret: bytes | None,
    default_ttl: float | None,
    failure_threshold: int,
    failure_cooldown: float,
) -> Cache:
    return Cache(
        backend,
        secret=secret,
        default_ttl=default_ttl,
        failure_threshold=failure_threshold,
        failure_cooldown=failure_cooldown,
    )

"""Dask collections in the store: written by the workers, named by an entry, read lazily.

A task's Dask collection that is cached or saved under its run is not pickled (its graph
would be, not its data): :func:`pending_writes` makes the lazy writes of it (a dask
DataFrame as a partitioned parquet directory, an array as zarr, else one ``.npy`` file per
chunk; :func:`~.datasets.formats.format_for_value` picks), computed by the workers with the
collection itself (:mod:`~.lazy`); once the data is all there the client writes the entry
that names it (:class:`CacheCommit`, :class:`SavedCommit`), or removes what a failed write
left. :func:`opened` turns a stored collection back into a lazy one
(``dask.dataframe.read_parquet``, ``dask.array.from_zarr``).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .datasets import Dataset, LazySave
from .datasets.formats import format_for_value
from .errors import BadEntry
from .sources import output_ref
from .store import Cache, RunStore
from .store.codec import StoredCollection, new_entry_id

__all__ = [
    "CacheCommit",
    "Commit",
    "OutputCommit",
    "PendingWrite",
    "SavedCommit",
    "abandon",
    "abandon_held",
    "kind_of",
    "opened",
    "output_write",
    "pending_writes",
    "storable",
    "write_lazily",
]

logger = logging.getLogger("xlibrary.pipeline.wrapper")

_EXTENSIONS = {"parquet": ".parquet", "zarr": ".zarr", "npy": ".npy"}


class Commit(Protocol):
    """What makes a collection written by the workers count, once it is written."""

    @property
    def what(self) -> str:
        """``cache`` or ``saved``: the outcome it completes."""
        ...

    def again(self, value: Any) -> Any:
        """A lazy write of ``value`` (the collection, persisted) to the same place."""
        ...

    def done(self) -> str | None:
        """Record the written collection (write its entry); returns the entry id, if any."""
        ...

    def abandon(self) -> None:
        """The write failed: remove what it left."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingWrite:
    """A collection being written: its tasks' keys on a cluster, or the lazy write to
    compute with the run's finals; and its commit."""

    commit: Commit
    keys: tuple[Hashable, ...] = ()
    lazy: Any = field(default=None, compare=False)


class _Placed:
    """What commits of a collection written at a :class:`StoredCollection` place share."""

    place: StoredCollection

    def abandon(self) -> None:
        _remove(self.place)

    def again(self, value: Any) -> Any:
        return write_lazily(value, self.place)


@dataclass(frozen=True, kw_only=True)
class CacheCommit(_Placed):
    """Writes the cache entry naming a collection once the workers wrote it."""

    cache: Cache
    key: str
    place: StoredCollection
    entry_id: str
    ttl: float | None
    task: str
    pipeline: str
    meta: dict[str, Any] | None = None
    what: str = "cache"

    def done(self) -> str | None:
        header = self.cache.save(
            self.key, self.place, ttl=self.ttl, task=self.task, pipeline=self.pipeline,
            meta=self.meta, entry_id=self.entry_id,
        )  # fmt: skip
        return None if header is None else header.entry_id


@dataclass(frozen=True, kw_only=True)
class SavedCommit(_Placed):
    """Writes the saved result naming a collection once the workers wrote it."""

    runs: RunStore
    pipeline: str
    run_id: str
    task: str
    place: StoredCollection
    what: str = "saved"

    def done(self) -> str | None:
        self.runs.save_result(self.pipeline, self.run_id, self.task, self.place)
        return None


@dataclass(frozen=True, kw_only=True)
class OutputCommit:
    """Puts a collection written by the workers in place as the task's declared output
    (``save_to``), then, when the task has a cache key, writes the cache entry that notes
    where it lies (:func:`~.sources.output_ref`) under the entry id handed out before."""

    save: LazySave
    dataset: Dataset
    task: str
    pipeline: str
    cache: Cache | None = None
    key: str | None = None
    entry_id: str | None = None
    ttl: float | None = None
    meta: dict[str, Any] | None = None
    what: str = "output"

    def done(self) -> str | None:
        self.save.commit()
        if self.cache is None or self.key is None:
            return None
        try:
            header = self.cache.save(
                self.key, output_ref(self.dataset, self.save.version), ttl=self.ttl,
                task=self.task, pipeline=self.pipeline, meta=self.meta, entry_id=self.entry_id,
            )  # fmt: skip
        except Exception as exc:  # the output is written: only the shortcut to it is lost
            logger.warning("task %r: could not write its cache entry: %s", self.task, exc)
            return None
        return None if header is None else header.entry_id

    def abandon(self) -> None:
        self.save.abandon()

    def again(self, value: Any) -> Any:
        fs, path, dataset = self.save.fs, self.save.temporary, self.dataset
        fmt = dataset._format()
        args = {**fmt.default_save_args, **dataset.save_args}
        url, options = dataset._url_of(fs, path), dataset.storage_options
        return fmt.write_collection(value, fs, path, url, options, compute=False, **args)


def output_write(
    value: Any,
    dataset: Dataset,
    *,
    task: str,
    pipeline: str,
    run_id: str,
    cache: Cache | None = None,
    cache_key: str | None = None,
    ttl: float | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[PendingWrite, str | None]:
    """The lazy write of collection ``value`` to the task's declared output ``dataset`` (a
    versioned one as version ``run_id``), committed once the workers wrote it; its commit's
    ``entry_id`` (returned too) is the cache entry handed out when ``cache_key`` is given.
    Raises what
    makes the output unwritable (a format that cannot hold it, a version that exists)."""
    lazy, save = dataset.save_lazily(value, version=run_id if dataset.versioned else None)
    keyed = cache is not None and cache_key is not None
    commit = OutputCommit(
        save=save, dataset=dataset, task=task, pipeline=pipeline, cache=cache, key=cache_key,
        entry_id=new_entry_id() if keyed else None, ttl=ttl, meta=meta,
    )  # fmt: skip
    return PendingWrite(commit=commit, lazy=lazy), commit.entry_id


def abandon(writes: Iterable[PendingWrite]) -> None:
    """Remove what ``writes`` left (a run that stopped before they were settled, a
    collection that could not be held); never raises."""
    for write in writes:
        try:
            write.commit.abandon()
        except Exception as exc:  # cleaning up after a failure already reported
            logger.debug("could not remove a write of task's collection: %s", exc)


def abandon_held(outcomes: Iterable[Any]) -> None:
    """:func:`abandon` the pending writes of ``outcomes`` (a run that stopped early)."""
    for outcome in outcomes:
        held = getattr(outcome, "held", None)
        if held is not None:
            abandon(held.writes)


def _remove(place: StoredCollection) -> None:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(place.url, **place.storage_options)
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
    except Exception as exc:  # the write failed already; this is cleaning up after it
        logger.warning("could not remove the partial collection at %s: %s", place.path, exc)


def storable(value: Any) -> str | None:
    """The dataset format a collection is stored in (``parquet``, ``zarr``, ``npy``), or
    ``None`` (bags and delayed values are not stored)."""
    fmt = format_for_value(value)
    return fmt if fmt in _EXTENSIONS else None


def pending_writes(
    value: Any,
    *,
    task: str,
    pipeline: str,
    run_id: str,
    cache: Cache | None = None,
    cache_key: str | None = None,
    ttl: float | None = None,
    meta: dict[str, Any] | None = None,
    runs: RunStore | None = None,
) -> tuple[list[PendingWrite], str | None]:
    """The lazy writes of collection ``value`` to the cache under ``cache_key`` and to the
    run's saved results (``runs``), and the cache entry id handed out (downstream cache keys
    use it); nothing is written until the writes are computed. A collection that cannot be
    stored is not, with a warning."""
    fmt = storable(value)
    if fmt is None:
        logger.warning(
            "task %r returned a %s, which is not stored in the cache or the store (only dask "
            "DataFrames and arrays are, as parquet and zarr/npy); it runs again next time",
            task,
            kind_of(value),
        )
        return [], None
    extension = _EXTENSIONS[fmt]
    writes: list[PendingWrite] = []
    entry_id = None
    if cache is not None and cache_key is not None:
        entry_id = new_entry_id()
        place = cache.collection_place(cache_key, entry_id, fmt, extension)
        if place is None:
            logger.warning(
                "task %r is not cached: its result is a Dask collection, and this cache keeps "
                "bytes only; use the fsspec cache (caching.cache_type: fsspec) for it",
                task,
            )
            entry_id = None
        else:
            cached = CacheCommit(
                cache=cache, key=cache_key, place=place, entry_id=entry_id, ttl=ttl, task=task,
                pipeline=pipeline, meta=meta,
            )  # fmt: skip
            writes.append(PendingWrite(commit=cached, lazy=write_lazily(value, place)))
    if runs is not None:
        place = runs.place_result(pipeline, run_id, task, fmt, extension)
        saved = SavedCommit(runs=runs, pipeline=pipeline, run_id=run_id, task=task, place=place)
        writes.append(PendingWrite(commit=saved, lazy=write_lazily(value, place)))
    return writes, entry_id


def write_lazily(value: Any, place: StoredCollection) -> Any:
    """A lazy object that writes collection ``value`` at ``place`` when computed."""
    options = dict(place.storage_options) or None
    if place.format == "parquet":
        return value.to_parquet(place.url, storage_options=options, compute=False)
    if place.format == "zarr":
        return value.to_zarr(place.url, storage_options=options, overwrite=True, compute=False)
    import fsspec

    from .datasets.arrays import save_npy_chunks

    fs, path = fsspec.core.url_to_fs(place.url, **(options or {}))
    return save_npy_chunks(value, fs, path, compute=False)


def opened(value: Any) -> Any:
    """``value``, or, for a collection stored by the workers, a lazy collection reading it
    (its data is read when it is computed). Raises BadEntry when it is gone."""
    if not isinstance(value, StoredCollection):
        return value
    try:
        return Dataset(
            value.url, format=value.format, storage_options=value.storage_options, lazy=True
        ).load()
    except Exception as exc:  # deleted by hand, or a prune while the entry was being written
        raise BadEntry(f"the stored collection at {value.path} cannot be read: {exc}") from exc


def kind_of(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    if module.startswith("dask.dataframe"):
        module = "dask.dataframe"
    elif module.startswith("dask.array"):
        module = "dask.array"
    return f"{module}.{kind.__qualname__}"

"""Dask collections that tasks return: held on the cluster, lazy on threads, written by workers.

A task may return a Dask collection (a dask DataFrame or Series, a dask array, a bag, a
``Delayed``). Its data never goes through the client, and the engine never computes it inside
a worker task: no nested ``compute()``, which can deadlock a worker of one thread.

* **On a cluster** the task wrapper persists the collection from the worker it runs on, with
  that worker's own client (:func:`hold`): ``persist`` hands the graph to the scheduler and
  returns at once, so the task ends at once and its worker thread is free for the
  partitions. The next task receives a collection of futures whose partitions are already
  (or soon) in worker memory; it builds on them and persists in turn. A collection built
  inside a task (``from_pandas``) goes from that worker to the scheduler once, never to the
  client and never from task to task.
* **On threads** (and ``parallel=False``) it stays lazy: every task builds on the graph of the
  ones before, and the run computes what it needs once, at the end, in one ``dask.compute``
  (so a collection many tasks use is computed once).

At the end of the run the client settles the collections (:mod:`.backends.settle`): it waits
for the persisted partitions (a partition that failed fails the task whose collection it
belongs to), computes the final tasks' collections (``compute_final``), keeps the collections
it returns, and releases the rest. A collection written to the cache or saved under its run
is written by the workers (a dask DataFrame as a partitioned parquet directory, an array as
zarr, else ``.npy`` chunks; :func:`pending_writes`), in the same graph as the collection, so
its partitions are computed once; the entry naming it is written by the client once the
data is there (:class:`CacheCommit`, :class:`SavedCommit`).

Why persist from the worker, and hold until the run ends (measured here, dask/distributed
2026.8, 2-worker 1-thread LocalCluster; ``benchmarks/bench_collections.py``):

* Hamilton's Dask adapter runs the functions on the client and computes at the end. That is
  fast for ``read_parquet`` collections, but a collection built in a task (``from_pandas``)
  is then built on the client: its data goes through the client (peak memory above the
  data's size). Running the task on a worker and persisting there keeps it off the client.
* ``get_client().compute(df).result()`` inside a task hung within 60 s on a 1-thread worker
  (the waiting task holds the thread a P2P shuffle needs); ``persist`` does not wait.
* A future that travels to another process arrives unbound: it keeps nothing alive, and a
  worker's client releasing its futures can overtake, on another connection, the graph the
  next task submitted on top of them (the scheduler then reports "lost dependencies"). So
  each worker holds what its tasks persisted until the client, having taken what it returns
  (on its own connection, after the scheduler confirmed it), releases the run
  (:func:`release`). A run's persisted collections stay in cluster memory while it runs.

The partitions' keys carry the task's name (``clean-getitem-<token>``), so the dashboard's
task stream and progress bars show them under the pipeline task; a P2P shuffle's barrier
keeps its name (distributed finds a shuffle by it).

These functions run in workers: workers need xlibrary installed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dask.base import is_dask_collection

from .datasets import Dataset
from .datasets.formats import format_for_value
from .errors import BadEntry
from .store import Cache, RunStore
from .store.codec import StoredCollection, new_entry_id

__all__ = [
    "CacheCommit",
    "Commit",
    "Held",
    "PendingWrite",
    "SavedCommit",
    "hold",
    "is_collection",
    "is_expr_backed",
    "opened",
    "pending_writes",
    "release",
]

logger = logging.getLogger("xlibrary.pipeline.wrapper")

_EXTENSIONS = {"parquet": ".parquet", "zarr": ".zarr", "npy": ".npy"}
_BARRIER = "shuffle-barrier-"  # distributed finds a P2P shuffle by its barrier's key


def is_collection(value: Any) -> bool:
    """Whether ``value`` is a Dask collection; one type lookup for anything else."""
    return getattr(type(value), "__dask_graph__", None) is not None and is_dask_collection(value)


def is_expr_backed(value: Any) -> bool:
    """Whether ``value`` is a dask-expr collection (a dask DataFrame or Series); a Delayed
    answers any attribute, so the class is asked."""
    return isinstance(getattr(type(value), "expr", None), property)


class Commit(Protocol):
    """What makes a collection written by the workers count, once it is written."""

    @property
    def what(self) -> str:
        """``cache`` or ``saved``: the outcome it completes."""
        ...

    @property
    def place(self) -> StoredCollection:
        """Where the collection is written."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """What the run must settle for a task whose result is a Dask collection."""

    keys: tuple[Hashable, ...] = ()
    """On a cluster: the keys of its persisted partitions, held until the run ends."""
    writes: tuple[PendingWrite, ...] = ()
    kind: str = ""
    """The collection's type, for messages (``dask.dataframe.DataFrame``)."""


# -- writing -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CacheCommit:
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

    def abandon(self) -> None:
        _remove(self.place)


@dataclass(frozen=True, kw_only=True)
class SavedCommit:
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

    def abandon(self) -> None:
        _remove(self.place)


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
            _kind(value),
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


# -- holding on the cluster ----------------------------------------------------------------------
_held: dict[str, list[Any]] = {}
"""Run id -> the futures this worker process's tasks persisted in that run."""
_held_lock = threading.Lock()


def running_key() -> tuple[Any, ...] | None:
    """The key of the Dask task this thread runs on a worker (``(task, run id, ...)``), or
    ``None`` off a worker."""
    worker = sys.modules.get("distributed.worker")
    if worker is None:
        return None
    key = getattr(worker.thread_state, "key", None)
    return key if type(key) is tuple and len(key) >= 2 else None


def hold(value: Any, writes: Sequence[PendingWrite] = ()) -> tuple[Any, Held]:
    """Settle collection ``value`` (and its ``writes``) where the task runs: on a Dask
    worker, persisted with the worker's client and held for the run (returns the persisted
    collection); elsewhere, as it is (lazy)."""
    key = running_key()
    if key is None:
        return value, Held(writes=tuple(writes), kind=_kind(value))
    from distributed import get_client

    client = get_client()
    prefix = f"{key[0]}-"
    if is_expr_backed(value):
        # as DataFrame.persist does: the optimized expression decides the partitions (a
        # groupby may split its output), and the rebuilt collection must have as many
        value = value.optimize()
    # the value and its first write in one graph: its partitions are computed once; two
    # parquet writes of one frame in one graph fail in Dask 2026.8, so further writes go
    # in graphs of their own, reading the persisted partitions
    persisted, keys = _persist(client, [value, *(write.lazy for write in writes[:1])], prefix)
    held = [persisted]
    write_keys = [keys[1]] if writes else []
    for write in writes[1:]:
        more, more_keys = _persist(client, [write_lazily(persisted[0], write.commit.place)], prefix)
        held.append(more)
        write_keys.append(more_keys[0])
    _until_known(client, [k for keys_of in (keys[0], *write_keys) for k in keys_of])
    with _held_lock:  # the persisted collections hold their futures
        _held.setdefault(str(key[1]), []).extend(held)
    held_writes = tuple(
        PendingWrite(commit=write.commit, keys=tuple(keys_of))
        for write, keys_of in zip(writes, write_keys, strict=True)
    )
    return persisted[0], Held(keys=tuple(keys[0]), writes=held_writes, kind=_kind(value))


KNOWN_TIMEOUT = 120.0
"""Seconds a task waits for the scheduler to take in the graph it persisted."""


def _until_known(client: Any, keys: list[Hashable]) -> None:
    """Return once the scheduler has taken in the graph that defines ``keys``.

    ``persist`` sends the graph and returns; the scheduler reads it in the background (a
    graph holding data, as ``from_pandas`` makes, takes a while). A graph built on these
    keys reaches the scheduler on another connection (the next task's worker, the client):
    if it came first, the scheduler would find its dependencies unknown and cancel it ("lost
    dependencies"). This asks the scheduler, which needs no worker thread to answer: the
    task waits for the scheduler's bookkeeping, never for the partitions.
    """
    if not keys:
        return
    wanted = keys[:: max(1, len(keys) // 16)] + keys[-1:]  # a graph is taken in whole

    def known(dask_scheduler: Any) -> bool:
        return all(key in dask_scheduler.tasks for key in wanted)

    def answered() -> bool:  # the scheduler told this client about one: it has the graph
        states = [client.futures.get(key) for key in wanted]
        return any(state is not None and state.status != "pending" for state in states)

    deadline = time.monotonic() + KNOWN_TIMEOUT
    pause = 0.001
    while not answered() and not client.run_on_scheduler(known):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the Dask scheduler did not take in the graph of this task's collection "
                f"within {KNOWN_TIMEOUT:g}s; it may be overloaded"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def release(run_id: str) -> int:
    """Let go of what this worker process's tasks persisted in run ``run_id`` (the client
    calls it on every worker once the run is settled); returns how many collections."""
    with _held_lock:
        return len(_held.pop(run_id, ()))


def _kind(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    if module.startswith("dask.dataframe"):
        module = "dask.dataframe"
    elif module.startswith("dask.array"):
        module = "dask.array"
    return f"{module}.{kind.__qualname__}"


def _persist(
    client: Any, collections: list[Any], prefix: str
) -> tuple[list[Any], dict[int, list[Hashable]]]:
    """``client.persist(collections)``, the new keys named ``<prefix><name>``; returns the
    persisted collections and each one's keys (by position)."""
    try:
        named = _named_graph(collections, prefix)
    except Exception as exc:  # a graph of a shape not foreseen: persist it as it is
        logger.debug("persisting without renaming the keys: %s", exc)
        named = None
    if named is None:
        persisted = client.persist(collections)
        from distributed.client import futures_of

        return persisted, {
            i: [future.key for future in futures_of(item)]  # type: ignore[no-untyped-call]
            for i, item in enumerate(persisted)
        }
    graph, outputs, names = named
    flat = [key for keys in outputs for key in keys]
    futures = dict(zip(flat, client.get(graph, flat, sync=False), strict=True))
    rebuilt = []
    for collection, keys in zip(collections, outputs, strict=True):
        rebuild, args = collection.__dask_postpersist__()
        mine = {key: futures[key] for key in keys}
        if _takes_rename(rebuild):
            rebuilt.append(rebuild(mine, *args, rename=names))
        else:  # dask-expr frames: keyed by the futures they are given
            rebuilt.append(rebuild(mine, *args))
    return rebuilt, {i: list(keys) for i, keys in enumerate(outputs)}


@functools.cache
def _takes_rename_of(function: Any) -> bool:
    try:
        return "rename" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _takes_rename(rebuild: Any) -> bool:
    return _takes_rename_of(getattr(rebuild, "__func__", rebuild))


def _named_graph(
    collections: list[Any], prefix: str
) -> tuple[dict[Hashable, Any], list[list[Hashable]], dict[str, str]] | None:
    """The optimized graph of ``collections`` with the keys it computes renamed
    ``<prefix><name>``, their output keys (renamed), and the names renamed; ``None`` when it
    cannot be renamed safely (annotations that hang on keys)."""
    from dask._task_spec import GraphNode, TaskRef, convert_legacy_graph
    from dask.base import collections_to_expr
    from dask.core import flatten

    expr = collections_to_expr(collections, optimize_graph=True).optimize()
    annotations: Any = getattr(expr, "__dask_annotations__", dict)()
    if annotations:
        return None
    dsk = dict(expr.__dask_graph__())  # type: ignore[no-untyped-call]
    if not all(isinstance(node, GraphNode | TaskRef) for node in dsk.values()):
        dsk = convert_legacy_graph(dsk)
    names: dict[str, str] = {}
    for key, node in dsk.items():
        name = key if isinstance(key, str) else key[0] if type(key) is tuple else None
        if (
            isinstance(name, str)
            and isinstance(node, GraphNode)
            and not name.startswith((_BARRIER, prefix))
        ):
            names[name] = prefix + name
    if not names:
        return None
    subs = {key: _renamed(key, names) for key in dsk if _renamed(key, names) != key}
    graph: dict[Hashable, Any] = {}
    for key, node in dsk.items():
        new = subs.get(key, key)
        graph[new] = node.substitute(subs, key=new) if isinstance(node, GraphNode) else node
    keys_of: Any = expr.__dask_keys__()  # type: ignore[no-untyped-call]
    outputs = [[_renamed(key, names) for key in flatten(keys)] for keys in keys_of]  # type: ignore[no-untyped-call]
    return graph, outputs, names


def _renamed(key: Any, names: dict[str, str]) -> Any:
    if isinstance(key, str):
        return names.get(key, key)
    if type(key) is tuple and key and isinstance(key[0], str) and key[0] in names:
        return (names[key[0]], *key[1:])
    return key

"""Dask collections that tasks return: lazy, or held on the cluster; written by the workers.

A task may return a Dask collection (a dask DataFrame or Series, a dask array, a bag, a
``Delayed``). Its data never goes through the client, and the engine never computes it
inside a worker task: no nested ``compute()``, which can deadlock a worker of one thread.

* **A graph that carries data** (a ``from_pandas`` frame of :data:`PERSIST_ABOVE` bytes or
  more, and any array, bag or delayed, which are not measured), returned by a task on a
  cluster, is persisted from the worker that built it, with that worker's own client
  (:func:`hold`): the task ends as soon as the scheduler has the graph (it never waits for
  the partitions), and the next task receives a collection of futures whose partitions are
  in worker memory. A plain ``from_pandas`` frame is not even sent as a graph: its
  partitions (slices of a frame already in that worker's memory) are scattered there
  (:func:`_scattered`), never through the scheduler, the client, or from task to task.
  The keys carry the task's name (``load-...-frompandas-...``), so the dashboard shows them
  under it.
* **Any other collection** (a ``read_parquet`` and what is built on it, or on persisted
  partitions) is handed on as it is: its graph is small. On threads every collection is.
* **At the end** the client settles the run (:mod:`.backends.settle`): it waits for the
  persisted partitions (one that failed fails its task), then computes, in one graph named
  after the final tasks, the final tasks' collections (``compute_final``) and the writes of
  lazy collections, so what they share is computed once; it keeps what the run returns
  and releases the rest.

Cached or saved collections are written by the workers (a dask DataFrame as a partitioned
parquet directory, an array as zarr, else ``.npy`` chunks; :mod:`~.stored`), in the
same graph as the collection; the entry naming one is written by the client once the data
is there.

Why (measured with ``benchmarks/bench_collections.py``: 5,000,000 rows in 16 partitions,
filter, groupby, pandas, on a 2-worker 1-thread LocalCluster, dask/distributed 2026.8):

* Persisting every task's collection cost 1.36x hand-written Dask for ``read_parquet`` and
  ``from_pandas`` alike: a frame persisted in the middle is read whole (every column) and
  materialized, and Dask's optimizer no longer sees across tasks (column projection,
  fusion). Handed on, the final compute is the one hand-written Dask makes.
* Hamilton's Dask adapter runs the functions on the client and computes at the end: fast for
  ``read_parquet``, but a ``from_pandas`` frame is then built on the client (its peak memory
  above the data's size). Built in a task on a worker and persisted there, it is not.
* ``get_client().compute(df).result()`` inside a task hung within 60 s on a 1-thread worker
  (the waiting task holds the thread a P2P shuffle needs); ``persist`` does not wait.
* A future that travels to another process arrives unbound: it keeps nothing alive. So each
  worker holds what its tasks persisted until the client, having taken what it returns,
  releases the run (:func:`release`): a run's persisted collections stay in cluster memory
  while it runs. A graph persisted on a worker reaches the scheduler on that worker's
  connection; one built on it (the next task's, the client's) on another: the task returns
  only once the scheduler has taken its graph in (a 120 MB graph still arriving lost the
  race 1 run in 3).

A failure inside a collection handed on lazily shows when it is computed: it fails the task
whose computation it breaks (a final task, or the write of a cached one), the traceback
naming the function that raised. A P2P shuffle's barrier keeps its key (distributed finds a
shuffle by it).

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
from dataclasses import dataclass
from typing import Any

from dask.base import is_dask_collection

from .keys import run_of, task_of
from .stored import PendingWrite, kind_of

__all__ = [
    "Held",
    "hold",
    "is_collection",
    "is_expr_backed",
    "persist_named",
    "release",
]

logger = logging.getLogger("xlibrary.pipeline.wrapper")

_BARRIER = "shuffle-barrier-"  # distributed finds a P2P shuffle by its barrier's key


def is_collection(value: Any) -> bool:
    """Whether ``value`` is a Dask collection; one type lookup for anything else."""
    return getattr(type(value), "__dask_graph__", None) is not None and is_dask_collection(value)


def is_expr_backed(value: Any) -> bool:
    """Whether ``value`` is a dask-expr collection (a dask DataFrame or Series); a Delayed
    answers any attribute, so the class is asked."""
    return isinstance(getattr(type(value), "expr", None), property)


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """What the run must settle for a task whose result is a Dask collection."""

    keys: tuple[Hashable, ...] = ()
    """On a cluster: the keys of its persisted partitions, held until the run ends."""
    writes: tuple[PendingWrite, ...] = ()
    kind: str = ""
    """The collection's type, for messages (``dask.dataframe.DataFrame``)."""


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


PERSIST_ABOVE = 1_000_000
"""Bytes of data inside a dask DataFrame's graph (``from_pandas`` puts it there) from which a
task on a cluster persists the frame where it was built, rather than hand its graph on."""


def carried_bytes(value: Any) -> int | None:
    """Bytes of data held inside the graph of a dask DataFrame or Series (the frame of a
    ``from_pandas``); ``None`` for other collections (arrays, bags, delayed: not measured)."""
    if not is_expr_backed(value):
        return None
    from dask._expr import Expr
    from dask.sizeof import sizeof

    return sum(
        int(sizeof(_unwrapped(operand)))
        for node in value.expr.walk()
        for operand in node.operands
        if not isinstance(operand, Expr)
    )


def _unwrapped(operand: Any) -> Any:
    """The data a dask-expr wrapper holds (``from_pandas`` keeps its frame in one)."""
    return operand._data if type(operand).__name__ == "_BackendData" else operand


def hold(value: Any, writes: Sequence[PendingWrite] = ()) -> tuple[Any, Held]:
    """Settle collection ``value`` (and its ``writes``) where the task runs: on a Dask
    worker, persisted with the worker's client and held for the run (returns the persisted
    collection), unless it is a dask DataFrame whose graph carries less than
    :data:`PERSIST_ABOVE` bytes of data; elsewhere, and then, as it is (lazy)."""
    key = running_key()
    carried = carried_bytes(value)
    if key is None or (carried is not None and carried < PERSIST_ABOVE):
        return value, Held(writes=tuple(writes), kind=kind_of(value))
    from distributed import get_client

    client = get_client()
    prefix = f"{task_of(key)}-"
    scattered = _scattered(client, value, f"{task_of(key)}-{run_of(key)}-")  # this run's
    if scattered is not None:  # a from_pandas frame: its partitions are here already
        persisted, keys, together = [scattered[0]], {0: scattered[1]}, 0
    else:
        # the value and its first write in one graph: its partitions are computed once; two
        # parquet writes of one frame in one graph fail in Dask 2026.8, so further writes go
        # in graphs of their own, reading the persisted partitions
        together = 1
        persisted, keys = persist_named(
            client, [value, *(write.lazy for write in writes[:together])], prefix
        )
    held = [persisted]
    write_keys = [keys[1]] if writes and together else []
    for write in writes[together:]:
        more, more_keys = persist_named(client, [write.commit.again(persisted[0])], prefix)
        held.append(more)
        write_keys.append(more_keys[0])
    _until_known(client, [k for keys_of in (keys[0], *write_keys) for k in keys_of])
    with _held_lock:  # the persisted collections hold their futures
        _held.setdefault(str(run_of(key)), []).extend(held)
    held_writes = tuple(
        PendingWrite(commit=write.commit, keys=tuple(keys_of))
        for write, keys_of in zip(writes, write_keys, strict=True)
    )
    return persisted[0], Held(keys=tuple(keys[0]), writes=held_writes, kind=kind_of(value))


def _scattered(client: Any, value: Any, prefix: str) -> tuple[Any, list[Hashable]] | None:
    """A ``from_pandas`` frame (nothing else) scattered from this worker, partition by
    partition, keyed ``<prefix>frompandas-...``: its data is in this process already, so it
    need not travel through the scheduler inside a graph. A worker's scatter keeps the
    partitions where they are (the scheduler moves them as the tasks using them are spread:
    1.06x hand-written Dask in ``bench_collections``; spread over the workers at once, 1.12-
    1.15x). The
    partitions are slices of the frame, cut here with Dask's synchronous scheduler (no
    cluster involved: nothing to deadlock). ``None`` for any other collection."""
    if not is_expr_backed(value):
        return None
    optimized = value.optimize()
    if type(optimized.expr).__name__ != "FromPandas":
        return None
    from dask.core import flatten
    from dask.local import get_sync

    keys = list(flatten(optimized.__dask_keys__()))  # type: ignore[no-untyped-call]
    parts = get_sync(dict(optimized.__dask_graph__()), keys)
    names = {key[0]: prefix + key[0] for key in keys if not key[0].startswith(prefix)}
    renamed = [_renamed(key, names) for key in keys]
    futures = client.scatter(dict(zip(renamed, parts, strict=True)), direct=True)
    rebuild, args = optimized.__dask_postpersist__()
    return rebuild(futures, *args), renamed


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


def persist_named(
    client: Any, collections: list[Any], prefix: str
) -> tuple[list[Any], dict[int, list[Hashable]]]:
    """``client.persist(collections)``, the new keys named ``<prefix><name>``; returns the
    persisted collections and each one's keys (by position)."""
    # as DataFrame.persist does: the optimized expression decides the partitions (a groupby
    # may split its output), and the rebuilt collection must have as many
    collections = [c.optimize() if is_expr_backed(c) else c for c in collections]
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

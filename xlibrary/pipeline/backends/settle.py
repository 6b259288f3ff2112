"""The end of a run whose tasks returned Dask collections: settled from the client side.

Tasks settle their collections where they run (:mod:`~..lazy`): persisted and held on a
cluster when their graph carries data, else handed on lazily (always, on threads). Once a
run's graph is done, its backend settles them here, before the run counts as done:

* :func:`settle_on_cluster`: this client takes the held partitions; one graph, named after
  the final tasks and submitted at once (so it runs as the held partitions come in),
  computes the final tasks' collections (``compute``: only their values come here) and the
  writes of lazy collections (cache, saved results); then it waits for all of it. A held
  partition that failed fails the task whose collection it belongs to; a final collection
  that failed fails its task (the run skips a task downstream of a failed one). The entries
  of the collections the workers wrote are written; the collections the run returns are
  bound to this client (they keep their partitions while they live); the workers release
  the rest (:func:`release_run`).
* :func:`settle_here` (threads, ``parallel=False``): compute the final tasks' collections and
  every pending write in one ``dask.compute``, so what they share is computed once.

Nothing here runs inside a worker task: the waits and computes are the client's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import RunCancelled
from ..lazy import is_collection, is_expr_backed, persist_named, release
from ..outcome import Failure, Outcome
from ..states import DONE, TaskStatus
from ..stored import PendingWrite
from ..watch import RunWatch

__all__ = ["release_run", "settle_here", "settle_on_cluster"]

logger = logging.getLogger("xlibrary.pipeline")

_FAILED = ("error", "cancelled", "lost")


def _pending(outcomes: dict[str, Outcome]) -> bool:
    return any(o.held is not None for o in outcomes.values())


def settle_here(
    outcomes: dict[str, Outcome],
    compute: Collection[str],
    *,
    pool: ThreadPoolExecutor | None = None,
) -> dict[str, Outcome]:
    """Compute, in this process, the collections of the tasks in ``compute`` and the pending
    writes, in one ``dask.compute`` (on ``pool``'s threads, else in this thread)."""
    finals = [n for n in outcomes if n in compute and _lazy(outcomes[n])]  # in order
    if not finals and not _pending(outcomes):
        return outcomes
    writes, more = [], []  # two parquet writes of one frame in one compute fail (Dask 2026.8)
    for name, outcome in outcomes.items():
        if outcome.held is not None and outcome.status in DONE:
            lazy = [write for write in outcome.held.writes if write.lazy is not None]
            writes += [(name, write) for write in lazy[:1]]
            more += [(name, write) for write in lazy[1:]]
    import dask

    options: dict[str, Any] = {"scheduler": "threads", "pool": pool} if pool else {}
    options.setdefault("scheduler", "sync")

    def computed(*values: Any) -> list[Any]:
        return _by_kind(values, lambda same: dask.compute(*same, **options))  # type: ignore[attr-defined, no-untyped-call]

    try:
        values = computed(*(outcomes[n].value for n in finals), *(w.lazy for _, w in writes))
    except Exception:  # which one failed: each on its own (only when something failed)
        for name in finals:
            try:
                (value,) = computed(outcomes[name].value)
            except Exception as exc:
                outcomes[name] = _failed(name, outcomes[name], exc)
            else:
                outcomes[name] = dataclasses.replace(outcomes[name], value=value)
        more = writes + more
    else:
        for name, value in zip(finals, values, strict=False):
            outcomes[name] = dataclasses.replace(outcomes[name], value=value)
        for name, write in writes:
            outcomes[name] = _commit(name, outcomes[name], write)
    for name, write in more:  # one at a time
        if outcomes[name].status not in DONE:
            write.commit.abandon()
            continue
        try:
            computed(write.lazy)
        except Exception as exc:
            outcomes[name] = _not_written(name, outcomes[name], write, exc)
        else:
            outcomes[name] = _commit(name, outcomes[name], write)
    return _settled(outcomes)


def settle_on_cluster(
    client: Any,
    run_id: str,
    outcomes: dict[str, Outcome],
    compute: Collection[str],
    *,
    progress: RunWatch | None = None,
) -> dict[str, Outcome]:
    """Settle the collections of run ``run_id`` on ``client``'s cluster (see the module
    docstring); ``outcomes`` are in topological order. Releases the run's holdings."""
    finals = [n for n in outcomes if n in compute and _lazy(outcomes[n])]  # in order
    if not finals and not _pending(outcomes):
        return outcomes
    try:
        keys: list[Hashable] = []
        writes: list[tuple[str, PendingWrite]] = []
        for name, outcome in outcomes.items():
            if outcome.held is not None:
                keys.extend(outcome.held.keys)
                keys.extend(key for write in outcome.held.writes for key in write.keys)
                writes.extend((name, write) for write in outcome.held.writes)
        futures = dict(zip(keys, client.get({}, keys, sync=False), strict=True)) if keys else {}
        # one graph, submitted at once (it runs as the held partitions come in): the final
        # tasks' collections and each task's first lazy write (two parquet writes of one
        # frame in one graph fail in Dask 2026.8: the others follow, one by one)
        first = {name: w for name, w in reversed(writes) if w.lazy is not None}
        values = [outcomes[n].value for n in finals] + [w.lazy for w in first.values()]
        prefix = "+".join(finals or list(first))[:60] + "-"
        end = _submit(client, values, prefix)
        _wait(client, [*futures.values(), *(f for _, fs in end for f in fs)], progress)
        _fail_broken(outcomes, futures)
        done = _results(client, end)
        for name, result in zip(finals, done, strict=False):
            if isinstance(result, _Failed):  # (skipped in the run if an upstream failed)
                outcomes[name] = _failed(name, outcomes[name], result.error)
            else:
                outcomes[name] = dataclasses.replace(outcomes[name], value=result)
        lazy_done = {id(w): r for w, r in zip(first.values(), done[len(finals) :], strict=True)}
        for name, write in writes:
            outcomes[name] = _finish_write(client, name, outcomes[name], write, futures, lazy_done)
        _keep(client, outcomes)  # while the futures above still hold the keys
    finally:
        release_run(client, run_id)
    return _settled(outcomes)


def _finish_write(
    client: Any,
    name: str,
    outcome: Outcome,
    write: PendingWrite,
    futures: dict[Hashable, Any],
    lazy_done: dict[int, Any],
) -> Outcome:
    """Commit a written collection, or abandon what a failed write left; the task's
    outcome then (a declared output that could not be written fails its task)."""
    if outcome.status not in DONE:
        write.commit.abandon()
        return outcome
    if write.lazy is None:
        error = _error_of([futures[key] for key in write.keys])
        result: Any = _Failed(error) if error is not None else None
    elif id(write) in lazy_done:
        result = lazy_done[id(write)]
    else:
        (result,) = _results(client, _submit(client, [write.lazy], f"{name}-"))
    if isinstance(result, _Failed):
        return _not_written(name, outcome, write, result.error)
    return _commit(name, outcome, write)


@dataclasses.dataclass(frozen=True)
class _Failed:
    error: BaseException


def _submit(client: Any, values: list[Any], prefix: str) -> list[tuple[Any, list[Any]]]:
    """Persist ``values`` on the cluster, in graphs whose keys start with ``prefix``
    (dataframes apart from the rest: see :func:`_by_kind`); each one's persisted collection
    and futures, in order."""
    if not values:
        return []

    def persisted(same: list[Any]) -> list[tuple[Any, list[Any]]]:
        with client.as_current():  # Dask lowers for the cluster (a P2P shuffle, say)
            items, _ = persist_named(client, same, prefix)
        return [(item, futures_of(item)) for item in items]

    return _by_kind(values, persisted)


def _results(client: Any, submitted: list[tuple[Any, list[Any]]]) -> list[Any]:
    """The values of collections :func:`_submit` persisted (brought here), or ``_Failed``."""
    _wait(client, [future for _, futures in submitted for future in futures], None)
    out: list[Any] = []
    for item, futures in submitted:
        error = _error_of(futures)
        out.append(_Failed(error) if error is not None else item)
    good = [i for i, item in enumerate(out) if not isinstance(item, _Failed)]
    values = _by_kind([out[i] for i in good], lambda same: client.gather(client.compute(same)))
    for i, value in zip(good, values, strict=True):
        out[i] = value
    return out


def release_run(client: Any, run_id: str) -> None:
    """Let every worker release what the tasks of run ``run_id`` persisted there."""
    try:
        client.run(release, run_id, on_error="ignore")
    except Exception as exc:  # the cluster is gone: so is what it held
        logger.debug("could not release the collections of run %s: %s", run_id, exc)


def _by_kind(values: Sequence[Any], compute: Callable[[list[Any]], Sequence[Any]]) -> list[Any]:
    """``compute(values)``, in two calls when some are dask-expr collections (dataframes)
    and some are not (arrays, bags, delayed): computed together, Dask 2026.8 returns the
    results of such a mix out of order."""
    groups: dict[bool, list[int]] = {}
    for i, value in enumerate(values):
        groups.setdefault(is_expr_backed(value), []).append(i)
    if len(groups) < 2:
        return list(compute(list(values)))
    out: list[Any] = [None] * len(values)
    for indices in groups.values():
        for i, result in zip(indices, compute([values[i] for i in indices]), strict=True):
            out[i] = result
    return out


def _lazy(outcome: Outcome) -> bool:
    return outcome.status in DONE and is_collection(outcome.value)


def _settled(outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
    """The outcomes with nothing left to settle (an outcome reused by a later round of the
    run is not settled twice)."""
    for outcome in outcomes.values():
        outcome.held = None
    return outcomes


def futures_of(value: Any) -> list[Any]:
    from distributed.client import futures_of as found

    return list(found(value))  # type: ignore[no-untyped-call]


def _wait(client: Any, futures: list[Any], progress: RunWatch | None) -> None:
    from distributed import wait

    with client.as_current():
        while futures:
            try:
                wait(futures, timeout=0.2)  # type: ignore[no-untyped-call]
                return
            except TimeoutError:
                if progress is not None and progress.cancelled:
                    raise RunCancelled("the run was cancelled") from None


def _fail_broken(outcomes: dict[str, Outcome], futures: dict[Hashable, Any]) -> None:
    """Fail each task whose collection has a partition that failed (a task downstream of a
    failed one fails with its error too; the run reports it skipped)."""
    for name, outcome in outcomes.items():
        if outcome.held is not None and outcome.status in DONE:
            error = _error_of([futures[key] for key in outcome.held.keys])
            if error is not None:
                outcomes[name] = _failed(name, outcome, error)


def _error_of(futures: list[Any]) -> BaseException | None:
    for future in futures:
        if future.status not in _FAILED:
            continue
        if future.status != "error":
            from ..errors import ClusterError

            return ClusterError(
                f"Dask {future.status} the partition {future.key!r} (its worker was lost, or "
                "the run was cancelled)"
            )
        try:
            error = future.exception()
            traceback = future.traceback()
        except Exception as exc:  # the exception itself could not be fetched
            return exc
        if isinstance(error, BaseException) and traceback is not None:
            with contextlib.suppress(Exception):  # a traceback that tblib could not rebuild
                error = error.with_traceback(traceback)
        return error if isinstance(error, BaseException) else RuntimeError(repr(error))
    return None


def _failed(name: str, outcome: Outcome, exc: BaseException) -> Outcome:
    """``outcome`` of a task whose Dask collection failed to compute."""
    failure = Failure.from_exception(name, exc)
    return dataclasses.replace(
        outcome, status=TaskStatus.FAILED, value=None, failure=failure, finished=time.time(),
        token=None, source=None, saved=False,
    )  # fmt: skip


def _commit(name: str, outcome: Outcome, write: PendingWrite) -> Outcome:
    """Make a written collection count; the task's outcome then (see :func:`_not_written`)."""
    try:
        write.commit.done()
    except Exception as exc:  # the store is down: the result itself is good
        if write.commit.what == "output":
            return _not_written(name, outcome, write, exc)
        logger.warning("task %r: could not record its result in the store: %s", name, exc)
        write.commit.abandon()
        return outcome
    if write.commit.what == "saved":
        outcome.saved = True
    return outcome


def _not_written(name: str, outcome: Outcome, write: PendingWrite, exc: BaseException) -> Outcome:
    """Abandon a write that failed; the task's outcome then: failed when the write was its
    declared output (``save_to``), else as it was (the cache or store copy is only lost)."""
    write.commit.abandon()
    if write.commit.what == "output":
        return _failed(name, outcome, exc)
    what = "cache" if write.commit.what == "cache" else "store"
    logger.warning(
        "task %r: its Dask collection could not be written to the %s (%s: %s); it is not stored",
        name,
        what,
        type(exc).__name__,
        exc,
    )
    return outcome


def _keep(client: Any, outcomes: dict[str, Outcome]) -> None:
    """Bind the futures of the collections the run returns to ``client`` (which wants
    their keys already): they keep them on the cluster as long as the collections live."""
    for outcome in outcomes.values():
        if _lazy(outcome):
            for future in futures_of(outcome.value):
                if future.client is None:  # it came unbound, from a worker
                    future.bind_client(client)

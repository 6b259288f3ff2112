"""The end of a run whose tasks returned Dask collections: settled from the client side.

Tasks settle their collections where they run (:mod:`~..lazy`): held on a cluster, lazy on
threads. Once a run's graph is done, its backend settles them here, before the run counts as
done:

* :func:`settle_on_cluster`: wait for every held partition (a partition that failed fails
  the task whose collection it belongs to; the tasks downstream of it are then skipped);
  write the entries of the collections the workers wrote (cache, saved results); compute the
  final tasks' collections (``compute``: the result comes to the client, nothing else
  does); keep, on this client, the collections the run returns as they are; and let the
  workers release the rest (:func:`release_run`).
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
from ..lazy import PendingWrite, is_collection, is_expr_backed, release
from ..outcome import Failure, Outcome
from ..states import DONE, TaskStatus
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
    finals = [n for n in compute if n in outcomes and _lazy(outcomes[n])]
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
            _commit(name, outcomes[name], write)
    for name, write in more:  # one at a time
        if outcomes[name].status not in DONE:
            write.commit.abandon()
            continue
        try:
            computed(write.lazy)
        except Exception as exc:
            _not_written(name, write, exc)
        else:
            _commit(name, outcomes[name], write)
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
    finals = [n for n in compute if n in outcomes and _lazy(outcomes[n])]
    if not finals and not _pending(outcomes):
        return outcomes
    try:
        keys: list[Hashable] = []
        for outcome in outcomes.values():
            if outcome.held is not None:
                keys.extend(outcome.held.keys)
                keys.extend(key for write in outcome.held.writes for key in write.keys)
        futures = dict(zip(keys, client.get({}, keys, sync=False), strict=True)) if keys else {}
        _wait(client, list(futures.values()), progress)
        _fail_broken(outcomes, futures)
        for name, outcome in outcomes.items():
            for write in outcome.held.writes if outcome.held is not None else ():
                if outcome.status not in DONE:
                    write.commit.abandon()
                elif error := _error_of([futures[key] for key in write.keys]):
                    _not_written(name, write, error)
                else:
                    _commit(name, outcome, write)
        _compute_finals(client, outcomes, [n for n in finals if outcomes[n].status in DONE])
        _keep(client, outcomes, progress)
    finally:
        release_run(client, run_id)
    return _settled(outcomes)


def _compute_finals(client: Any, outcomes: dict[str, Outcome], finals: list[str]) -> None:
    """The final tasks' collections, computed on the cluster: their values come here."""
    if not finals:
        return
    computed = _by_kind([outcomes[name].value for name in finals], client.compute)
    _wait(client, computed, None)
    good = []
    for name, future in zip(finals, computed, strict=True):
        error = _error_of([future])
        if error is None:
            good.append((name, future))
        else:
            outcomes[name] = _failed(name, outcomes[name], error)
    values = client.gather([future for _, future in good])
    for (name, _), value in zip(good, values, strict=True):
        outcomes[name] = dataclasses.replace(outcomes[name], value=value)


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
    """Fail each task whose collection has a partition that failed; the tasks downstream of
    it fail with the same error, and are left for the run to skip."""
    seen: set[str] = set()
    for name, outcome in outcomes.items():
        if outcome.held is None or outcome.status not in DONE:
            continue
        error = _error_of([futures[key] for key in outcome.held.keys])
        if error is None:
            continue
        signature = f"{type(error).__qualname__}: {error}"
        if signature in seen:  # an upstream task's failure, come down the graph
            continue
        seen.add(signature)
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


def _commit(name: str, outcome: Outcome, write: PendingWrite) -> None:
    try:
        write.commit.done()
    except Exception as exc:  # the store is down: the result itself is good
        logger.warning("task %r: could not record its result in the store: %s", name, exc)
        write.commit.abandon()
        return
    if write.commit.what == "saved":
        outcome.saved = True


def _not_written(name: str, write: PendingWrite, exc: BaseException) -> None:
    what = "cache" if write.commit.what == "cache" else "store"
    logger.warning(
        "task %r: its Dask collection could not be written to the %s (%s: %s); it is not stored",
        name,
        what,
        type(exc).__name__,
        exc,
    )
    write.commit.abandon()


def _keep(client: Any, outcomes: dict[str, Outcome], progress: RunWatch | None) -> None:
    """Bind the collections the run returns to ``client``, before the workers let go."""
    kept = [name for name, outcome in outcomes.items() if _lazy(outcome)]
    if not kept:
        return
    from distributed.client import futures_of

    owned = client.persist([outcomes[name].value for name in kept])
    _wait(client, futures_of(owned), progress)  # type: ignore[no-untyped-call]  # the scheduler has them: safe to release
    for name, value in zip(kept, owned, strict=True):
        outcomes[name] = dataclasses.replace(outcomes[name], value=value)

"""Graphs and outcomes between the client and a cluster: what cannot be pickled fails its task
(:func:`shippable`, :func:`blame_unsendable`), resource restrictions travel as annotated layers
(:func:`with_restrictions`), and a task Dask itself failed gets the error that says why
(:func:`error_of`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from concurrent.futures import CancelledError
from typing import Any

import cloudpickle
from dask.task_spec import DataNode

from ..errors import ClusterError, SerializationError
from ..lower import Key
from ..outcome import Failure, Outcome
from ..states import DONE, TaskStatus

__all__ = ["blame_unsendable", "error_of", "failed_outcome", "shippable", "with_restrictions"]


def shippable(graph: Mapping[Key, Any], keys: Mapping[str, Key]) -> dict[Key, Any] | None:
    """``graph`` with each task that cannot be pickled (its function, or what the function
    closes over or uses, holds a lock, say) standing as that task's failure; ``None`` when
    every task pickles (the graph failed for another reason)."""

    out, failed = dict(graph), False
    for name, key in keys.items():
        node = graph[key]
        try:
            cloudpickle.dumps(node.value if isinstance(node, DataNode) else node.func)
        except Exception as exc:
            error = SerializationError(
                f"task {name!r} cannot be sent to the Dask workers: its function, or something "
                f"it uses (a closure variable, a global), cannot be pickled: {exc}; create such "
                "objects (locks, connections, open files) inside the task, or run the pipeline "
                "on threads (the embedded backend)"
            )
            error.__cause__ = exc
            failure = Failure.from_exception(name, error)
            out[key] = DataNode(key, Outcome(status=TaskStatus.FAILED, failure=failure))
            failed = True
    return out if failed else None


def blame_unsendable(outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
    """Fail the tasks whose values could not travel to a task on another worker.

    Such a task reported success from its worker; the task that needed its value was skipped
    with the failure (see wrapper._skipped_after), which is the task's own."""
    for outcome in list(outcomes.values()):
        failure = outcome.failure
        if outcome.status != TaskStatus.SKIPPED or failure is None:
            continue
        origin = outcomes.get(failure.task)
        if origin is not None and origin.status in DONE:
            outcomes[failure.task] = dataclasses.replace(
                origin, status=TaskStatus.FAILED, value=None, failure=failure, token=None,
                source=None, saved=False,
            )  # fmt: skip
    return outcomes


def failed_outcome(name: str, error: BaseException) -> Outcome:
    """The outcome of a task that Dask itself failed: the task wrapper never reported."""
    return Outcome(
        status=TaskStatus.FAILED, attempts=1, failure=Failure.from_exception(name, error)
    )


def with_restrictions(
    graph: Mapping[Key, Any], restrictions: Mapping[Key, Mapping[str, float]] | None
) -> Any:
    """The graph with Dask resource restrictions: one layer per distinct request."""
    if not restrictions:
        return graph
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    groups: dict[tuple[tuple[str, float], ...], dict[Key, Any]] = {}
    for key, request in restrictions.items():
        groups.setdefault(tuple(sorted(request.items())), {})[key] = graph[key]
    plain = {key: task for key, task in graph.items() if key not in restrictions}
    layers: dict[str, Any] = {"xlibrary-tasks": MaterializedLayer(plain)}
    for i, (asked, tasks) in enumerate(groups.items()):
        layers[f"xlibrary-resources-{i}"] = MaterializedLayer(
            tasks, annotations={"resources": dict(asked)}
        )
    return HighLevelGraph(layers, {name: set() for name in layers})


def error_of(future: Any) -> BaseException:
    if future.status == "cancelled":
        return CancelledError(f"Dask cancelled the task {future.key!r}")
    try:
        exc = future.exception()
    except Exception as err:  # the exception itself could not be fetched
        return err
    if type(exc).__name__ == "KilledWorker":
        return ClusterError(
            f"Dask gave up on the task (KilledWorker): {exc} In short: the task crashed or "
            "lost the Dask worker running it each time it ran "
            "(distributed.scheduler.allowed-failures); look for a crash, os._exit or "
            "running out of memory in that task"
        )
    return exc if isinstance(exc, BaseException) else RuntimeError(repr(exc))

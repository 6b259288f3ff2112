"""How a stage processes a micro-batch: one instance in order, or chunks at once.

A declared :class:`Stage` (a :class:`~.base.StreamTask`, its parallelism, its name) becomes one
:class:`StageExecutor` for a run:

* :class:`SerialStage` (``parallelism=1``): one instance sees every batch in order, so its
  state is exact. It can snapshot and restore that state, so a batch retried record by record
  (``on_error="skip"`` or ``"dead_letter"``) leaves no trace of the records that raised.
* :class:`ThreadedStage` (``parallelism=N``, the embedded default): each batch split into N
  contiguous chunks, processed at once by N deep copies of the task, the first on the stage's
  own thread, and put back together in order.
* :class:`DaskStage` (``parallelism=N`` with a manager on a ``dask.distributed`` cluster): the
  chunks are Dask tasks; each worker keeps a set-up copy of the task per chunk slot.

Parallel stages hold no state: their snapshot is ``None``.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from .base import StreamError, StreamTask

__all__ = ["DaskStage", "SerialStage", "Stage", "StageExecutor", "ThreadedStage", "split"]


@dataclass(frozen=True)
class Stage:
    """A stage as declared by ``add_stage``."""

    task: StreamTask
    parallelism: int = 1
    name: str = ""


class StageExecutor(Protocol):
    """A stage at work during one run (called from the stage's thread only)."""

    def setup(self) -> None: ...

    def process(self, records: list[Any]) -> list[Any]: ...

    def snapshot(self) -> Any:
        """The stage's state, to ``restore`` after a batch that raised."""
        ...

    def restore(self, state: Any) -> None: ...

    def teardown(self) -> None: ...


class SerialStage:
    """A stage of parallelism 1: one instance, every batch in order, its state exact."""

    def __init__(self, stage: Stage) -> None:
        self.task = stage.task

    def setup(self) -> None:
        self.task.setup()

    def process(self, records: list[Any]) -> list[Any]:
        return as_list(self.task.process_batch(records))

    def snapshot(self) -> dict[str, Any]:
        state = vars(self.task)
        try:
            return copy.deepcopy(state)
        except Exception:  # a lock, a client, a connection: resources, not state, kept as is
            return {name: _copy_or_keep(value) for name, value in state.items()}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            vars(self.task).clear()
            vars(self.task).update(state)

    def teardown(self) -> None:
        self.task.teardown()


def _copy_or_keep(value: Any) -> Any:
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


class ThreadedStage:
    """N copies of a stateless stage, each chunk of a batch on its own thread."""

    def __init__(self, stage: Stage) -> None:
        self.copies = [copy.deepcopy(stage.task) for _ in range(stage.parallelism)]
        # the stage's own thread takes the first chunk: N-1 helpers, one hand-off fewer
        self.pool = ThreadPoolExecutor(
            stage.parallelism - 1, thread_name_prefix=f"stream-{stage.name}"
        )

    def setup(self) -> None:
        for task in self.copies:
            task.setup()

    def process(self, records: list[Any]) -> list[Any]:
        chunks = split(records, len(self.copies))
        # chunks may be fewer than copies (a short batch): the spare copies sit this one out
        pairs = list(zip(self.copies, chunks, strict=False))
        futures = [self.pool.submit(task.process_batch, chunk) for task, chunk in pairs[1:]]
        out = as_list(pairs[0][0].process_batch(pairs[0][1])) if pairs else []
        for future in futures:
            out.extend(as_list(future.result()))
        return out

    def teardown(self) -> None:
        for task in self.copies:
            task.teardown()
        self.pool.shutdown(wait=False)

    def snapshot(self) -> None:  # parallel stages hold no state
        return None

    def restore(self, state: None) -> None:
        pass


class DaskStage:
    """N chunks of each batch as Dask tasks on a cluster; each worker keeps its set-up copies
    of the stage (one per chunk slot), made on first use."""

    def __init__(self, stage: Stage, client: Any, prefix: str) -> None:
        self.client = client
        self.parallelism = stage.parallelism
        self.prefix = f"{prefix}-{stage.name}"
        self.task = client.scatter(stage.task, broadcast=True, hash=False)

    def setup(self) -> None:
        pass  # on each worker, at the first chunk

    def process(self, records: list[Any]) -> list[Any]:
        chunks = split(records, self.parallelism)
        futures = [
            self.client.submit(_dask_chunk, self.task, chunk, f"{self.prefix}-{slot}", pure=False)
            for slot, chunk in enumerate(chunks)
        ]
        out: list[Any] = []
        for part in self.client.gather(futures):
            out.extend(part)
        return out

    def teardown(self) -> None:
        self.client.run(_dask_teardown, self.prefix)

    def snapshot(self) -> None:
        return None

    def restore(self, state: None) -> None:
        pass


_worker_copies: dict[str, StreamTask] = {}


def _dask_chunk(task: StreamTask, chunk: list[Any], slot: str) -> list[Any]:
    """Run on a Dask worker: this slot's set-up copy of the stage processes ``chunk``."""
    copy_ = _worker_copies.get(slot)
    if copy_ is None:
        copy_ = copy.deepcopy(task)
        copy_.setup()  # kept only once set up: a failed setup is tried again next chunk
        _worker_copies[slot] = copy_
    return as_list(copy_.process_batch(chunk))


def _dask_teardown(prefix: str) -> None:
    # slots are "<prefix>-<n>": stage "X" must not take stage "X_1"'s copies with it
    for slot in [s for s in _worker_copies if s.startswith(f"{prefix}-")]:
        _worker_copies.pop(slot).teardown()


def split(records: list[Any], parts: int) -> list[list[Any]]:
    """``records`` in ``parts`` contiguous chunks of near-equal size (empty ones left out)."""
    size, extra = divmod(len(records), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        if end > start:
            chunks.append(records[start:end])
        start = end
    return chunks


def as_list(value: Any) -> list[Any]:
    """What ``process_batch`` returned, as a list (``None``: nothing; a tuple: its items)."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    if isinstance(value, tuple):
        return list(value)
    raise StreamError(f"process_batch must return a list of records, got {type(value).__name__}")

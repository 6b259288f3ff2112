"""What one task of a run produced, as it travels from the task wrapper to the engine.

:class:`Outcome` carries the task's value, or why it has none (a :class:`Failure`, or the
failed task upstream that it goes back to), with its timings and what monitoring measured.
:class:`Failure` is an exception in a form that crosses processes.

On ``dask.distributed`` an outcome travels (to the client, or to a task on another worker)
through :func:`register_with_distributed`'s serializer: a value that cannot be pickled (a
lock, a generator) turns the outcome into the failure of its task, naming the task and the
type, instead of an error that Dask cannot deliver.

These classes are imported by workers, so workers need xlibrary installed.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle
from dask.sizeof import sizeof

from .errors import SerializationError, TaskError
from .keys import task_of
from .states import TaskStatus

if TYPE_CHECKING:
    from .lazy import Held

__all__ = ["Failure", "Outcome", "register_with_distributed"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a task failed, in a form that crosses processes.

    ``exception`` is the task's own exception when it can be pickled; otherwise a
    :class:`TaskError` carrying its type and message. ``traceback`` starts at the user's frames.
    """

    task: str
    type_name: str
    message: str
    traceback: str
    exception: BaseException

    @classmethod
    def from_exception(cls, task: str, exc: BaseException) -> Failure:
        exc_type = type(exc)
        module = exc_type.__module__
        if module in ("builtins", "__main__"):
            type_name = exc_type.__qualname__
        elif module.startswith("xlibrary.pipeline."):  # errors.ValidationError -> public name
            type_name = f"xlibrary.pipeline.{exc_type.__qualname__}"
        else:
            type_name = f"{module}.{exc_type.__qualname__}"
        text = "".join(traceback.format_exception(exc_type, exc, _user_frames(exc.__traceback__)))
        try:
            cloudpickle.dumps(exc)
            kept: BaseException = exc
        except Exception:
            kept = TaskError(f"{type_name}: {exc} (the original exception could not be pickled)")
        return cls(task, type_name, str(exc), text, kept)


def _user_frames(tb: Any) -> Any:
    """Skip the engine's frames at the top of a traceback, so it starts at the user's code."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        tb = tb.tb_next
    return tb


@dataclass(slots=True, kw_only=True)
class Outcome:
    """What one task of a run produced: its value, or why it has none."""

    status: str
    """A :class:`~.states.TaskStatus` (succeeded, cached, failed, skipped), or ``stale``."""
    value: Any = None
    attempts: int = 0
    started: float | None = None
    finished: float | None = None
    failure: Failure | None = None
    cause: str | None = None
    """For a skipped task: the failed task upstream that it goes back to."""
    token: str | None = None
    """Stands for the value in downstream cache keys: the id of its cache entry."""
    source: str | None = None
    """Where a cached value came from: ``cache:<key>`` or ``run:<run id>``."""
    saved: bool = False
    """Whether the value was saved in the store under this run."""
    metrics: dict[str, float] | None = None
    """Custom metrics the task logged with ``log_metric`` (monitored runs)."""
    peak_memory: int | None = None
    """Peak resident memory (bytes) of the process while the task ran (monitored runs)."""
    worker: str | None = None
    """Where the task ran: a Dask worker's address, or ``local``."""
    elements: dict[str, int] | None = None
    """For a mapped task: how many of its elements succeeded and failed."""
    skipped: tuple[int, ...] = ()
    """For a mapped task with ``on_error="skip"``: the first indexes of its failed elements."""
    held: Held | None = None
    """For a Dask collection: what the run settles at its end (its partitions held on the
    cluster, its writes to the store); see :mod:`~.lazy`."""

    def __repr__(self) -> str:
        return f"<Outcome {self.status} attempts={self.attempts}>"

    def without_value(self) -> Outcome:
        """The same outcome with its value left out: how the task went, for reports."""
        return dataclasses.replace(self, value=None)

    @property
    def root_cause(self) -> str | None:
        """The failed task that this outcome (failed or skipped) goes back to."""
        if self.failure is not None:
            return self.failure.task
        return self.cause


def _sizeof_outcome(outcome: Outcome) -> int:
    return int(sizeof(outcome.value)) + 100


# Dask's memory accounting (and its dashboard) should see the task's value, not the envelope.
sizeof.register(Outcome)(_sizeof_outcome)  # type: ignore[no-untyped-call]


# -- outcomes on dask.distributed -------------------------------------------------------------
_registered = False


def register_with_distributed() -> None:
    """Send outcomes through ``dask.distributed`` with a way out (idempotent).

    An outcome leaves its worker for the client or for a task on another worker. When its
    value cannot be pickled (a lock, a generator), Dask alone cannot deliver it: the client
    gets a raw ``TypeError`` and the run is lost, and a task on another worker waits for the
    value for ever. Through this serializer what arrives instead is the failure of its task,
    naming the task and the value's type. It costs nothing more when the value pickles; a
    value that cannot be spilled to disk stays in memory, as Dask does without it.
    """
    global _registered
    if _registered:
        return
    serialize: Any = importlib.import_module("distributed.protocol.serialize")

    def dumps(outcome: Outcome, context: dict[str, Any] | None = None) -> Any:
        try:
            return serialize.pickle_dumps(outcome, context)
        except Exception as exc:
            if context is None:  # spilling to disk, not sending: Dask keeps it in memory
                raise
            return serialize.pickle_dumps(_unsendable(outcome, exc), context)

    serialize.dask_serialize.register(Outcome)(dumps)
    serialize.dask_deserialize.register(Outcome)(serialize.pickle_loads)
    _registered = True


def _unsendable(outcome: Outcome, exc: Exception) -> Outcome:
    """The failure standing for ``outcome``, whose value could not be pickled (``exc``)."""
    name, where = _holder_of(outcome)
    kind = type(outcome.value)
    type_name = kind.__qualname__
    if kind.__module__ != "builtins":
        type_name = f"{kind.__module__}.{type_name}"
    who = f"task {name!r}" if name else "a task"
    error = SerializationError(
        f"{who} returned a {type_name} that cannot be sent from the Dask worker"
        f"{' ' + where if where else ''} to where it is needed: {exc}; return plain data "
        "(dicts, lists, DataFrames, arrays), or run the pipeline on threads (the embedded "
        "backend), where results are not serialized"
    )
    error.__cause__ = exc
    return dataclasses.replace(
        outcome,
        status=TaskStatus.FAILED,
        value=None,
        failure=Failure.from_exception(name, error),
        token=None,
        source=None,
        saved=False,
    )


def _holder_of(outcome: Outcome) -> tuple[str, str]:
    """The task whose outcome this is and the address of the worker holding it, looked up in
    the memory of this process's Dask workers (``""`` when not found: the backend names it)."""
    worker_class = getattr(sys.modules.get("distributed.worker"), "Worker", None)
    try:
        for worker in list(getattr(worker_class, "_instances", ())):
            data = getattr(worker.data, "fast", worker.data)  # in memory, never from disk
            for key, value in list(data.items()):
                task = task_of(key)
                if value is outcome and task is not None:
                    return task, str(worker.address)
    except Exception:  # a worker closing under us: the name is only for the message
        pass
    return "", ""


if "distributed.protocol" in sys.modules:  # a Dask worker (the client's backend registers too)
    register_with_distributed()

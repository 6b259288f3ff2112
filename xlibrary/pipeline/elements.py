"""The in-worker side of a mapped task: its element tasks, and the task that gathers them.

A mapped task (``map_over=``) is lowered, once its input's length is known, to one
:class:`ElementRunner` per element or batch, keyed ``(task, run_id, i)``, and one
:class:`MapGather` keyed ``(task, run_id)`` that assembles the list (:mod:`~.expand`).

* An element runner holds its elements (taken from the mapped input by position when the task
  was lowered), gets the task's other upstream outcomes whole, and calls the function once
  per element, with the task's retry policy,
  timeout and pool applied to each call (the task wrapper's own policy loop). It never
  raises: it returns an :class:`Elements` holding the values and, by index, the failures.
  Its value is not an :class:`~.outcome.Outcome`, so nothing that reads a run's outcomes
  (reports, the progress of a run, the keep-results plumbing) mistakes it for a task's.
* The gather skips as any task does when an upstream task has no value; otherwise it puts the
  values in input order. A failed element fails the task (``on_error="fail"``, naming the
  element's index, the original exception kept as the failure's exception), or its slot holds
  the exception (``on_error="skip"``, counted and logged). The list then goes through a task
  wrapper without a policy, so that the cache, saved intermediates and ``save_to`` treat it
  as the task's result, as for any task.

These classes are imported by workers, so workers need xlibrary installed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .outcome import Failure, Outcome
from .states import DONE, TaskStatus
from .wrapper import TaskWrapper

__all__ = ["ElementRunner", "Elements", "MapGather", "SharedPolicy"]

logger = logging.getLogger("xlibrary.pipeline.elements")


@dataclass(slots=True)
class Elements:
    """What one element task produced: a value per element, the failures by index."""

    values: list[Any]
    failures: dict[int, Failure] = field(default_factory=dict)
    attempts: int = 1
    started: float = 0.0


class SharedPolicy:
    """What all the element tasks of one mapped task share: a task wrapper holding the
    function, retry, timeout and pool (and nothing else), pickled once when first sent."""

    __slots__ = ("payload", "wrapper")

    def __init__(self, wrapper: TaskWrapper, payload: bytes | None = None) -> None:
        self.wrapper = wrapper
        self.payload = payload

    def pickled(self) -> bytes:
        if self.payload is None:
            self.payload = cloudpickle.dumps(self.wrapper)
        return self.payload


class ElementRunner:
    """Runs elements ``start`` to ``start + len(items)`` of a mapped task, one call each.

    ``items`` are those elements, taken from the mapped input on the client when the task was
    lowered, so an element task depends only on the task's other dependencies (and Dask
    places it on any worker, as a task without inputs). The ``shared`` policy's loop (retry,
    timeout, pool) is applied per element; it travels as one payload that each process loads
    once (:func:`_runner_from`).
    """

    __slots__ = ("items", "position", "shared", "start")

    def __init__(self, shared: SharedPolicy, position: int, start: int, items: list[Any]) -> None:
        self.shared = shared
        self.position = position
        self.start = start
        self.items = items

    def __reduce__(self) -> tuple[Any, ...]:
        return (_runner_from, (self.shared.pickled(), self.position, self.start, self.items))

    def __repr__(self) -> str:
        return f"ElementRunner({self.shared.wrapper.name!r}, {self.start}+{len(self.items)})"

    def __dask_tokenize__(self) -> tuple[str, str, int, int]:
        return ("xlibrary.ElementRunner", self.shared.wrapper.name, self.start, id(self))

    def __call__(self, *upstream: Outcome) -> Elements | None:
        for outcome in upstream:
            if outcome.status not in DONE:
                return None  # the gather skips the task
        policy, position = self.shared.wrapper, self.position
        args = [outcome.value for outcome in upstream]
        args.insert(position, None)
        plain = policy.retry is None and policy.timeout is None and policy.pool is None
        func = policy.func
        started = time.time()
        done = Elements(values=[], started=started)
        values, failures = done.values, done.failures
        for index, item in enumerate(self.items, self.start):
            args[position] = item
            if plain:
                try:
                    values.append(func(*args))
                except BaseException as exc:  # as the task wrapper: sys.exit() fails it
                    if isinstance(exc, KeyboardInterrupt) and _in_main_thread():
                        raise  # the user's Ctrl-C in a sequential run
                    values.append(None)
                    failures[index] = Failure.from_exception(policy.name, exc)
                continue
            outcome = policy._run_with_policy(args, started)  # the wrapper's policy, per element
            values.append(outcome.value)
            done.attempts = max(done.attempts, outcome.attempts)
            if outcome.status != TaskStatus.SUCCEEDED and outcome.failure is not None:
                failures[index] = outcome.failure
        return done


_NAMED = 10
"""How many indexes of skipped elements a warning names."""

_loaded: dict[bytes, SharedPolicy] = {}
"""The element policies this process loaded, by payload: a task's elements share one."""
_LOADED_MAX = 64


def _runner_from(payload: bytes, position: int, start: int, items: list[Any]) -> ElementRunner:
    """A pickled ElementRunner, its policy loaded once per process (see its __reduce__)."""
    shared = _loaded.get(payload)
    if shared is None:
        shared = SharedPolicy(cloudpickle.loads(payload), payload)  # code loads as it can
        if len(_loaded) >= _LOADED_MAX:
            _loaded.clear()
        _loaded[payload] = shared
    return ElementRunner(shared, position, start, items)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class MapGather:
    """The task keyed ``(task, run_id)`` of a mapped task: its list, from its element tasks.

    Called with the task's upstream outcomes, then each element task's :class:`Elements` in
    index order. ``store`` is the task's wrapper without a policy (its cache, saving, output
    and measures), given the assembled list as the task's value.
    """

    __slots__ = ("name", "on_error", "store", "upstream")

    def __init__(self, store: TaskWrapper, upstream: int, on_error: str) -> None:
        self.name = store.name
        self.store = store
        self.upstream = upstream
        self.on_error = on_error

    def __repr__(self) -> str:
        return f"MapGather({self.name!r})"

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        return ("xlibrary.MapGather", self.name, id(self))

    def __call__(self, *args: Any) -> Outcome:
        upstream: tuple[Outcome, ...] = args[: self.upstream]
        if any(outcome.status not in DONE for outcome in upstream):
            return self.store(*upstream)  # skipped after the upstream task, as any task
        parts: tuple[Elements, ...] = args[self.upstream :]
        values: list[Any] = []
        failures: dict[int, Failure] = {}
        attempts, started = 1, time.time()
        for part in parts:
            values.extend(part.values)
            failures.update(part.failures)
            attempts = max(attempts, part.attempts)
            started = min(started, part.started)
        counts = {"succeeded": len(values) - len(failures), "failed": len(failures)}
        if failures and self.on_error != "skip":
            index = min(failures)
            failure = failures[index]
            message = f"element {index} of {self.name!r} failed: {failure.type_name}: "
            return Outcome(
                status=TaskStatus.FAILED, attempts=attempts, started=started,
                finished=time.time(), elements=counts,
                failure=Failure(
                    self.name, failure.type_name, message + failure.message,
                    failure.traceback, failure.exception,
                ),
            )  # fmt: skip
        for index, failure in failures.items():
            values[index] = failure.exception
        if failures:
            shown = sorted(failures)
            logger.warning(
                "task %r: %d of %d elements failed and were skipped (on_error='skip'); "
                "their slots hold the exceptions: element %s",
                self.name, len(failures), len(values),
                ", ".join(str(i) for i in shown[:10]) + (" ..." if len(shown) > 10 else ""),
            )  # fmt: skip
        store = self.store
        assembled = TaskWrapper(
            name=store.name, func=_Assembled(values), storage=store.storage,
            measures=store.measures,
        )  # fmt: skip
        outcome = assembled(*upstream)
        outcome.attempts = max(outcome.attempts, attempts)
        outcome.started = min(outcome.started or started, started)
        outcome.elements = counts
        outcome.skipped = tuple(sorted(failures)[:_NAMED])
        return outcome


class _Assembled:
    """The function of a gathered task: its list, whatever its inputs."""

    __slots__ = ("values",)

    def __init__(self, values: list[Any]) -> None:
        self.values = values

    def __call__(self, *_: Any) -> list[Any]:
        return self.values

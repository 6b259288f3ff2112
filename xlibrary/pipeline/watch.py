"""What a backend reports while a run goes, and whether the run was cancelled.

A backend tells a :class:`RunWatch` as tasks start and finish; the watch passes it on to its
listeners (a progress bar, a run's live status, the notebook's live results) and answers
whether the run was cancelled: a task about to start in a cancelled run raises
:class:`~.errors.RunCancelled` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from .errors import RunCancelled

__all__ = ["Listener", "RunWatch", "dask_callbacks"]


class Listener(Protocol):
    def started(self, task: str) -> None: ...

    def done(self, task: str) -> None: ...

    def close(self) -> None: ...


class RunWatch:
    """What a backend reports while a run goes (tasks starting, tasks done), passed on to its
    listeners (a progress bar, a run handle's tracker); and whether the run was cancelled: a
    task about to start in a cancelled run raises RunCancelled instead."""

    def __init__(
        self, listeners: Sequence[Listener] = (), cancel: threading.Event | None = None
    ) -> None:
        self.listeners = list(listeners)
        self.cancel = cancel
        self.probe: Callable[[], Collection[str]] | None = None
        """Set by a backend that does not report starts (a cluster) while the run goes: asks
        which tasks are running now. Called only when someone asks (a status request)."""
        self.finished: dict[str, Any] = {}
        """Filled by the backend when the run stops before its end (cancelled, interrupted,
        an error): the outcomes, without their values, of the tasks that had finished."""
        for listener in self.listeners:
            attach = getattr(listener, "watching", None)
            if attach is not None:
                attach(self)
        # listeners that want each finished task's outcome, value and all (live notebook display)
        self._outcomes: list[Callable[[str, Any], None]] = [
            hears for hears in (getattr(x, "outcome", None) for x in self.listeners) if hears
        ]

    def begin(self, tasks: int) -> None:
        """The run computes ``tasks`` tasks: told to the listeners that count (a progress
        bar)."""
        for listener in self.listeners:
            begin = getattr(listener, "begin", None)
            if begin is not None:
                begin(tasks)

    def running(self) -> Collection[str]:
        """The tasks running now, as far as the backend's probe can tell (else nothing)."""
        probe = self.probe
        if probe is None:
            return ()
        try:
            return probe()
        except Exception:  # a status answer must not fail because the scheduler did not reply
            return ()

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def started(self, task: str) -> None:
        cancel = self.cancel
        if cancel is not None and cancel.is_set():
            raise RunCancelled(f"the run was cancelled before task {task!r} started")
        for listener in self.listeners:
            listener.started(task)

    def done(self, task: str, outcome: Any = None) -> None:
        """``task`` has finished; ``outcome`` (with its value) where the backend has it here."""
        for listener in self.listeners:
            listener.done(task)
        if outcome is not None:
            for hears in self._outcomes:
                hears(task, outcome)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


def dask_callbacks(watch: RunWatch) -> tuple[Any, ...]:
    """Callbacks for one call of Dask's local scheduler (``get(..., callbacks=[...])``):
    ``(start, start_state, pretask, posttask, finish)``, feeding ``watch``."""

    started, done = watch.started, watch.done  # called twice a task: kept lean

    def pretask(key: Any, dsk: Any, state: Any) -> None:
        # a run's keys are (task name, run id), or (group, run id, task name) in a large run;
        # a mapped task's elements (task, run id, i): the first element starts the task, the
        # others only check for a cancel (keys.py)
        if len(key) == 2:
            started(key[0])
        elif type(third := key[2]) is str:
            started(third)
        elif third == 0:
            started(key[0])
        elif watch.cancelled:
            raise RunCancelled(f"the run was cancelled while task {key[0]!r} ran")

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if len(key) == 2:
            done(key[0], result)
        elif type(key[2]) is str:
            done(key[2], result)
        # an element is not a task: its task is done when gathered

    return (None, None, pretask, posttask, None)

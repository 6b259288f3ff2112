"""A progress bar for runs: tasks done of the total, and the task that last started.

Drawn with tqdm (``tqdm.auto``: text in a terminal, a widget in a notebook). Shown when
``display_progress`` is set and the output is a terminal or a notebook, or always when a run
asks for it (``execute_pipeline(..., display_progress=True)``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from ..errors import RunCancelled, missing_extra

__all__ = ["Progress", "RunWatch", "dask_callbacks", "wanted"]


def wanted(setting: bool, asked: bool | None) -> bool:
    """Whether to show progress: asked for explicitly, or set and somewhere to show it."""
    if asked is not None:
        return asked
    if not setting:
        return False
    return "ipykernel" in sys.modules or sys.stderr.isatty()


class Progress:
    """One run's progress bar."""

    def __init__(self, total: int, pipeline: str) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:  # pragma: no cover - tqdm comes with the pipeline extra
            raise missing_extra("tqdm", "pipeline", "display_progress") from exc
        self._bar = tqdm(total=total, desc=pipeline, unit="task", leave=True)

    def started(self, task: str) -> None:
        self._bar.set_postfix_str(task, refresh=False)

    def done(self, task: str) -> None:
        self._bar.set_postfix_str(task, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


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


def dask_callbacks(progress: RunWatch) -> tuple[Any, ...]:
    """Callbacks for one call of Dask's local scheduler (``get(..., callbacks=[...])``):
    ``(start, start_state, pretask, posttask, finish)``, feeding ``progress``."""

    started, done = progress.started, progress.done  # called twice a task: kept lean

    def pretask(key: Any, dsk: Any, state: Any) -> None:
        started(key[0])  # a run's keys are (task name, run id)

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        done(key[0], result)

    return (None, None, pretask, posttask, None)

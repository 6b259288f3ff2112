"""Named outputs in a run: the check of a task's result against its ``outputs``, and the
Dask tasks that pick one output of it (see :mod:`~.compose`).

* :class:`CheckedOutputs` stands for the function of a task declared with ``outputs=[...]``:
  it calls the function and fails the task with :class:`~.errors.TaskOutputError` when the
  result does not fit (not a tuple, list or mapping; the wrong number of values; a missing
  key), so the task that returned it is the one that fails, naming what was wrong.
* :class:`OutputPicker` is what an output task runs: it takes its task's outcome and returns
  the outcome of one part of the value, whose token (standing for it in downstream cache
  keys) is the task's token with the output's name (:func:`~.compose.output_token`), as the
  plan computes it before the run. After a task that has no value it is skipped, as any task.

These classes are imported by workers, so workers need xlibrary installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .compose import OutputOf, output_token
from .datasets import Dataset
from .errors import SerializationError, TaskOutputError
from .outcome import Failure, Outcome
from .states import DONE, TaskStatus

__all__ = ["CheckedOutputs", "OutputPicker", "check_outputs"]


def check_outputs(task: str, outputs: tuple[str, ...], value: Any) -> None:
    """Raise TaskOutputError when ``value`` does not fit ``outputs``."""
    if isinstance(value, Mapping):
        missing = [name for name in outputs if name not in value]
        if missing:
            raise TaskOutputError(
                f"task {task!r} declares the outputs {list(outputs)} and returned a mapping "
                f"without {', '.join(map(repr, missing))} (its keys: "
                f"{', '.join(map(repr, list(value)[:10]))}); return a key for every output"
            )
        return
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        if len(value) != len(outputs):
            raise TaskOutputError(
                f"task {task!r} declares {len(outputs)} outputs {list(outputs)} and returned "
                f"{len(value)} value{'s' if len(value) != 1 else ''}; return one value per "
                "output, in that order (or a mapping with a key per output)"
            )
        return
    raise TaskOutputError(
        f"task {task!r} declares the outputs {list(outputs)} and returned a "
        f"{type(value).__name__}; return a tuple of {len(outputs)} values, in that order, or a "
        "mapping with a key per output"
    )


class CheckedOutputs:
    """A task's function, its result checked against the task's named outputs."""

    __slots__ = ("func", "outputs", "task")

    def __init__(self, task: str, func: Callable[..., Any], outputs: tuple[str, ...]) -> None:
        self.task = task
        self.func = func
        self.outputs = outputs

    def __call__(self, *args: Any) -> Any:
        value = self.func(*args)
        check_outputs(self.task, self.outputs, value)
        return value

    def __repr__(self) -> str:
        return f"CheckedOutputs({self.task!r}, {self.func!r})"


class OutputPicker:
    """What an output task runs: one output of its task's outcome."""

    __slots__ = ("name", "output", "pick", "run_id")

    def __init__(
        self, name: str, pick: OutputOf, output: Dataset | None = None, run_id: str = ""
    ) -> None:
        self.name = name
        self.pick = pick
        self.output = output
        """Where the output is written once picked (its own ``save_to``)."""
        self.run_id = run_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (OutputPicker, (self.name, self.pick, self.output, self.run_id))

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        return ("xlibrary.OutputPicker", self.name, id(self))

    def __call__(self, upstream: Outcome) -> Outcome:
        if upstream.status not in DONE:
            failure = upstream.failure
            if failure is not None and not isinstance(failure.exception, SerializationError):
                failure = None
            return Outcome(status=TaskStatus.SKIPPED, failure=failure, cause=upstream.root_cause)
        started = time.time()
        token = upstream.token
        value = self.pick(upstream.value)
        output = self.output
        if output is not None:
            try:
                output.save(value, version=self.run_id if output.versioned else None)
            except Exception as exc:  # a declared output that was not written fails the task
                return Outcome(
                    status=TaskStatus.FAILED, attempts=1, started=started, finished=time.time(),
                    failure=Failure.from_exception(self.name, exc),
                )  # fmt: skip
        return Outcome(
            status=TaskStatus.SUCCEEDED,
            value=value,
            attempts=1,
            started=started,
            finished=time.time(),
            token=None if token is None else output_token(token, self.pick.output),
        )

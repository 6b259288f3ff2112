"""Declare: what ``map_over=`` asks of a task, and what a mapped task accepts as its input.

A task declared ``map_over="files"`` is called once per element of the ``files`` result, with
the element in that argument's place and its other dependencies whole; its result is the list
of the calls' results, in input order. ``batch_size`` runs the elements in batches, several
inside one Dask task (an int, or ``"auto"``: see :func:`auto_batch_size`); ``on_error="skip"``
keeps going past a failing element, whose slot in the result is the exception.

What a single spec can get wrong is checked when the task is declared
(:func:`check_map`); whether the input is a sequence is known only when it arrives
(:func:`elements_of`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from typing import Any, Protocol

from .errors import MapInputError, PipelineDefinitionError

__all__ = ["ON_ERROR", "Indexable", "auto_batch_size", "check_map", "elements_of", "map_mark"]

ON_ERROR = ("fail", "skip")

AUTO_BATCHES_PER_THREAD = 4
"""``batch_size="auto"``: how many batches each worker thread gets."""


class _MapSpec(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def depends_on(self) -> tuple[str, ...]: ...
    @property
    def map_over(self) -> str | None: ...
    @property
    def batch_size(self) -> int | str | None: ...
    @property
    def on_error(self) -> str | None: ...


class Indexable(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> Any: ...


def check_map(task: _MapSpec) -> None:
    """Refuse ``map_over``, ``batch_size`` and ``on_error`` values that cannot work."""
    name, map_over = task.name, task.map_over
    if map_over is None:
        for option in ("batch_size", "on_error"):
            if getattr(task, option) is not None:
                raise PipelineDefinitionError(
                    f"task {name!r}: {option}= applies to mapped tasks only; add "
                    f'map_over="<dependency>" (one of depends_on) or leave {option} out'
                )
        return
    if not isinstance(map_over, str) or map_over not in task.depends_on:
        listed = ", ".join(repr(dep) for dep in task.depends_on) or "none"
        raise PipelineDefinitionError(
            f"task {name!r}: map_over={map_over!r} must name one of its dependencies "
            f"(depends_on: {listed}); the task is called once per element of that result"
        )
    if getattr(task, "outputs", None) is not None:
        raise PipelineDefinitionError(
            f"task {name!r}: outputs= cannot be combined with map_over= (a mapped task's "
            "result is the list of its elements' results); map a second task over the parts"
        )
    size = task.batch_size
    if size not in (None, "auto") and (
        isinstance(size, bool) or not isinstance(size, int) or size < 1
    ):
        raise PipelineDefinitionError(
            f'task {name!r}: batch_size must be a whole number above 0 or "auto", got {size!r}'
        )
    if task.on_error is not None and task.on_error not in ON_ERROR:
        raise PipelineDefinitionError(
            f'task {name!r}: on_error must be "fail" (one failing element fails the task) '
            f'or "skip" (its slot holds the exception), got {task.on_error!r}'
        )


def map_mark(task: _MapSpec) -> str:
    """What mapping adds to a task's code fingerprint (so to its derived cache keys): mapped
    or not, over which input, and whether failed elements are kept; ``""`` unmapped."""
    if task.map_over is None:
        return ""
    return f"|map_over={task.map_over}|on_error={task.on_error or 'fail'}"


class _ByPosition:
    """A pandas Series by position (``series[i]`` would look up the label ``i``)."""

    __slots__ = ("_iloc", "_len")

    def __init__(self, series: Any) -> None:
        self._iloc = series.iloc
        self._len = len(series)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Any:
        return self._iloc[index]


def elements_of(task: str, dependency: str, value: Any) -> Indexable:
    """``value`` as something whose elements can be taken by position, or MapInputError."""
    kind = type(value)
    shown = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    problem = None
    if isinstance(value, str | bytes | bytearray):
        problem = "a string is not mapped over character by character"
    elif isinstance(value, Mapping) or hasattr(value, "columns"):
        problem = "a mapping (or table) has no order of elements to map over"
    elif isinstance(value, Set):
        problem = "a set has no order, and the results come back in input order"
    elif getattr(kind, "__dask_graph__", None) is not None:
        problem = "a lazy Dask collection must be computed first"
    elif not (hasattr(value, "__len__") and hasattr(value, "__getitem__")):
        problem = "it has no length or no elements by position"
    elif getattr(value, "ndim", 1) == 0:
        problem = "a 0-dimensional array has no elements"
    if problem is not None:
        raise MapInputError(
            f"task {task!r} maps over {dependency!r}, which gave a {shown}: {problem}. "
            f"Return a sequence from {dependency!r} (a list, tuple, range, NumPy array or "
            f"pandas Series), e.g. list(...) or sorted(...) of it"
        )
    if hasattr(value, "iloc"):  # pandas Series: by position, not by label
        return _ByPosition(value)
    indexable: Indexable = value
    return indexable


def auto_batch_size(count: int, threads: int) -> int:
    """``batch_size="auto"``: about :data:`AUTO_BATCHES_PER_THREAD` batches per worker
    thread, so that each Dask task carries many elements (its overhead shared out) while
    every thread stays busy and a slow batch can still be balanced against the others."""
    batches = max(1, threads) * AUTO_BATCHES_PER_THREAD
    return max(1, math.ceil(count / batches))

"""The Dask keys of a run's tasks: made here, and read back here.

A task's key is ``(task_name, run_id)``: Dask's dashboard, task stream and progress bars group
keys by their *prefix*, ``key_split(key)``, which for a tuple is ``key_split(key[0])``, so each
task shows under its own name, and two runs never share a key.

A distributed scheduler keeps bookkeeping per prefix (``_calc_occupancy``,
``_get_prefix_duration``) that grows with their number: with one prefix per task, a graph of
thousands of tasks costs it several times as much a task as the same graph with a few prefixes
(5,000 tasks on a 2-worker LocalCluster: 3.8 ms a task with one prefix, 6.9 ms with one per
task, distributed 2026.8). So a run of more than :data:`GROUP_ABOVE` tasks keys each task
``(group, run_id, task_name)``: ``group`` is the task's name without its trailing numbers and
separators (``transform_customers_07`` -> ``transform_customers``), so the tasks of one kind
share a prefix, and the key still names its task.

Keys of three parts are told apart by their third part: a ``str`` is a task name (a grouped
key), an ``int`` is the index of an element of a mapped task, ``(task_name, run_id, i)``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "GROUP_ABOVE",
    "Key",
    "element_of",
    "group_of",
    "grouped",
    "name_in",
    "run_of",
    "task_key",
    "task_of",
]

Key = tuple[str, str] | tuple[str, str, str]

GROUP_ABOVE = 1_000
"""Runs of more tasks than this key their tasks by group (read when a run is lowered)."""

_NUMBERING = "0123456789_-.: "
"""What a name's trailing numbering is made of: digits and separators."""


def group_of(name: str) -> str:
    """``name`` without its trailing numbers and separators (``block_3_17`` -> ``block``);
    ``name`` itself when nothing else would be left."""
    return name.rstrip(_NUMBERING) or name


def grouped(tasks: int) -> bool:
    """Whether a run of ``tasks`` tasks keys them by group."""
    return tasks > GROUP_ABOVE


def task_key(name: str, run_id: str, *, by_group: bool = False) -> Key:
    """The key of task ``name`` in run ``run_id``; ``by_group``: under its group's prefix."""
    return (group_of(name), run_id, name) if by_group else (name, run_id)


def name_in(key: Any) -> str:
    """The task of a key made by :func:`task_key` (or of an element of a mapped task): the
    lean reader for keys known to be a run's."""
    return key[2] if len(key) == 3 and type(key[2]) is str else key[0]


def task_of(key: Any) -> str | None:
    """The task a key of a run belongs to (a mapped task's, for an element's key), or
    ``None`` for a key that is not a run's."""
    if type(key) is not tuple or not 2 <= len(key) <= 3:
        return None
    name = key[2] if len(key) == 3 and type(key[2]) is str else key[0]
    return name if type(name) is str else None


def element_of(key: Any) -> int | None:
    """The index ``i`` of an element's key ``(task, run_id, i)``, else ``None``."""
    if type(key) is tuple and len(key) == 3 and type(key[2]) is int:
        return key[2]
    return None


def run_of(key: Any) -> str | None:
    """The run id of a key of a run, or ``None`` for a key that is not a run's."""
    if type(key) is not tuple or not 2 <= len(key) <= 3 or type(key[1]) is not str:
        return None
    return key[1]

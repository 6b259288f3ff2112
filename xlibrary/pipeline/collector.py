"""Python's cyclic garbage collector, paused while the engine builds what will all survive.

Planning, lowering and collecting a run allocate a few objects per task (specs, steps, Dask
tasks, records), and keep every one of them. The collector's young generations are examined
every 700 allocations, and each pass over objects that all survive is wasted: at 100,000 tasks
that is a third to a half of the time those stages take. :func:`paused` turns the collector
off for such a stage, which runs no user code, and on again after it (only if it was on: a
program that turned it off keeps it off). Nested and concurrent pauses count: the collector
comes back when the last one ends. Reference counting frees everything as usual meanwhile;
only cycles wait for the next collection.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused"]

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    """The collector off for the ``with`` block (see the module docstring)."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()

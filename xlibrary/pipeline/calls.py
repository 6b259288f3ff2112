"""Calling a task's function under a timeout, a pool's place, or both.

Python cannot kill a thread: a call with a timeout runs in a helper thread, and the caller
stops waiting when the time is up (:class:`~.errors.TaskTimeoutError`); the helper runs on
until the function returns, and its result is thrown away.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

from .errors import TaskTimeoutError
from .pools import Pool

__all__ = ["call_in_pool", "call_with_timeout"]


def call_in_pool(
    func: Callable[..., Any], args: list[Any], timeout: float | None, name: str, pool: Pool
) -> Any:
    """Call ``func`` holding a place in ``pool`` (see :mod:`~.pools`)."""
    if timeout is not None:
        return call_with_timeout(func, args, timeout, name, pool)
    pool.acquire()
    try:
        return func(*args)
    finally:
        pool.release()


def call_with_timeout(
    func: Callable[..., Any], args: list[Any], timeout: float, name: str, pool: Pool | None = None
) -> Any:
    """Run ``func`` in a helper thread and stop waiting after ``timeout`` seconds.

    Python cannot kill a thread: on timeout the helper (a daemon thread) runs on until the
    function returns, and its result is thrown away. With a ``pool``, the helper takes its
    place first (the wait does not count against ``timeout``) and gives it back when the
    function returns.
    """
    box: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()
    placed = threading.Event()

    def target() -> None:
        try:
            if pool is not None:
                pool.acquire()
            placed.set()
            try:
                box.append((True, context.run(func, *args)))
            finally:
                if pool is not None:
                    pool.release()
        except BaseException as exc:
            box.append((False, exc))
            placed.set()

    thread = threading.Thread(target=target, name=f"xlibrary-task-{name}", daemon=True)
    thread.start()
    if pool is not None:
        placed.wait()
    thread.join(timeout)
    if thread.is_alive():
        raise TaskTimeoutError(
            f"task {name!r} ran longer than its timeout of {timeout:g}s and was abandoned "
            "(its thread runs on in the background until the function returns); raise "
            "fault_tolerance.task_timeout or the task's timeout= if it needs longer"
        )
    ok, value = box[0]
    if ok:
        return value
    raise value

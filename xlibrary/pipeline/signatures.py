"""What the engine reads of a task's function, read once per function.

Declaring and planning a pipeline ask each task's function for its signature (does it take one
result per dependency? which keyword-only parameters, with which defaults?) and its docstring.
``inspect.signature`` costs tens of microseconds, and a large pipeline often has one function
behind thousands of tasks (``Task(f"leaf_{i}", inc, ...)``), so for a plain function the
answers are kept beside it (weakly: they go with the function). They are read again when the
function's code, defaults, docstring, ``__signature__`` or ``__wrapped__`` change. Any other
callable (a ``functools.partial``, a callable object, a builtin) is read every time.
"""

from __future__ import annotations

import functools
import inspect
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["bind_problem", "keyword_only", "signature_of", "summary_of"]

_MISSING = object()


class _Read:
    """What was read of one function, and the attributes it was read from."""

    __slots__ = ("calls", "keywords", "signature", "stamp", "summary")

    def __init__(self, stamp: tuple[Any, ...], func: Callable[..., Any]) -> None:
        self.stamp = stamp
        self.signature = _signature(func)
        self.keywords: dict[str, Any] = (
            {}
            if self.signature is None
            else {
                name: parameter.default
                for name, parameter in self.signature.parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY
            }
        )
        self.calls: dict[int, str | None] = {}
        self.summary: Any = _MISSING


_read: dict[int, tuple[weakref.ref[Any], _Read]] = {}
"""By ``id`` of the function, with a weak reference to it (a WeakKeyDictionary's lookups
cost a microsecond each, in Python); an entry leaves when its function goes."""


def _forget(ref: weakref.ref[Any], ident: int) -> None:
    entry = _read.get(ident)
    if entry is not None and entry[0] is ref:
        del _read[ident]


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have no signature
        return None


def _stamp(func: types.FunctionType) -> tuple[Any, ...]:
    extra = func.__dict__
    return (
        func.__code__,
        func.__defaults__,
        func.__kwdefaults__,
        func.__doc__,
        extra.get("__signature__"),
        extra.get("__wrapped__"),
    )


def _of(func: Callable[..., Any]) -> _Read:
    if type(func) is not types.FunctionType:
        return _Read((), func)
    stamp = _stamp(func)
    entry = _read.get(id(func))
    if entry is not None and entry[0]() is func and entry[1].stamp == stamp:
        return entry[1]  # the stamps compare item by item, identity first
    read = _Read(stamp, func)
    ident = id(func)
    _read[ident] = (weakref.ref(func, functools.partial(_forget, ident=ident)), read)
    return read


def signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    """``inspect.signature(func)``, or ``None`` for a callable without one."""
    return _of(func).signature


def keyword_only(func: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only parameters of ``func`` and their defaults (a new dict)."""
    return dict(_of(func).keywords)


def bind_problem(func: Callable[..., Any], positional: int) -> str | None:
    """Why ``func`` cannot be called with ``positional`` arguments and its keyword-only
    parameters, or ``None`` when it can (or has no signature to tell)."""
    read = _of(func)
    if positional in read.calls:
        return read.calls[positional]
    problem = None
    if read.signature is not None:
        try:
            read.signature.bind(*range(positional), **dict.fromkeys(read.keywords))
        except TypeError as exc:
            problem = str(exc)
    read.calls[positional] = problem
    return problem


def summary_of(func: Callable[..., Any]) -> str | None:
    """The first line of a plain function's docstring (``None`` for other callables)."""
    if not inspect.isfunction(func):
        return None
    read = _of(func)
    if read.summary is _MISSING:
        doc = inspect.getdoc(func)
        read.summary = doc.splitlines()[0] if doc else None
    return read.summary  # type: ignore[no-any-return]

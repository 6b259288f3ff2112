"""Fingerprints for derived cache keys: a function's code, and the values a task receives.

A derived key is ``hash(task name, code fingerprint, input tokens)``:

* the **code fingerprint** hashes the function's bytecode, constants (nested functions and
  lambdas included), names, defaults and closure values, and, one level at a time, the
  same of the plain functions of its own module that it calls by name; so editing the task
  or a helper beside it changes the key, while reformatting or comments do not. Code in other
  modules (libraries) is not followed: their versions are not part of the key.
* an **input token** is ``dask.base.tokenize`` of an upstream value, or, when that value came
  from the cache or was just written to it, that entry's id (no need to hash it again);
* **extra** parts: the tokens of the parameter values the task uses, the identity and
  fingerprint of the dataset a source task loads, the identity of the task's output.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

from dask.base import tokenize

__all__ = ["UnhashableInput", "code_fingerprint", "derive_key", "input_token"]

_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


class UnhashableInput(Exception):
    """A value that ``dask.base.tokenize`` cannot hash deterministically."""


def code_fingerprint(func: Callable[..., Any]) -> str:
    """A hex digest that changes when ``func``'s code (or a helper in its module) changes."""
    digest = hashlib.sha256(_PYTHON.encode())
    _feed_function(digest, func, set(), depth=0)
    return digest.hexdigest()[:32]


def _feed_function(digest: Any, func: Any, seen: set[int], depth: int) -> None:
    if id(func) in seen:
        return
    seen.add(id(func))
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    if code is None:  # a builtin or a callable object: its type and repr stand for it
        target = type(func).__dict__.get("__call__")  # a callable object's own method
        if isinstance(target, types.FunctionType):
            _feed_function(digest, target, seen, depth)
        digest.update(f"{type(func).__module__}.{type(func).__qualname__}".encode())
        return
    _feed_code(digest, code)
    for value in (getattr(func, "__defaults__", None), getattr(func, "__kwdefaults__", None)):
        digest.update(_token_or_type(value).encode())
    for cell in getattr(func, "__closure__", None) or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(contents, types.FunctionType):
            _feed_function(digest, contents, seen, depth + 1)
        else:
            digest.update(_token_or_type(contents).encode())
    if depth >= 3:
        return
    module = getattr(func, "__module__", None)
    globals_ = getattr(func, "__globals__", {})
    for name in _names(code):
        helper = globals_.get(name)
        if isinstance(helper, types.FunctionType) and helper.__module__ == module:
            _feed_function(digest, helper, seen, depth + 1)


def _names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_names(const))
    return names


def _feed_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    digest.update(repr(code.co_varnames).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            digest.update(repr(const).encode())


def _token_or_type(value: Any) -> str:
    try:
        return str(tokenize(value, ensure_deterministic=True))
    except Exception:
        return f"<{type(value).__qualname__}>"


def input_token(value: Any) -> str:
    """``dask.base.tokenize`` of ``value``; raises UnhashableInput when not deterministic."""
    try:
        return str(tokenize(value, ensure_deterministic=True))
    except Exception as exc:
        raise UnhashableInput(f"{type(value).__qualname__}: {exc}") from exc


def derive_key(task: str, code: str, inputs: Sequence[str], extra: Sequence[str] = ()) -> str:
    """The cache key of a task from its name, code fingerprint and input tokens, and the
    ``extra`` parts its parameters and datasets give (see :mod:`~.inputs`)."""
    if extra:
        return f"{task}-{tokenize('xlibrary.pipeline/1', task, code, list(inputs), list(extra))}"
    return f"{task}-{tokenize('xlibrary.pipeline/1', task, code, list(inputs))}"

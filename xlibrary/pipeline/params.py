"""Declare: pipeline parameters, the keyword-only parameters of task functions.

A task's positional parameters take the results of its dependencies, as always; its
**keyword-only** parameters are pipeline parameters::

    @pipeline.task("split_data", depends_on=["model_input_table"])
    def split_data(model_input, *, test_size=0.2, random_state=3): ...

A parameter's value comes from, later winning: the function's default;
``Pipeline(name, params={...})``; the run's ``params=`` (``pm.execute_pipeline``,
``pm.submit``, the command line's ``--params FILE`` and ``--param k=v``, the web API's run
body). A task in namespace ``ds`` looks ``p`` up as ``ds.p`` first, then ``p``, in each of
those sources, so one value serves every namespace unless a namespaced one is given.

:func:`bind` checks them before any task runs: a name that no task takes is a
:class:`~.errors.ConfigError` naming the closest one; a parameter with no value anywhere is
one naming the tasks that need it. The values a task uses are part of its cache key
(:func:`param_token`) and of the run record.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dask.base import tokenize

from .errors import ConfigError, did_you_mean
from .signatures import keyword_only

__all__ = [
    "REQUIRED",
    "BoundParams",
    "TaskParams",
    "bind",
    "check_params",
    "param_token",
    "parameters_of",
    "shown",
]

REQUIRED: Any = inspect.Parameter.empty
"""The default of a parameter that has none: a value must come from elsewhere."""

_SHOWN_CHARS = 60


def parameters_of(func: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only parameters of ``func`` and their defaults (``REQUIRED``: none)."""
    return keyword_only(func)  # read once per function (signatures.py)


def check_params(params: object, where: str) -> dict[str, Any]:
    """``params`` as a dict of values by parameter name, or a ConfigError saying why not."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"{where}: params must be a dict of values by parameter name, such as "
            f'{{"test_size": 0.3}}, got {type(params).__name__}'
        )
    for name in params:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: a parameter name must be a non-empty string, got {name!r}")
    return dict(params)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskParams:
    """What :func:`bind` needs of one task: its name, namespace and declared parameters."""

    task: str
    declared: Mapping[str, Any]
    """Parameter name → the function's default (``REQUIRED``: none)."""
    namespace: str | None = None


@dataclass(frozen=True, kw_only=True)
class BoundParams:
    """The parameter values of one run."""

    tasks: Mapping[str, Mapping[str, Any]]
    """Task → the values it is called with, by parameter name (tasks with parameters only)."""
    values: Mapping[str, Any]
    """Every value the run uses, by the name it was found under (``ds.p`` or ``p``): what the
    run record shows."""


def bind(tasks: Sequence[TaskParams], *sources: Mapping[str, Any], pipeline: str) -> BoundParams:
    """The values each task is called with, from ``sources`` (earliest first: the pipeline's
    ``params``, then the run's); see the module docstring for the rules and the errors."""
    known: dict[str, list[str]] = {}
    for task in tasks:
        for name in task.declared:
            known.setdefault(name, []).append(task.task)
            if task.namespace:
                known.setdefault(f"{task.namespace}.{name}", []).append(task.task)
    for source in sources:
        for name in source:
            if name not in known:
                raise ConfigError(_unknown(name, known, pipeline))
    found: dict[str, dict[str, Any]] = {}
    values: dict[str, Any] = {}
    missing: dict[str, list[str]] = {}
    layers = tuple(reversed(sources))  # the latest wins
    for task in tasks:
        names = _lookup_names(task)
        for name, default in task.declared.items():
            hit = _find(layers, names[name])
            if hit is None:
                if default is REQUIRED:
                    missing.setdefault(name, []).append(task.task)
                    continue
                value, used = default, name
                values.setdefault(used, value)
            else:
                used, value = hit
                values[used] = value
            found.setdefault(task.task, {})[name] = value
    if missing:
        raise ConfigError(_missing(missing, pipeline))
    return BoundParams(tasks=found, values=values)


def _lookup_names(task: TaskParams) -> dict[str, tuple[str, ...]]:
    space = task.namespace
    return {n: (f"{space}.{n}", n) if space else (n,) for n in task.declared}


def _find(layers: Sequence[Mapping[str, Any]], names: tuple[str, ...]) -> tuple[str, Any] | None:
    for layer in layers:
        for name in names:
            if name in layer:
                return name, layer[name]
    return None


def _unknown(name: str, known: Mapping[str, list[str]], pipeline: str) -> str:
    if not known:
        return (
            f"unknown parameter {name!r}: no task of pipeline {pipeline!r} takes parameters "
            "(a task's keyword-only parameters are its pipeline parameters: "
            "def split(data, *, test_size=0.2))"
        )
    return (
        f"unknown parameter {name!r} for pipeline {pipeline!r}{did_you_mean(name, known)} "
        f"(its tasks take: {', '.join(sorted(known))})"
    )


def _missing(missing: Mapping[str, list[str]], pipeline: str) -> str:
    parts = [
        f"{name!r} (needed by {', '.join(map(repr, tasks))})" for name, tasks in missing.items()
    ]
    example = next(iter(missing))
    return (
        f"pipeline {pipeline!r}: no value for parameter{'s' if len(parts) > 1 else ''} "
        f"{', '.join(parts)}; give one with params={{{example!r}: ...}} when running "
        "(or Pipeline(..., params=...), or a default in the function)"
    )


def param_token(value: Any) -> str | None:
    """A deterministic token of a parameter value for cache keys; ``None`` when ``value``
    cannot be hashed deterministically."""
    try:
        return str(tokenize(value, ensure_deterministic=True))
    except Exception:
        return None


def shown(value: Any) -> str:
    """A parameter value in a message: its repr, cut to a line."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"

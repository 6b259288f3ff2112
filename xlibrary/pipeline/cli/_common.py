"""What the commands share: bad input as one line, loading a file's pipeline, reading a
config, and printing tables."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import re
import sys
import traceback
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from ..errors import PipelineError, did_you_mean
from ..manager import PipelineManager
from ..pipeline import Pipeline

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_T = TypeVar("_T")


class UsageError(Exception):
    """Bad input on the command line: printed as one line, exit code 2."""


# -- loading -------------------------------------------------------------------------------------
def load_file(path: Path) -> ModuleType:
    """Import the Python file at ``path`` as a module (its ``__main__`` block does not run).

    The module's functions are pickled by value, so workers need not import the file.
    """
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    if path.suffix != ".py":
        raise UsageError(f"{path} is not a Python file; give the .py file that declares it")
    name = "xlibrary_pipeline_file_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - .py files always have one
        raise UsageError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # the file's own imports of its neighbours work
    try:
        spec.loader.exec_module(module)
    except PipelineError:
        raise
    except Exception as exc:
        traceback.print_exc()
        raise UsageError(f"{path} raised {type(exc).__name__} while loading: {exc}") from exc
    finally:
        sys.path.remove(folder)
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except ImportError:  # pragma: no cover - cloudpickle comes with dask
        pass
    return module


def find_pipeline(module: ModuleType, wanted: str | None, path: str) -> Pipeline:
    """The pipeline of ``module`` named ``wanted`` (pipeline or variable name), or its only one."""
    found = {name: v for name, v in vars(module).items() if isinstance(v, Pipeline)}
    pipelines = unique(found.values())
    if wanted is not None:
        for variable, pipeline in found.items():
            if wanted in (variable, pipeline.name):
                return pipeline
        names = [p.name for p in pipelines]
        raise UsageError(
            f"{path} has no pipeline {wanted!r}{did_you_mean(wanted, names)} "
            f"(pipelines: {', '.join(names) or 'none'})"
        )
    if len(pipelines) == 1:
        return pipelines[0]
    if not pipelines:
        raise UsageError(f"{path} declares no Pipeline at module level")
    listed = ", ".join(p.name for p in pipelines)
    raise UsageError(f"{path} declares several pipelines ({listed}); pick one: {path}:NAME")


def unique(values: Iterable[_T]) -> list[_T]:
    seen: dict[int, _T] = {}
    for value in values:
        seen.setdefault(id(value), value)
    return list(seen.values())


@contextlib.contextmanager
def manager(args: argparse.Namespace) -> Iterator[PipelineManager]:
    """A manager of ``--config`` and ``--store``, closed at the end."""
    with PipelineManager(config_of(args)) as pm:
        yield pm


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    config = read_config(args.config) if args.config else {}
    if args.store:
        store = config.get("store")
        config["store"] = {**(store if isinstance(store, dict) else {}), "url": args.store}
    return config


def read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    yaml = path.suffix.lower() in (".yaml", ".yml")
    config = _parse_yaml(text, path) if yaml else _parse_json(text, path)
    if not isinstance(config, dict):
        raise UsageError(f"config file {path} must hold a mapping of settings")
    return config


def params_of(path: Path | None, pairs: Sequence[str]) -> dict[str, Any] | None:
    """The run's parameter values: from the YAML file at ``path``, then each ``NAME=VALUE``
    (the value read as YAML: ``0.3`` is a number, ``[a, b]`` a list)."""
    if path is None and not pairs:
        return None
    params: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the parameters file {path}: {exc}") from exc
        found = _yaml_value(text, f"the parameters file {path}")
        if found is not None and not isinstance(found, dict):
            raise UsageError(
                f"the parameters file {path} must map parameter names to values "
                f"(test_size: 0.2), got {type(found).__name__}"
            )
        params.update(found or {})
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise UsageError(
                f"--param takes NAME=VALUE, such as --param test_size=0.3; got {pair!r}"
            )
        params[name.strip()] = _yaml_value(value, f"--param {pair}")
    return params


def _yaml_value(text: str, what: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        why = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise UsageError(f"{what} is not valid YAML: {why}") from exc


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"config file {path} is not valid JSON: {exc}") from exc


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise UsageError(
            f"reading the YAML config {path} needs PyYAML: pip install pyyaml"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        why = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise UsageError(f"config file {path} is not valid YAML: {why}{where}") from exc


# -- output --------------------------------------------------------------------------------------
def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        cells = (f"{cell!s:<{width}}" for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def when(timestamp: float | None) -> str:
    """A time in this machine's time zone, to the second."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def size(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - the loop returns

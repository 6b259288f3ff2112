"""The ``xlibrary-pipeline`` command.

``xlibrary-pipeline run FILE[:PIPELINE]`` loads a Python file, finds its pipeline (by the
pipeline's name or its variable name when the file holds several), runs it and prints each
task's state and the final result. The file's own ``PipelineManager`` is used when it defines
exactly one; ``--config``/``--scheduler`` make a new one instead.

``xlibrary-pipeline deploy render [--config FILE] [-o DIR]`` writes the Kubernetes manifests of
a JSON config (default ``DIR/config.json``) into ``DIR`` (default ``deploy/kubernetes``): the
same DaskCluster that ``cluster_mode "kubernetes"`` creates.

Exit codes: 0 the run succeeded, 1 the pipeline failed, 2 bad usage (a missing file, an
unknown pipeline, a bad config). Bad input gets one clear line, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .errors import PipelineError
from .manager import PipelineManager
from .pipeline import Pipeline
from .plan import did_you_mean
from .result import PipelineResult
from .settings import load_settings

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DEPLOY_DIR = Path("deploy/kubernetes")

_T = TypeVar("_T")


class UsageError(Exception):
    """Bad input on the command line: printed as one line, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.handler(args)
        return code
    except (UsageError, PipelineError) as exc:
        print(f"xlibrary-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xlibrary-pipeline: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xlibrary-pipeline", description="Run and inspect xlibrary pipelines."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a pipeline declared in a Python file")
    run.add_argument("target", metavar="FILE[:PIPELINE]", help="e.g. examples/etl.py")
    run.add_argument("--sequential", action="store_true", help="one task at a time, in this thread")
    run.add_argument("--scheduler", metavar="ADDRESS", help="a dask.distributed scheduler")
    run.add_argument("--config", metavar="FILE", type=Path, help="PipelineManager config (JSON)")
    run.set_defaults(handler=_run)

    deploy = commands.add_parser("deploy", help="Kubernetes manifests of a config")
    actions = deploy.add_subparsers(dest="action", required=True, metavar="ACTION")
    render = actions.add_parser(
        "render", help="write the DaskCluster (and DaskAutoscaler) manifests of a config"
    )
    render.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="PipelineManager config (JSON); default DIR/config.json",
    )
    render.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        type=Path,
        default=DEFAULT_DEPLOY_DIR,
        help=f"where to write the manifests (default {DEFAULT_DEPLOY_DIR})",
    )
    render.set_defaults(handler=_deploy_render)
    return parser


def _run(args: argparse.Namespace) -> int:
    path, _, wanted = args.target.partition(":")
    module = load_file(Path(path))
    pipeline = find_pipeline(module, wanted or None, path)
    config = _read_config(args.config) if args.config else None
    if args.scheduler:
        config = {**(config or {}), "scheduler_address": args.scheduler}
    managers = _unique(v for v in vars(module).values() if isinstance(v, PipelineManager))
    own = config is not None or len(managers) != 1
    pm = PipelineManager(config) if own else managers[0]
    try:
        result = pm.execute_pipeline(pipeline, parallel=not args.sequential, raise_on_failure=False)
    finally:
        if own:
            pm.close()
    _report(result)
    return EXIT_OK if result.success else EXIT_FAILED


def _deploy_render(args: argparse.Namespace) -> int:
    from .backends.kubernetes import HEADER, render_manifests

    folder: Path = args.output
    config = _read_config(args.config or folder / "config.json")
    manifests = render_manifests(load_settings(config))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in manifests.items():
            (folder / name).write_text(text)
            print(folder / name)
        for stale in sorted(folder.glob("*.yaml")):
            if stale.name not in manifests and stale.read_text().startswith(HEADER):
                stale.unlink()  # rendered before, no longer wanted (e.g. auto_scaling off)
                print(f"removed {stale}")
    except OSError as exc:
        raise UsageError(f"cannot write the manifests into {folder}: {exc}") from exc
    return EXIT_OK


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
    pipelines = _unique(found.values())
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


def _unique(values: Iterable[_T]) -> list[_T]:
    seen: dict[int, _T] = {}
    for value in values:
        seen.setdefault(id(value), value)
    return list(seen.values())


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise UsageError(f"config file {path} must hold a JSON object of settings")
    return config


def _report(result: PipelineResult) -> None:
    state = "succeeded" if result.success else "FAILED"
    print(f"pipeline {result.pipeline!r} {state} in {result.duration:.3f}s (run {result.run_id})")
    width = max(len(name) for name in result.tasks)
    for name, run in result.tasks.items():
        duration = f"{run.duration:.3f}s" if run.duration is not None else "-"
        extra = f"  (after {run.skipped_because!r} failed)" if run.skipped_because else ""
        attempts = f"  {run.attempts} attempts" if run.attempts > 1 else ""
        print(f"  {name:<{width}}  {run.status:<9}  {duration:>8}{attempts}{extra}")
    if result.success:
        print("final result:")
        print(_format(result.final_result))
    elif result.error is not None:
        print(f"error: {result.error}", file=sys.stderr)
        print(result.error.stack_trace, file=sys.stderr, end="")


def _format(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, default=repr)
    except (TypeError, ValueError):
        return repr(value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

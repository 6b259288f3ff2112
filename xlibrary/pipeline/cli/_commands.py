"""The commands that run something: ``run``, ``deploy render``, ``dashboard``, ``visualize``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..manager import PipelineManager
from ..redact import redact_url
from ..result import PipelineResult
from ..settings import load_settings
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    config_of,
    find_pipeline,
    load_file,
    manager,
    read_config,
    unique,
)

DEFAULT_DEPLOY_DIR = Path("deploy/kubernetes")


def run(args: argparse.Namespace) -> int:
    path, _, wanted = args.target.partition(":")
    module = load_file(Path(path))
    pipeline = find_pipeline(module, wanted or None, path)
    config = config_of(args) if args.config or args.store else None
    if args.scheduler:
        config = {**(config or {}), "scheduler_address": args.scheduler}
    pm, own = _manager_for(module, config)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        result = pm.execute_pipeline(
            pipeline,
            parallel=not args.sequential,
            raise_on_failure=False,
            display_progress=progress,
        )
    finally:
        if own:
            pm.close()
    _report(result)
    return EXIT_OK if result.success else EXIT_FAILED


def _manager_for(module: Any, config: dict[str, Any] | None) -> tuple[PipelineManager, bool]:
    """The file's own manager when it defines exactly one and no config was given, else a new
    one of ``config``; and whether it is new (the caller closes it)."""
    managers = unique(v for v in vars(module).values() if isinstance(v, PipelineManager))
    own = config is not None or len(managers) != 1
    return (PipelineManager(config) if own else managers[0]), own


def deploy_render(args: argparse.Namespace) -> int:
    from ..backends.kubernetes import HEADER, render_manifests

    folder: Path = args.output
    config = read_config(args.config or folder / "config.json")
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


def dashboard(args: argparse.Namespace) -> int:
    if not args.verbose:  # distributed sets its loggers to INFO when imported: after that
        import distributed  # noqa: F401

        logging.getLogger("distributed").setLevel(logging.WARNING)
    with manager(args) as pm:
        pm.enable_monitoring(dashboard=True)  # starts a LocalCluster (processes: distributed_mode)
        link = pm.dashboard_link or ""
        print(f"Dask dashboard: {link}")
        print(f"pipelines:      {link.removesuffix('/status')}/pipelines")
        until = "Ctrl-C" if args.seconds is None else f"{args.seconds:g} seconds have passed"
        print(f"serving until {until}", flush=True)
        try:
            if args.seconds is not None:
                time.sleep(args.seconds)
            else:
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping the cluster")
    return EXIT_OK


def visualize(args: argparse.Namespace) -> int:
    from ..pictures import visualize
    from ..result import PipelineResult

    path, _, wanted = args.target.partition(":")
    module = load_file(Path(path))
    pipeline = find_pipeline(module, wanted or None, path)
    run = None
    if args.run is not None:  # colour it by a recorded run: the file's store, or --store
        pm, own = _manager_for(module, config_of(args) if args.config or args.store else None)
        try:
            store = pm.store
            latest = args.run == "latest"
            record = store.read_record(pipeline.name) if latest else store.find_record(args.run)
        finally:
            if own:
                pm.close()
        if record is None:
            which = f"of pipeline {pipeline.name!r}" if latest else repr(args.run)
            raise UsageError(
                f"no run {which} in the store {redact_url(store.url)}; "
                "`xlibrary-pipeline runs list` shows the recorded runs"
            )
        run = PipelineResult.of_record(record)
    try:
        written = visualize(pipeline, args.output, result=run)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    print(written)
    return EXIT_OK


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

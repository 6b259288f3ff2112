"""The commands that run something: ``run``, ``deploy render``, ``dashboard``, ``visualize``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..manager import PipelineManager
from ..present import elements_words, params_text, status_words
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
    params_of,
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
    params = params_of(args.params, args.param)
    refresh = None if not args.refresh else (True if True in args.refresh else args.refresh)
    pm, own = _manager_for(module, config)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        result = pm.execute_pipeline(
            pipeline,
            parallel=not args.sequential,
            raise_on_failure=False,
            display_progress=progress,
            params=params,
            refresh=refresh,
            targets=args.targets,
            from_tasks=args.from_tasks,
            tags=args.tags,
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


DEFAULT_SCHEDULER_ADDRESS = "127.0.0.1:8786"


def dashboard(args: argparse.Namespace) -> int:
    """Start a LocalCluster of worker processes with the Pipelines page, for other processes
    to run pipelines on; print where it is, and serve until Ctrl-C (or ``--seconds``)."""
    if not args.verbose:  # distributed sets its loggers to INFO when imported: after that
        import distributed  # noqa: F401

        logging.getLogger("distributed").setLevel(logging.WARNING)
    settings = load_settings(config_of(args))
    host, port = _listen_address(args.scheduler_address)
    if not _can_listen(host, port):
        if args.scheduler_address != DEFAULT_SCHEDULER_ADDRESS:
            raise UsageError(
                f"cannot listen on {args.scheduler_address}: the port is in use; pick another "
                f"with --scheduler-address {host}:0 (any free port)"
            )
        print(f"port {port} is in use (another scheduler?): listening on a free port instead")
        port = 0
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: the scheduler listens on {host}: anyone who reaches it can run code "
            "on this machine's workers; keep it behind a firewall or use TLS",
            file=sys.stderr,
        )
    with _workers_leave_ctrl_c_to_us():
        cluster = _dashboard_cluster(settings, host, port)
    with cluster:
        link = str(cluster.dashboard_link)
        address = cluster.scheduler_address
        print(f"Dask dashboard: {link}")
        print(f"pipelines:      {link.removesuffix('/status')}/pipelines")
        print(
            f"scheduler:      {address}  (PipelineManager({{'scheduler_address': "
            f"'{address}'}}), or `xlibrary-pipeline run FILE --scheduler {address}`)"
        )
        until = "Ctrl-C" if args.seconds is None else f"{args.seconds:g} seconds have passed"
        print(f"serving until {until}", flush=True)
        try:
            if args.seconds is not None:
                time.sleep(args.seconds)
            else:
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping the cluster", flush=True)
    return EXIT_OK


def _dashboard_cluster(settings: Any, host: str, port: int) -> Any:
    """A LocalCluster of worker processes laid out from the settings, as a manager's own
    (workers on 127.0.0.1, the dashboard at ``dashboard_address``), whose scheduler listens
    on ``host:port`` and has the Pipelines page from its start."""
    from ..backends.clusters import LocalClusterKind
    from ..monitoring.dashboard import PipelinesPlugin

    return LocalClusterKind.start(
        settings,
        processes=True,
        scheduler_port=port,
        scheduler_kwargs={"host": host, "plugins": [PipelinesPlugin()]},
    )


@contextlib.contextmanager
def _workers_leave_ctrl_c_to_us() -> Iterator[None]:
    """Ctrl-C reaches every process of the terminal's group: the worker processes started
    in here ignore it (they inherit that), so this one alone stops and closes the cluster,
    instead of each worker dying with a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _listen_address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535 or "/" in host:
        raise UsageError(
            f"--scheduler-address must be host:port, such as {DEFAULT_SCHEDULER_ADDRESS} (this "
            f"machine only) or 0.0.0.0:8786 (every interface; port 0: any free port), got {text!r}"
        )
    return host.strip("[]"), int(port)


def _can_listen(host: str, port: int) -> bool:
    if port == 0:
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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
    if result.record.params:
        print(f"params: {params_text(result.record.params)}")
    width = max(len(name) for name in result.tasks)
    for name, run in result.tasks.items():
        duration = f"{run.duration:.3f}s" if run.duration is not None else "-"
        extra = f"  (after {run.skipped_because!r} failed)" if run.skipped_because else ""
        attempts = f"  {run.attempts} attempts" if run.attempts > 1 else ""
        if run.elements:
            extra += f"  ({elements_words(run.elements)})"
        print(f"  {name:<{width}}  {status_words(run.status):<9}  {duration:>8}{attempts}{extra}")
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

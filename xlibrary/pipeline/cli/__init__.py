"""The ``xlibrary-pipeline`` command.

``xlibrary-pipeline run FILE[:PIPELINE]`` loads a Python file, finds its pipeline (by the
pipeline's name or its variable name when the file holds several), runs it and prints each
task's state and the final result. ``--params FILE`` (YAML) and ``--param NAME=VALUE`` (a YAML
value; later ones win) give the run's parameter values; ``--refresh [TASK]`` recomputes and
rewrites cached results (every task, or each TASK named). ``--target``, ``--from`` and
``--tag`` (each repeatable) run part of the pipeline, as ``targets=``, ``from_tasks=`` and
``tags=`` do. The file's own ``PipelineManager`` is used when it defines exactly one;
``--config``/``--store``/``--scheduler`` make a new one instead. A progress bar shows on stderr
when it is a terminal (``--progress``/``--no-progress`` decide).

``xlibrary-pipeline deploy render [--config FILE] [-o DIR]`` writes the Kubernetes manifests of
a config (default ``DIR/config.json``) into ``DIR`` (default ``deploy/kubernetes``): the
same DaskCluster that ``cluster_mode "kubernetes"`` creates.

Inspecting the store (``--config FILE`` and ``--store URL`` pick it; default the config's, else
``XLIBRARY_STORE``, else ``./.xlibrary-pipeline``):

- ``runs list [PIPELINE] [--last N]``: the recent runs, newest first;
- ``runs show RUN_ID [--json]``: one run's record, its tasks and its error;
- ``cache list [--pipeline P]``, ``cache clear [--pipeline P] [--task T]``, ``cache prune``.

``xlibrary-pipeline dashboard [--scheduler-address HOST:PORT] [--seconds N]`` starts a local
``dask.distributed`` cluster of worker processes (laid out by ``--config`` as a manager's own)
whose dashboard has the Pipelines page, prints the scheduler's address (127.0.0.1:8786 unless
told; another free port when that one is taken) and the links, and serves until Ctrl-C.
Managers in other processes run on it with ``scheduler_address``, and their runs show on
the page.
``xlibrary-pipeline visualize FILE[:PIPELINE] -o OUT.svg [--run RUN_ID|latest]`` draws a
pipeline's graph, coloured by how a recorded run went (from the file's manager's store, or
``--store``).

Config files are JSON, or YAML when named ``*.yaml``/``*.yml`` (PyYAML). Exit codes: 0
success, 1 the pipeline failed, 2 bad usage (a missing file, an unknown pipeline or run, a
bad config). Bad input gets one clear line, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import PipelineError
from . import _commands, _store
from ._commands import DEFAULT_DEPLOY_DIR
from ._common import EXIT_USAGE, UsageError, find_pipeline, load_file
from ._store import DEFAULT_LAST

__all__ = ["find_pipeline", "load_file", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the command that got them, with its own usage
        command: argparse.ArgumentParser = getattr(args, "command_parser", parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
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
    store = argparse.ArgumentParser(add_help=False)  # the options of every store command
    store.add_argument("--config", metavar="FILE", type=Path, help="config (JSON or YAML)")
    store.add_argument(
        "--store",
        metavar="URL",
        help="the store (default: the config's, $XLIBRARY_STORE or ./.xlibrary-pipeline)",
    )

    run = commands.add_parser("run", parents=[store], help="run a pipeline from a Python file")
    run.add_argument("target", metavar="FILE[:PIPELINE]", help="e.g. examples/etl.py")
    run.add_argument("--sequential", action="store_true", help="one task at a time, in this thread")
    run.add_argument("--scheduler", metavar="ADDRESS", help="a dask.distributed scheduler")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    for flag, dest, metavar, what in (
        ("--target", "targets", "TASK", "run only what TASK needs"),
        ("--from", "from_tasks", "TASK", "run TASK and what is downstream of it"),
        ("--tag", "tags", "TAG", "run only the tasks declared with TAG"),
    ):
        run.add_argument(
            flag, dest=dest, action="append", metavar=metavar, help=what + " (repeatable)"
        )
    run.add_argument(
        "--params",
        metavar="FILE",
        type=Path,
        help="parameter values from a YAML (or JSON) file, such as conf/base/parameters.yml",
    )
    run.add_argument(
        "--param",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a parameter value, read as YAML (test_size=0.3, tags=[a, b]); over --params",
    )
    run.add_argument(
        "--refresh",
        metavar="TASK",
        nargs="?",
        action="append",
        const=True,
        help="recompute and rewrite cached results: every task, or TASK (repeatable)",
    )
    run.set_defaults(handler=_commands.run, command_parser=run)

    deploy = commands.add_parser("deploy", help="Kubernetes manifests of a config")
    actions = deploy.add_subparsers(dest="action", required=True, metavar="ACTION")
    render = actions.add_parser(
        "render", help="write the DaskCluster (and DaskAutoscaler) manifests of a config"
    )
    render.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="PipelineManager config (JSON or YAML); default DIR/config.json",
    )
    render.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        type=Path,
        default=DEFAULT_DEPLOY_DIR,
        help=f"where to write the manifests (default {DEFAULT_DEPLOY_DIR})",
    )
    render.set_defaults(handler=_commands.deploy_render, command_parser=render)

    runs = commands.add_parser("runs", help="the runs recorded in the store")
    runs_actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = runs_actions.add_parser("list", parents=[store], help="recent runs, newest first")
    listing.add_argument("pipeline", nargs="?", metavar="PIPELINE", help="default: every one")
    listing.add_argument(
        "--last",
        metavar="N",
        type=_positive,
        default=DEFAULT_LAST,
        help=f"how many runs (default {DEFAULT_LAST})",
    )
    listing.set_defaults(handler=_store.runs_list, command_parser=listing)
    show = runs_actions.add_parser("show", parents=[store], help="the record of one run")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    show.set_defaults(handler=_store.runs_show, command_parser=show)

    cache = commands.add_parser("cache", help="the result cache")
    cache_actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    entries = cache_actions.add_parser("list", parents=[store], help="the cache entries")
    entries.add_argument("--pipeline", metavar="P", help="only this pipeline's entries")
    entries.set_defaults(handler=_store.cache_list, command_parser=entries)
    clear = cache_actions.add_parser("clear", parents=[store], help="delete cache entries")
    clear.add_argument("--pipeline", metavar="P", help="only this pipeline's entries")
    clear.add_argument("--task", metavar="T", help="only this task's entries")
    clear.set_defaults(handler=_store.cache_clear, command_parser=clear)
    prune = cache_actions.add_parser("prune", parents=[store], help="delete expired entries")
    prune.set_defaults(handler=_store.cache_prune, command_parser=prune)

    dashboard = commands.add_parser(
        "dashboard",
        parents=[store],
        help="start a local cluster, with its dashboard and Pipelines page, for others to run on",
    )
    dashboard.add_argument(
        "--scheduler-address",
        metavar="HOST:PORT",
        default=_commands.DEFAULT_SCHEDULER_ADDRESS,
        help=f"where its scheduler listens (default {_commands.DEFAULT_SCHEDULER_ADDRESS}: this "
        "machine only; 0.0.0.0:8786 opens it to the network; port 0: any free port)",
    )
    dashboard.add_argument(
        "--seconds", metavar="N", type=float, help="stop after N seconds (default: at Ctrl-C)"
    )
    dashboard.set_defaults(handler=_commands.dashboard, command_parser=dashboard)

    picture = commands.add_parser(
        "visualize", parents=[store], help="draw a pipeline's graph (SVG or PNG)"
    )
    picture.add_argument("target", metavar="FILE[:PIPELINE]", help="e.g. examples/etl.py")
    picture.add_argument(
        "-o", "--output", metavar="OUT", type=Path, required=True, help="OUT.svg or OUT.png"
    )
    picture.add_argument(
        "--run",
        metavar="RUN_ID",
        help="colour each task by how it went in this recorded run ('latest': the last one)",
    )
    picture.set_defaults(handler=_commands.visualize, command_parser=picture)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value

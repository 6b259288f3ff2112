"""Inspecting the store: ``runs list``, ``runs show``, ``cache list|clear|prune``."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator

from ..errors import did_you_mean
from ..present import elements_words, params_text
from ..records import RunRecord, TaskRecord
from ..redact import redact_url
from ..store.cache import Cache
from ._common import EXIT_OK, UsageError, manager, seconds, size, table, when

DEFAULT_LAST = 20


def runs_list(args: argparse.Namespace) -> int:
    with manager(args) as pm:
        store = pm.store
        names = store.pipelines()
        if args.pipeline is not None:
            if args.pipeline not in names:
                raise UsageError(
                    f"no runs of pipeline {args.pipeline!r} in the store {redact_url(store.url)}"
                    f"{did_you_mean(args.pipeline, names)}"
                )
            names = [args.pipeline]
        records = [record for name in names for record in store.recent_records(name, args.last)]
    if not records:
        print(f"no runs recorded in the store {redact_url(store.url)}")
        return EXIT_OK
    records.sort(key=lambda r: (r.started, r.run_id), reverse=True)
    rows = [
        (r.run_id, r.pipeline, str(r.status), when(r.started), seconds(r.duration), _done(r))
        for r in records[: args.last]
    ]
    table(("RUN ID", "PIPELINE", "STATUS", "STARTED", "DURATION", "TASKS"), rows)
    return EXIT_OK


def runs_show(args: argparse.Namespace) -> int:
    with manager(args) as pm:
        store = pm.store
        record = store.find_record(args.run_id)
    if record is None:
        raise UsageError(
            f"no run {args.run_id!r} in the store {redact_url(store.url)}; "
            "`xlibrary-pipeline runs list` shows the recorded runs"
        )
    if args.json:
        print(json.dumps(record.to_json(), indent=2, default=str))
        return EXIT_OK
    print(f"run {record.run_id} of pipeline {record.pipeline!r}: {record.status}")
    print(f"  started   {when(record.started)}")
    print(f"  finished  {when(record.finished)}")
    print(f"  duration  {seconds(record.duration)}")
    if record.resumed_from:
        print(f"  resumed from run {record.resumed_from}")
    if record.params:
        print(f"  params    {params_text(record.params)}")
    rows = [_task_row(name, record.tasks.get(name)) for name in record.order]
    if rows:
        print("tasks:")
        table(("  TASK", "STATUS", "ATTEMPTS", "DURATION", "DETAIL"), rows)
    error = record.error
    if error is not None:
        print(f"error: {error.summary or error.message}")
        print(error.stack_trace, end="")
    return EXIT_OK


def _task_row(name: str, task: TaskRecord | None) -> tuple[str, ...]:
    if task is None:  # a run still going: not ended yet
        return (f"  {name}", "pending", "0", seconds(None), "")
    details = []
    if task.source:
        details.append(f"from {task.source}")
    if task.reason:
        details.append(task.reason)
    elif task.skipped_because:
        details.append(f"after {task.skipped_because!r} failed")
    if task.error_type or task.error_message:
        details.append(f"{task.error_type}: {task.error_message}")
    if task.params:
        details.append(f"params: {params_text(task.params)}")
    if task.elements:
        details.append(f"elements: {elements_words(task.elements)}")
    return (
        f"  {name}",
        str(task.status),
        str(task.attempts),
        seconds(task.duration),
        "; ".join(details),
    )


def _done(record: RunRecord) -> str:
    done = sum(1 for task in record.tasks.values() if task.done)
    return f"{done}/{len(record.order or record.tasks)}"


# -- cache ---------------------------------------------------------------------------------------
def cache_list(args: argparse.Namespace) -> int:
    with _cache(args) as cache:
        headers = [h for h in cache.headers() if args.pipeline in (None, h.pipeline)]
    if not headers:
        print(f"no cache entries in {redact_url(cache.backend.url)}")
        return EXIT_OK
    headers.sort(key=lambda h: h.created, reverse=True)
    now = time.time()
    rows = [
        (
            h.key,
            h.task or "-",
            h.pipeline or "-",
            h.format,
            size(h.size),
            when(h.created),
            "never" if h.expires is None else when(h.expires),
            "expired" if h.expired(now) else "",
        )
        for h in headers
    ]
    table(("KEY", "TASK", "PIPELINE", "FORMAT", "SIZE", "CREATED", "EXPIRES", ""), rows)
    return EXIT_OK


def cache_clear(args: argparse.Namespace) -> int:
    with _cache(args) as cache:
        removed = cache.clear(pipeline=args.pipeline, task=args.task)
    print(f"removed {_entries(removed)} from {redact_url(cache.backend.url)}")
    return EXIT_OK


def cache_prune(args: argparse.Namespace) -> int:
    with _cache(args) as cache:
        removed = cache.prune()
    print(f"removed {_entries(removed, 'expired ')} from {redact_url(cache.backend.url)}")
    return EXIT_OK


@contextlib.contextmanager
def _cache(args: argparse.Namespace) -> Iterator[Cache]:
    with manager(args) as pm:
        cache = pm.cache
        if cache is None:
            raise UsageError("caching is disabled in the config (caching.enabled is false)")
        yield cache


def _entries(count: int, kind: str = "") -> str:
    return f"{count} {kind}cache {'entry' if count == 1 else 'entries'}"

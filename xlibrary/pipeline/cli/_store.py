"""Inspecting the store: ``runs list``, ``runs show``, ``cache list|clear|prune``."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from ..plan import did_you_mean
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
    records.sort(key=lambda r: (r.get("started") or 0, r.get("run_id", "")), reverse=True)
    rows = [
        (
            r.get("run_id", "?"),
            r.get("pipeline", "?"),
            r.get("status", "?"),
            when(r.get("started")),
            seconds(r.get("duration")),
            _tasks_done(r),
        )
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
        print(json.dumps(record, indent=2, default=str))
        return EXIT_OK
    print(
        f"run {record.get('run_id')} of pipeline {record.get('pipeline')!r}: {record.get('status')}"
    )
    print(f"  started   {when(record.get('started'))}")
    print(f"  finished  {when(record.get('finished'))}")
    print(f"  duration  {seconds(record.get('duration'))}")
    if record.get("resumed_from"):
        print(f"  resumed from run {record['resumed_from']}")
    tasks: dict[str, Any] = record.get("tasks") or {}
    names = list(dict.fromkeys([*record.get("order", ()), *tasks]))
    rows = [_task_row(name, tasks.get(name) or {}) for name in names]
    if rows:
        print("tasks:")
        table(("  TASK", "STATUS", "ATTEMPTS", "DURATION", "DETAIL"), rows)
    error = record.get("error")
    if error:
        print(f"error: {error.get('summary') or error.get('message')}")
        print(error.get("stack_trace") or "", end="")
    return EXIT_OK


def _task_row(name: str, task: dict[str, Any]) -> tuple[str, ...]:
    started, finished = task.get("started"), task.get("finished")
    duration = finished - started if started is not None and finished is not None else None
    details = []
    if task.get("source"):
        details.append(f"from {task['source']}")
    if task.get("reason"):
        details.append(str(task["reason"]))
    elif task.get("skipped_because"):
        details.append(f"after {task['skipped_because']!r} failed")
    if task.get("error"):
        details.append(f"{task['error'].get('type')}: {task['error'].get('message')}")
    return (
        f"  {name}",
        task.get("status", "pending"),
        str(task.get("attempts", 0)),
        seconds(duration),
        "; ".join(details),
    )


def _tasks_done(record: dict[str, Any]) -> str:
    tasks: dict[str, Any] = record.get("tasks") or {}
    done = sum(1 for t in tasks.values() if t.get("status") in ("succeeded", "cached"))
    return f"{done}/{len(record.get('order') or tasks)}"


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

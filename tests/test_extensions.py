"""The engine's extension points, used as a user would: a backend, a cluster kind and a cache
backend registered by name in ``xlibrary.pipeline.extensions``, a run observer, and a
library that leaves logging to the application."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from xlibrary.pipeline import (
    ConfigError,
    Pipeline,
    PipelineManager,
    PipelineResult,
    RunRecord,
)
from xlibrary.pipeline.backends.local import LocalBackend
from xlibrary.pipeline.extensions import backends, caches, cluster_kinds


def small(name: str) -> Pipeline:
    p = Pipeline(name)
    p.task("a")(lambda: 2)
    p.task("b", depends_on=["a"])(lambda a: a * 21)
    return p


# -- a backend -----------------------------------------------------------------------------
class AuditedBackend(LocalBackend):
    """The threaded backend, counting the graphs it runs (an audit log would do the same)."""

    runs: list[int] = []

    def run(self, graph: Mapping[Any, Any], keys: Mapping[str, Any], **options: Any) -> Any:
        AuditedBackend.runs.append(len(graph))
        return super().run(graph, keys, **options)


def test_a_registered_backend_is_a_valid_scheduler_and_runs_the_pipeline() -> None:
    backends.register("audited", AuditedBackend, clobber=True)
    AuditedBackend.runs.clear()
    with PipelineManager({"scheduler": "audited"}) as pm:
        result = pm.execute_pipeline(small("audited_run"))
    assert result.final_result == 42 and AuditedBackend.runs == [2]
    assert result.record.backend == "audited"
    with pytest.raises(ConfigError, match="audited"):  # the error lists it among the choices
        PipelineManager({"scheduler": "audtied"})


# -- a cluster kind ------------------------------------------------------------------------
class InProcessKind:
    """A cluster of one in-process worker: what a kind for a batch system would start."""

    started: list[Any] = []

    @staticmethod
    def layout(settings: Any) -> Any:
        from xlibrary.pipeline.backends.clusters import LocalClusterKind

        return LocalClusterKind.layout(settings)

    @staticmethod
    def start(settings: Any) -> Any:
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        )
        InProcessKind.started.append(cluster)
        return cluster


def test_a_registered_cluster_kind_is_started_for_cluster_mode() -> None:
    cluster_kinds.register("in_process", InProcessKind, clobber=True)
    InProcessKind.started.clear()
    with PipelineManager({"cluster_mode": "in_process"}) as pm:
        result = pm.execute_pipeline(small("kind_run"))
        assert result.final_result == 42
        (cluster,) = InProcessKind.started
        assert result.record.backend == "distributed"
    assert cluster.status.name == "closed"  # the manager closes the cluster it started


# -- a cache backend -----------------------------------------------------------------------
class SqliteCache:
    """Cache entries in one SQLite file in the store directory."""

    def __init__(self, path: str) -> None:
        self.url = f"sqlite://{path}"
        self.path = path
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute("create table if not exists entries (key text primary key, h, p)")
            db.execute("create table if not exists notes (name text primary key, data)")

    @classmethod
    def open(cls, url: str, storage_options: Mapping[str, Any], timeout: float) -> SqliteCache:
        os.makedirs(url, exist_ok=True)
        return cls(os.path.join(url, "cache.sqlite"))

    def __reduce__(self) -> tuple[Any, ...]:
        return (SqliteCache, (self.path,))

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def read_header(self, key: str) -> bytes | None:
        found = self.read(key)
        return None if found is None else found[0]

    def read(self, key: str) -> tuple[bytes, bytes] | None:
        with self._lock, self._db() as db:
            row = db.execute("select h, p from entries where key = ?", (key,)).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def write(self, key: str, header: bytes, payload: bytes, ttl: float | None) -> None:
        with self._lock, self._db() as db:
            db.execute("insert or replace into entries values (?, ?, ?)", (key, header, payload))

    def delete(self, key: str) -> bool:
        with self._lock, self._db() as db:
            return db.execute("delete from entries where key = ?", (key,)).rowcount > 0

    def keys(self) -> Iterator[str]:
        with self._lock, self._db() as db:
            rows = db.execute("select key from entries").fetchall()
        return iter([row[0] for row in rows])

    def write_note(self, name: str, data: bytes) -> None:
        with self._lock, self._db() as db:
            db.execute("insert or replace into notes values (?, ?)", (name, data))

    def read_note(self, name: str) -> bytes | None:
        with self._lock, self._db() as db:
            row = db.execute("select data from notes where name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])


def test_a_registered_cache_backend_keeps_the_entries(tmp_path: Path) -> None:
    caches.register("sqlite", SqliteCache, clobber=True)
    calls: list[int] = []
    p = Pipeline("sqlite_cached")

    @p.task("slow", depends_on=[], cache=True)
    def slow(*, n: int = 3) -> int:
        calls.append(n)
        return n * 14

    config = {"store": {"url": str(tmp_path / "store")}, "caching": {"cache_type": "sqlite"}}
    with PipelineManager(config) as pm:
        assert pm.execute_pipeline(p).final_result == 42
        again = pm.execute_pipeline(p)
    assert again.states == {"slow": "cached"} and calls == [3]
    with sqlite3.connect(tmp_path / "store" / "cache.sqlite") as db:
        assert db.execute("select count(*) from entries").fetchone() == (1,)


# -- a run observer ------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def run_started(self, record: RunRecord) -> None:
        self.seen.append(("started", record.pipeline, str(record.status)))

    def run_finished(self, result: PipelineResult) -> None:
        self.seen.append(("finished", result.record.pipeline, str(result.record.status)))


def test_an_observer_hears_every_run_start_and_end_failed_ones_too() -> None:
    p = Pipeline("observed_fail")
    p.task("boom")(lambda: 1 / 0)
    with PipelineManager() as pm:
        recorder = pm.add_observer(Recorder())
        pm.execute_pipeline(small("observed"))
        pm.execute_pipeline(p)
        pm.submit(small("observed_bg")).result(timeout=30)
    assert recorder.seen == [
        ("started", "observed", "running"),
        ("finished", "observed", "succeeded"),
        ("started", "observed_fail", "running"),
        ("finished", "observed_fail", "failed"),
        ("started", "observed_bg", "running"),
        ("finished", "observed_bg", "succeeded"),
    ]


# -- logging -------------------------------------------------------------------------------
def test_the_library_adds_no_log_handler_and_leaves_the_root_logger_alone() -> None:
    """Run in a fresh interpreter: importing and running configure nothing but a NullHandler
    on the library's own logger (a warning goes to Python's last-resort handler, as any
    library's does, until the application configures logging)."""
    code = """
import logging
root = logging.getLogger()
before = (list(root.handlers), root.level)
from xlibrary.pipeline import Pipeline, PipelineManager
p = Pipeline("quiet")
p.task("a")(lambda: 1)
with PipelineManager() as pm:
    pm.execute_pipeline(p)
assert (list(root.handlers), root.level) == before, root.handlers
lib = logging.getLogger("xlibrary")
assert [type(h).__name__ for h in lib.handlers] == ["NullHandler"], lib.handlers
for name, logger in logging.root.manager.loggerDict.items():
    if name.startswith("xlibrary.") and isinstance(logger, logging.Logger):
        assert not logger.handlers, (name, logger.handlers)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert logging.getLogger("xlibrary").propagate

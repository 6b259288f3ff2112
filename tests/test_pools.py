"""Concurrency pools: pool="database" with config pools: {"database": N} runs at most N of the
pool's tasks at once: on threads across the runs of a manager, on a cluster across its
clients (distributed.Semaphore)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from xlibrary.pipeline import ConfigError, Pipeline, PipelineManager, TaskStatus


def most_at_once(log: Path) -> int:
    """The most intervals (``start end`` lines) that overlap at any moment."""
    spans = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def pooled(name: str, log: Path, count: int = 10, seconds: float = 0.2) -> Pipeline:
    """``count`` independent tasks of pool "database", each appending its start and end to
    ``log`` (a file: worker processes share it), and one task of no pool."""
    p = Pipeline(name)

    def query(i: int) -> int:
        started = time.time()
        time.sleep(seconds)
        with log.open("a") as handle:  # one short append per task: whole lines
            handle.write(f"{started} {time.time()}\n")
        return i

    for i in range(count):
        p.task(f"query_{i}", pool="database")(lambda i=i: query(i))
    p.task("free")(lambda: "no pool")
    return p


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A LocalCluster of 2 worker processes with 3 threads each: 6 tasks at once."""
    with LocalCluster(n_workers=2, threads_per_worker=3, dashboard_address=":0") as cluster:
        yield cluster


def test_at_most_n_at_once_on_threads(tmp_path: Path) -> None:
    log = tmp_path / "spans"
    with PipelineManager({"pools": {"database": 2}, "num_workers": 8}) as pm:
        result = pm.execute_pipeline(pooled("threads_pool", log))
    assert result.success, result.error
    assert len(log.read_text().splitlines()) == 10
    assert most_at_once(log) == 2


def test_at_most_n_at_once_across_the_runs_of_a_manager(tmp_path: Path) -> None:
    log = tmp_path / "spans"
    with PipelineManager({"pools": {"database": 2}, "num_workers": 8}) as pm:
        handles = [pm.submit(pooled(f"run_{i}", log, count=5)) for i in range(2)]
        assert all(h.result(timeout=60).success for h in handles)
    assert len(log.read_text().splitlines()) == 10
    assert most_at_once(log) == 2


def test_at_most_n_at_once_on_a_local_cluster(cluster: LocalCluster, tmp_path: Path) -> None:
    log = tmp_path / "spans"
    with Client(cluster) as client:
        with PipelineManager({"pools": {"database": 2}}, client=client) as pm:
            result = pm.execute_pipeline(pooled("cluster_pool", log))
    assert result.success, result.error
    assert len(log.read_text().splitlines()) == 10
    assert most_at_once(log) == 2


def test_at_most_n_at_once_across_the_clients_of_a_scheduler(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    log = tmp_path / "spans"
    results = []

    def one_client(i: int) -> None:
        with Client(cluster) as client:
            with PipelineManager({"pools": {"database": 2}}, client=client) as pm:
                results.append(pm.execute_pipeline(pooled(f"client_{i}", log, count=5)))

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 2 and all(r.success for r in results)
    assert len(log.read_text().splitlines()) == 10
    assert most_at_once(log) == 2


def test_managers_that_disagree_on_a_pool_size_get_a_clear_error(cluster: LocalCluster) -> None:
    p = Pipeline("disagree")
    p.task("q", pool="reports")(lambda: 1)
    with Client(cluster) as client:
        with PipelineManager({"pools": {"reports": 2}}, client=client) as pm:
            assert pm.execute_pipeline(p).success
        with PipelineManager({"pools": {"reports": 3}}, client=client) as pm:
            result = pm.execute_pipeline(p)
    assert result.failed_task == "q"
    assert result.tasks["q"].error_type == "xlibrary.pipeline.ConfigError"
    assert "pool 'reports' has another size on this Dask scheduler" in str(result.error)


def test_waiting_for_a_place_does_not_count_against_the_timeout() -> None:
    p = Pipeline("patient")
    for i in range(4):  # one place: the last waits 3 x 0.3 s, more than its 0.5 s timeout
        p.task(f"q{i}", pool="db", timeout=0.5)(lambda: time.sleep(0.3))
    with PipelineManager({"pools": {"db": 1}, "num_workers": 4}) as pm:
        result = pm.execute_pipeline(p)
    assert result.success, result.error


def test_a_failing_task_gives_its_place_back() -> None:
    attempts: list[int] = []
    p = Pipeline("gives_back")

    @p.task("flaky", pool="db")
    @p.retry_on_failure(max_retries=2)
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("the database is busy")
        return 1

    @p.task("broken", pool="db")
    def broken() -> int:
        raise ValueError("bad query")

    for i in range(3):
        p.task(f"fine_{i}", pool="db")(lambda: 2)
    with PipelineManager({"pools": {"db": 1}}) as pm:
        result = pm.execute_pipeline(p)
    assert result.states["flaky"] is TaskStatus.SUCCEEDED
    assert result.states["broken"] is TaskStatus.FAILED
    assert all(result.states[f"fine_{i}"] is TaskStatus.SUCCEEDED for i in range(3))


def test_a_pool_the_config_does_not_define_is_an_error_before_running() -> None:
    ran: list[int] = []
    p = Pipeline("undefined_pool")
    p.task("q", pool="databse")(lambda: ran.append(1))
    with PipelineManager({"pools": {"database": 2}}) as pm:
        with pytest.raises(ConfigError, match=r"pool 'databse'.*did you mean 'database'"):
            pm.execute_pipeline(p)
        with pytest.raises(ConfigError, match="pool 'databse'"):
            pm.submit(p)
    assert ran == []


@pytest.mark.parametrize(
    ("pools", "fragment"),
    [
        ({"database": 0}, "'pools.database' .* 1 or more, got 0"),
        ({"database": True}, "whole number"),
        ({"database": 1.5}, "whole number"),
        ({"": 2}, "non-empty strings"),
        (["database"], "must be a dict"),
    ],
)
def test_bad_pool_config(pools: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        PipelineManager({"pools": pools})

"""Dask's own convention: with no backend configured, runs go to the user's default Client."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from distributed import Client, LocalCluster

from xlibrary.pipeline import Pipeline, PipelineManager, RunRecord

from .conftest import ROOT


def where() -> Pipeline:
    p = Pipeline("where_am_i")

    @p.task("worker")
    def worker() -> str:
        from distributed import get_worker

        return str(get_worker().address)  # raises ValueError off a Dask worker

    return p


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        yield cluster


def test_a_default_client_runs_the_pipelines_and_stays_open(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(cluster) as client:  # set_as_default=True, as Dask users make them
        with PipelineManager() as pm, caplog.at_level(logging.INFO, "xlibrary.pipeline"):
            result = pm.execute_pipeline(where())
            assert pm.client is client
        assert result.success, result.error
        assert result.final_result in cluster.workers[0].address
        assert result.backend == "distributed"
        assert f"on distributed (the Client at {cluster.scheduler_address})" in caplog.text
        assert client.status == "running"  # the manager never closes the user's client
        assert client.submit(lambda: 41 + 1).result() == 42


def test_scheduler_threads_keeps_threads_with_a_default_client_open(
    cluster: LocalCluster,
) -> None:
    with Client(cluster), PipelineManager({"scheduler": "threads"}) as pm:
        result = pm.execute_pipeline(where())
    assert result.backend == "threads"
    assert result.failed_task == "worker"
    assert "No worker found" in str(result.error)


def test_a_client_that_is_not_the_default_is_not_used(cluster: LocalCluster) -> None:
    with Client(cluster, set_as_default=False), PipelineManager() as pm:
        assert pm.execute_pipeline(where()).backend == "threads"
        assert pm.client is None


def test_the_default_client_is_looked_up_at_each_run(cluster: LocalCluster) -> None:
    p = Pipeline("one")
    p.task("one")(lambda: 1)
    with PipelineManager() as pm:
        assert pm.execute_pipeline(p).backend == "threads"
        with Client(cluster) as first:
            assert pm.execute_pipeline(p).backend == "distributed"
            assert pm.client is first
        assert pm.execute_pipeline(p).backend == "threads"  # closed: back to threads
        with Client(cluster) as second:
            assert pm.execute_pipeline(p).success
            assert pm.client is second
        assert first.status == "closed" and second.status == "closed"


def test_a_cluster_in_the_settings_wins_over_the_default_client(
    cluster: LocalCluster, tmp_path: object
) -> None:
    with Client(cluster), PipelineManager({"scheduler_address": cluster.scheduler_address}) as pm:
        client = pm.client
        assert client is not None and client is not Client.current()
        assert pm.execute_pipeline(where()).backend == "distributed"


def test_the_backend_is_in_the_record() -> None:
    p = Pipeline("one")
    p.task("one")(lambda: 1)
    with PipelineManager({"scheduler": "threads"}) as pm:
        record = pm.execute_pipeline(p).record
        sequential = pm.execute_pipeline(p, parallel=False).record
    assert record.backend == "threads" and sequential.backend == "sequential"
    data = json.loads(json.dumps(record.to_json()))
    assert data["backend"] == "threads"
    assert RunRecord.from_json(data).backend == "threads"
    assert "backend" not in record.replace(backend=None).to_json()  # omitted when empty


def test_finding_no_default_client_does_not_import_distributed() -> None:
    code = (
        "import sys\n"
        "from xlibrary.pipeline import Pipeline, PipelineManager\n"
        "p = Pipeline('one'); p.task('one')(lambda: 1)\n"
        "with PipelineManager({'store': {'url': 'memory://default-client'}}) as pm:\n"
        "    assert pm.execute_pipeline(p).backend == 'threads'\n"
        "assert 'distributed' not in sys.modules, 'distributed was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

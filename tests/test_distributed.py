"""Running on dask.distributed: an owned LocalCluster, a user's Client, a remote scheduler."""

from __future__ import annotations

import os

import pytest
from dask.utils import key_split
from distributed import Client, LocalCluster, get_task_stream

from xlibrary.pipeline import (
    ClusterError,
    Pipeline,
    PipelineExecutionError,
    PipelineManager,
    TaskStatus,
)


def etl() -> Pipeline:
    p = Pipeline("dist_etl")
    p.task("extract")(lambda: list(range(10)))
    p.task("square", depends_on=["extract"])(lambda xs: [x * x for x in xs])
    p.task("where", depends_on=["extract"])(lambda _: os.getpid())
    p.task("total", depends_on=["square"])(sum)
    return p


def failing() -> Pipeline:
    p = Pipeline("dist_fail")
    p.task("a")(lambda: 1)

    @p.task("b", depends_on=["a"])
    @p.retry_on_failure(max_retries=2)
    def b(x: int) -> float:
        return x / 0

    p.task("c", depends_on=["b"])(lambda x: x)
    p.task("d", depends_on=["a"])(lambda x: x + 1)
    return p


def test_distributed_mode_owns_and_closes_its_local_cluster() -> None:
    pm = PipelineManager({"distributed_mode": True})
    with pm:
        result = pm.execute_pipeline(etl())
        assert result.success, result.error
        assert result.final_result == {"total": 285, "where": result.results["where"]}
        assert result.results["where"] != os.getpid()  # ran in a worker process
        client = pm.client
        assert client is not None
        cluster = client.cluster
        assert isinstance(cluster, LocalCluster)
        # failures behave as on the local backend
        failed = pm.execute_pipeline(failing())
        assert failed.states == {"a": "succeeded", "b": "failed", "d": "succeeded", "c": "skipped"}
        assert failed.tasks["b"].attempts == 3
        assert isinstance(failed.tasks["b"].error, ZeroDivisionError)
        assert "in b" in failed.tasks["b"].traceback
        # on a cluster only the final tasks' results come back (keep_results: final)...
        assert failed.results == {"d": 2}
        assert failed.tasks["a"].status == "succeeded" and failed.tasks["a"].attempts == 1
    assert client.status == "closed"
    assert cluster.status.name == "closed"


def test_task_names_are_the_keys_on_the_scheduler() -> None:
    with LocalCluster(n_workers=1, processes=False) as cluster, Client(cluster) as client:
        with PipelineManager(client=client) as pm, get_task_stream(client=client) as stream:
            result = pm.execute_pipeline(etl())
        assert result.success
        keys = [record["key"] for record in stream.data]
        assert {key[0] for key in keys} == {"extract", "square", "where", "total"}
        assert {key[1] for key in keys} == {result.run_id}
        assert {key_split(key) for key in keys} == {"extract", "square", "where", "total"}
        # the user's client stays open after the manager closed
        assert client.status == "running"
        assert client.submit(lambda: 41 + 1).result() == 42


def test_remote_scheduler_by_address(dask_scheduler_cli: str) -> None:
    with PipelineManager({"scheduler_address": dask_scheduler_cli}) as pm:
        result = pm.execute_pipeline(etl())
        assert result.success, result.error
        assert result.results["total"] == 285
        assert result.results["where"] != os.getpid()
        failed = pm.execute_pipeline(failing())
        assert failed.failed_task == "b" and failed.tasks["c"].status == TaskStatus.SKIPPED
        with pytest.raises(PipelineExecutionError) as info:
            pm.execute_pipeline(failing(), raise_on_failure=True)
        assert info.value.failed_task == "b"
    # the scheduler we connected to is still up for others
    with Client(dask_scheduler_cli, timeout="10s") as client:
        assert len(client.scheduler_info()["workers"]) == 2


def test_execute_distributed_uses_the_configured_scheduler(dask_scheduler_cli: str) -> None:
    with PipelineManager({"scheduler_address": dask_scheduler_cli}) as pm:
        assert pm.execute_distributed(etl()).results["total"] == 285


def test_sequential_on_a_cluster_manager_runs_here(dask_scheduler_cli: str) -> None:
    with PipelineManager({"scheduler_address": dask_scheduler_cli}) as pm:
        result = pm.execute_pipeline(etl(), parallel=False)
    assert result.results["where"] == os.getpid()


def test_unreachable_scheduler_is_a_clear_error() -> None:
    from tests.conftest import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    with PipelineManager({"scheduler_address": address}) as pm:
        with pytest.raises(
            ClusterError, match=r"cannot reach the Dask scheduler at .*dask scheduler"
        ):
            pm.execute_pipeline(etl())


def test_client_and_address_together_is_a_config_error() -> None:
    from xlibrary.pipeline import ConfigError

    with pytest.raises(ConfigError, match="pass one"):
        PipelineManager({"scheduler_address": "tcp://127.0.0.1:1"}, client=object())  # type: ignore[arg-type]


def test_keep_results_all_brings_every_result_back_from_a_cluster() -> None:
    with PipelineManager({"distributed_mode": True, "keep_results": "all"}) as pm:
        result = pm.execute_pipeline(failing())
    assert result.results == {"a": 1, "d": 2}


def test_keep_results_final_on_the_embedded_backend() -> None:
    with PipelineManager({"keep_results": "final"}) as pm:
        result = pm.execute_pipeline(etl())
    assert set(result.results) == {"where", "total"}
    assert result.states == {n: "succeeded" for n in ("extract", "square", "where", "total")}
    assert result.tasks["extract"].duration is not None


def test_a_task_the_local_cluster_workers_cannot_load_fails_instead_of_hanging(
    tmp_path, monkeypatch
) -> None:
    # the workers start first, so their sys.path lacks the module's folder
    import importlib
    import threading

    with PipelineManager({"distributed_mode": True, "worker_nodes": 1}) as pm:
        assert pm.client is not None
        (tmp_path / "hidden_tasks_local.py").write_text("def compute():\n    return 41\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        module = importlib.import_module("hidden_tasks_local")
        p = Pipeline("hidden_local")
        p.task("visible")(lambda: 1)
        p.task("hidden")(module.compute)
        results: list = []
        runner = threading.Thread(target=lambda: results.append(pm.execute_pipeline(p)))
        runner.daemon = True
        runner.start()
        runner.join(60)
        assert results, "the run hung"
    (result,) = results
    assert result.states == {"visible": "succeeded", "hidden": "failed"}
    assert "No module named 'hidden_tasks_local'" in str(result.error)
    assert "'hidden'" in str(result.error)

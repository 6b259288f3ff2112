"""Cluster modes, worker layout, task resources with pre-flight checks, adaptive scaling, TLS,
and surviving the loss of workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, dask_command, dask_processes, free_port, stop
from xlibrary.pipeline import ClusterError, ConfigError, Pipeline, PipelineManager, ResourceError
from xlibrary.pipeline.backends.layout import layout, parse_memory
from xlibrary.pipeline.plan import make_plan
from xlibrary.pipeline.resources import check_resources
from xlibrary.pipeline.settings import FaultTolerance, load_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4Gi", 4 * 2**30), ("512Mi", 512 * 2**20), ("4GB", 4 * 10**9), ("1.5 GiB", 3 * 2**29),
     (1024, 1024), ("2048", 2048)],
)  # fmt: skip
def test_parse_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["four gigs", "4Qi", "-1Gi", 0])
def test_bad_memory_sizes(bad: object) -> None:
    with pytest.raises(ConfigError, match="memory"):
        parse_memory(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("strategy", "workers", "threads", "memory_mb"),
    [("throughput", 8, 1, 2048), ("balanced", 2, 4, 8192), ("memory", 1, 8, 16384)],
)
def test_optimization_strategy_lays_workers_out(strategy, workers, threads, memory_mb) -> None:
    settings = load_settings(
        {"resource_limits": {"max_cpu_cores": 8, "max_memory_gb": 16,
                             "optimization_strategy": strategy}}
    )  # fmt: skip
    plan = layout(settings)
    assert (plan.workers, plan.threads, plan.memory) == (workers, threads, memory_mb * 2**20)
    assert plan.resources == {"cpu_cores": threads, "memory_mb": memory_mb}


def test_allocation_over_the_limits_is_a_config_error() -> None:
    settings = load_settings(
        {"worker_nodes": 4, "resource_allocation": {"cpu_per_worker": 4},
         "resource_limits": {"max_cpu_cores": 8}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"16 cores, over resource_limits\.max_cpu_cores=8"):
        layout(settings)


def test_adaptive_bounds_and_gpus() -> None:
    settings = load_settings(
        {"auto_scaling": True, "scaling": {"minimum": 0, "maximum": 5}, "worker_nodes": 2,
         "resource_allocation": {"cpu_per_worker": 1, "gpu_per_worker": 1}}
    )  # fmt: skip
    plan = layout(settings)
    assert plan.adaptive == (0, 5) and plan.resources == {"cpu_cores": 1, "gpu": 1}
    assert layout(load_settings({"auto_scaling": True, "worker_nodes": 3})).adaptive == (1, 3)


def _asking(resources: dict[str, float]) -> Pipeline:
    p = Pipeline("asking")
    p.task("light")(lambda: 1)
    p.task("heavy", depends_on=["light"], resource_requirements=resources)(lambda x: x + 1)
    return p


def test_pre_flight_names_the_task_the_ask_and_the_largest_worker() -> None:
    plan = make_plan(_asking({"cpu_cores": 16, "memory_mb": 1024}), FaultTolerance())
    offered = [{"cpu_cores": 4, "memory_mb": 8192}, {"cpu_cores": 2, "memory_mb": 16384}]
    with pytest.raises(ResourceError) as info:
        check_resources(plan, offered, "the test cluster")
    message = str(info.value)
    assert "task 'heavy' of pipeline 'asking' asks for cpu_cores=16, memory_mb=1024" in message
    assert "largest worker of the test cluster offers cpu_cores=4, memory_mb=16384" in message
    check_resources(make_plan(_asking({"cpu_cores": 4}), FaultTolerance()), offered, "x")


def test_local_cluster_mode_lays_out_workers_and_runs_restricted_tasks(tmp_path: Path) -> None:
    config = {
        "cluster_mode": "local",
        "worker_nodes": 2,
        "resource_allocation": {"cpu_per_worker": 2, "memory_per_worker": "1Gi"},
        "store": {"url": str(tmp_path)},
    }
    with PipelineManager(config) as pm:
        result = pm.execute_pipeline(_asking({"cpu_cores": 2, "memory_mb": 1024}))
        assert result.success and result.final_result == 2
        workers = pm.client.scheduler_info()["workers"].values()
        assert len(workers) == 2
        for worker in workers:
            assert worker["nthreads"] == 2 and worker["memory_limit"] == 2**30
            assert worker["resources"] == {"cpu_cores": 2, "memory_mb": 1024}
        marker = tmp_path / "ran"
        p = Pipeline("too_big")
        p.task("first")(lambda: marker.write_text("x"))
        p.task("huge", depends_on=["first"], resource_requirements={"cpu_cores": 64})(lambda _: 1)
        with pytest.raises(ResourceError, match=r"'huge'.*cpu_cores=64.*offers cpu_cores=2"):
            pm.execute_pipeline(p)
        assert not marker.exists()  # nothing ran


def test_memory_asked_of_a_cluster_laid_out_from_this_machine(tmp_path: Path) -> None:
    """No memory setting: the workers split this machine's memory, and the check knows it."""
    config = {
        "cluster_mode": "local",
        "worker_nodes": 1,
        "resource_allocation": {"cpu_per_worker": 1},
        "store": {"url": str(tmp_path)},
    }
    with PipelineManager(config) as pm:
        result = pm.execute_pipeline(_asking({"memory_mb": 100}))
        assert result.success and result.final_result == 2
        (worker,) = pm.client.scheduler_info()["workers"].values()
        assert worker["resources"]["memory_mb"] >= 100


def test_execute_distributed_and_adaptive_scaling(tmp_path: Path) -> None:
    config = {
        "auto_scaling": True,
        "scaling": {"minimum": 1, "maximum": 2},
        "resource_allocation": {"cpu_per_worker": 1},
        "store": {"url": str(tmp_path)},
    }
    with PipelineManager(config) as pm:
        p = Pipeline("adaptive")
        p.task("a")(lambda: 20)
        p.task("b", depends_on=["a"])(lambda x: x + 1)
        assert pm.execute_distributed(p).final_result == 21
        adaptive = pm.client.cluster._adaptive
        assert adaptive is not None and (adaptive.minimum, adaptive.maximum) == (1, 2)


def test_guide_resource_management_config_on_an_adaptive_cluster(tmp_path: Path) -> None:
    pm = PipelineManager(
        {
            "resource_optimization": True,
            "auto_scaling": True,
            "resource_limits": {"max_cpu_cores": 8, "max_memory_gb": 16,
                                "optimization_strategy": "balanced"},
            "store": {"url": str(tmp_path)},
        }
    )  # fmt: skip
    with pm:
        result = pm.execute_pipeline(_asking({"cpu_cores": 4, "memory_mb": 4096}))
        assert result.success
        with pytest.raises(ResourceError, match=r"asks for memory_mb=9000.*offers memory_mb=8192"):
            pm.execute_pipeline(_asking({"memory_mb": 9000}))


# -- remote clusters --------------------------------------------------------------------------
@pytest.fixture
def gpu_worker(dask_scheduler_cli: str) -> Iterator[str]:
    """A third worker, declaring a gpu, on the shared test scheduler."""
    proc = subprocess.Popen(
        [*dask_command(), "worker", dask_scheduler_cli, "--nthreads", "1", "--no-dashboard",
         "--host", "127.0.0.1", "--resources", "gpu=1", "--name", "gpu-worker"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    from distributed import Client

    try:
        with Client(dask_scheduler_cli, timeout="30s") as client:
            client.wait_for_workers(3, timeout=60)
        yield dask_scheduler_cli
    finally:
        stop(proc)
        with Client(dask_scheduler_cli, timeout="30s") as client:
            deadline = time.time() + 30
            while len(client.scheduler_info()["workers"]) > 2 and time.time() < deadline:
                time.sleep(0.2)


def test_remote_resources_read_from_the_workers(gpu_worker: str) -> None:
    from distributed import get_worker

    with PipelineManager({"scheduler_address": gpu_worker}) as pm:
        p = Pipeline("gpu_job")
        p.task("train", resource_requirements={"gpu": 1})(lambda: get_worker().name)
        result = pm.execute_pipeline(p)
        assert result.success and result.final_result == "gpu-worker"
        with pytest.raises(ResourceError, match=r"'train'.*gpu=2.*offers gpu=1"):
            q = Pipeline("two_gpus")
            q.task("train", resource_requirements={"gpu": 2})(lambda: 1)
            pm.execute_pipeline(q)


def test_remote_cluster_without_the_resource(dask_scheduler_cli: str) -> None:
    with PipelineManager({"scheduler_address": dask_scheduler_cli}) as pm:
        with pytest.raises(ResourceError, match=r"asks for license=1.*offers license=0"):
            pm.execute_pipeline(_asking({"license": 1}))


def _certificates(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_remote_scheduler_over_tls(tmp_path: Path) -> None:
    cert, key = _certificates(tmp_path)
    tls = ["--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    with dask_processes(workers=1, protocol="tls", scheduler_args=tls, worker_args=tls) as (
        address,
        _,
    ):
        security = {"tls_ca_file": str(cert), "tls_client_cert": str(cert),
                    "tls_client_key": str(key)}  # fmt: skip
        with PipelineManager({"scheduler_address": address, "security": security}) as pm:
            pm.client.wait_for_workers(1, timeout=60)
            p = Pipeline("secure")
            p.task("a")(lambda: 41)
            p.task("b", depends_on=["a"])(lambda x: x + 1)
            assert pm.execute_pipeline(p).final_result == 42
        with PipelineManager({"scheduler_address": address}) as plain:  # no certificates
            with pytest.raises(ClusterError, match="tls://"):
                plain.execute_pipeline(p)


# -- faults -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """A scheduler that gives up on a task after its second lost worker, and two workers, each
    in its own process group so a test can kill one outright."""
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    with dask_processes(env=env, own_sessions=True) as (address, workers):
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers


def slow_square(x: int) -> int:
    time.sleep(3)
    return x * x


def test_a_pipeline_survives_losing_a_worker(fault_cluster) -> None:
    address, workers = fault_cluster
    p = Pipeline("resilient")
    p.task("seed")(lambda: 3)
    for i in range(4):
        p.task(f"square_{i}", depends_on=["seed"])(lambda x, i=i: slow_square(x + i))
    p.task("total", depends_on=[f"square_{i}" for i in range(4)])(lambda *xs: sum(xs))

    import threading

    with PipelineManager({"scheduler_address": address}) as pm:
        results: list = []
        runner = threading.Thread(target=lambda: results.append(pm.execute_pipeline(p)))
        runner.start()
        time.sleep(1.5)  # the squares are running on both workers
        os.killpg(workers[0].pid, signal.SIGKILL)  # the worker and its nanny, at once
        runner.join(120)
    (result,) = results
    assert result.success, result.error
    assert result.final_result == 9 + 16 + 25 + 36


def test_a_task_that_kills_its_worker_fails_with_a_clear_error(fault_cluster) -> None:
    address, _ = fault_cluster
    p = Pipeline("crashing")
    p.task("fine")(lambda: 1)
    p.task("crash", depends_on=["fine"])(lambda _: os._exit(1))
    p.task("after", depends_on=["crash"])(lambda x: x)
    started = time.time()
    with PipelineManager({"scheduler_address": address}) as pm:
        result = pm.execute_pipeline(p)
    assert time.time() - started < 120
    assert result.failed_task == "crash"
    assert result.states["after"] == "skipped"
    message = str(result.error)
    assert "KilledWorker" in message and "'crash'" in message
    assert "crashed or lost the Dask worker" in message


@pytest.mark.parametrize("protocol", ["tls", "tcp"])
def test_unreachable_address_names_the_fix(protocol: str) -> None:
    """... and the Client that failed to connect is closed at once: its IO-loop thread does
    not outlive the error (it kept the next Client in the process from starting its loop)."""
    import threading

    def io_loops() -> int:
        return sum(t.name == "IO loop" and t.is_alive() for t in threading.enumerate())

    before = io_loops()
    config = {"scheduler_address": f"{protocol}://127.0.0.1:{free_port()}"}
    with PipelineManager(config) as pm:
        with pytest.raises(ClusterError, match="security settings") as caught:
            pm.execute_pipeline(_asking({}))
        assert io_loops() == before, caught.value  # the error, held here, holds no loop


# -- tasks the workers cannot load --------------------------------------------------------------
def _hidden_module(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """A module only this process can import (not the workers, whose sys.path lacks it)."""
    import importlib

    (tmp_path / f"{name}.py").write_text("def compute():\n    return 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


def _with_hidden_task(module: object) -> Pipeline:
    p = Pipeline("hidden_code")
    p.task("visible")(lambda: 1)
    p.task("hidden")(module.compute)  # type: ignore[attr-defined]
    p.task("after", depends_on=["hidden"])(lambda x: x + 1)
    return p


def test_a_task_whose_module_the_workers_lack_fails_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client

    module = _hidden_module(tmp_path, "hidden_tasks_remote", monkeypatch)
    with dask_processes(workers=1) as (address, _):
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        with PipelineManager({"scheduler_address": address}) as pm:
            result = pm.execute_pipeline(_with_hidden_task(module))
    assert result.states == {"visible": "succeeded", "hidden": "failed", "after": "skipped"}
    message = str(result.error)
    assert "'hidden'" in message and "No module named 'hidden_tasks_remote'" in message
    assert "install" in message.lower()


# -- a cluster without workers ------------------------------------------------------------------
def test_a_run_on_a_cluster_that_lost_every_worker_fails_naming_its_tasks() -> None:
    from distributed import Client

    p = Pipeline("orphaned")
    p.task("fine")(lambda: 1)
    p.task("crash", depends_on=["fine"])(lambda _: os._exit(1))  # each worker it lands on dies
    p.task("after", depends_on=["crash"])(lambda x: x)
    p.task("side", depends_on=["fine"])(lambda x: time.sleep(30))  # running when they die
    with dask_processes(workers=2, worker_args=["--no-nanny"]) as (address, workers):
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        with PipelineManager({"scheduler_address": address, "no_workers_timeout": 2}) as pm:
            result = pm.execute_pipeline(p)  # waited for ever with 0 workers
        assert [w.poll() for w in workers] == [1, 1]
    assert result.states == {
        "fine": "succeeded", "crash": "failed", "side": "failed", "after": "skipped"
    }  # fmt: skip
    message = str(result.error)
    assert "no workers for 2s" in message and "no_workers_timeout" in message
    assert "could not run: 'crash', 'side', 'after'" in message


@pytest.mark.parametrize("keep_results", ["final", "all"])
def test_a_scheduler_without_workers_fails_the_run_after_no_workers_timeout(
    keep_results: str,
) -> None:
    p = Pipeline("unstaffed")
    p.task("first")(lambda: 1)
    p.task("only", depends_on=["first"])(lambda x: x)
    config = {"no_workers_timeout": 1, "keep_results": keep_results}
    from distributed import Client

    with dask_processes(workers=0) as (address, _):
        Client(address, timeout="30s").close()  # the scheduler is up
        with PipelineManager({"scheduler_address": address, **config}) as pm:
            # a submitted run is watched as it goes (each way of waiting for Dask)
            result = pm.submit(p).result(timeout=60)
    assert result.states == {"first": "failed", "only": "skipped"}
    assert "no workers for 1s" in str(result.error)
    assert "could not run: 'first', 'only'" in str(result.error)


# -- resource_optimization and optimization_strategy take effect -------------------------------
def test_resource_optimization_runs_on_a_cluster_laid_out_from_the_limits(tmp_path: Path) -> None:
    config = {
        "resource_optimization": True,
        "resource_limits": {"max_cpu_cores": 2, "optimization_strategy": "throughput"},
        "store": {"url": str(tmp_path)},
    }
    with PipelineManager(config) as pm:
        assert pm.client is not None  # not the embedded threads
        result = pm.execute_pipeline(_asking({"cpu_cores": 1}))
        nthreads = pm.client.nthreads()
    assert result.success, result.error
    assert sorted(nthreads.values()) == [1, 1]


def test_an_optimization_strategy_alone_lays_out_this_machine(monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    settings = load_settings(
        {"cluster_mode": "local", "resource_limits": {"optimization_strategy": "memory"}}
    )
    plan = layout(settings)
    assert (plan.workers, plan.threads) == (1, 8)
    throughput = load_settings({"resource_optimization": True})  # balanced by default
    assert throughput.is_distributed
    assert (layout(throughput).workers, layout(throughput).threads) == (2, 4)

"""Kubernetes mode: the DaskCluster spec field by field, its check against the operator's CRDs,
the rendered manifests and `deploy render`, the client side against an in-memory Kubernetes
API server (kmock), and, when KUBECONFIG names a reachable cluster, a real cluster."""

from __future__ import annotations

import asyncio
import copy
import json
import operator
import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kmock
import pytest
import yaml

from xlibrary.pipeline import __version__
from xlibrary.pipeline.backends.kubernetes import (
    HEADER,
    cluster_spec,
    quantity,
    render_manifests,
    start_cluster,
    validate_spec,
)
from xlibrary.pipeline.cli import main
from xlibrary.pipeline.errors import ClusterError, ConfigError, MissingExtraError
from xlibrary.pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
GUIDE = {
    "cluster_mode": "kubernetes",
    "worker_nodes": 3,
    "resource_allocation": {"cpu_per_worker": 2, "memory_per_worker": "4Gi"},
}
DASKCLUSTERS = "kubernetes.dask.org/v1/daskclusters"


def worker_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = spec["spec"]["worker"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def scheduler_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = spec["spec"]["scheduler"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def option(args: list[str], flag: str) -> str:
    """The value after ``flag``, which must appear exactly once."""
    assert args.count(flag) == 1, args
    return args[args.index(flag) + 1]


def offered(args: list[str]) -> dict[str, str]:
    """The Dask resources a worker offers, from its ``--resources a=1,b=2``."""
    return dict(item.split("=") for item in option(args, "--resources").split(","))


def nulls(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{path}.{i}")]
    return [path] if value is None else []


# -- the spec ------------------------------------------------------------------------------


def test_the_guides_config_field_by_field() -> None:
    spec = cluster_spec(load_settings(GUIDE))
    assert spec["apiVersion"] == "kubernetes.dask.org/v1"
    assert spec["kind"] == "DaskCluster"
    assert spec["metadata"] == {"name": "xlibrary-pipeline"}
    assert spec["spec"]["worker"]["replicas"] == 3
    sized = {"cpu": "2", "memory": "4Gi"}
    image = f"ghcr.io/xlibrary/pipeline:{__version__}"

    worker = worker_container(spec)
    assert worker["image"] == image
    assert worker["resources"] == {"requests": sized, "limits": sized}
    args = worker["args"]
    assert args[:2] == ["dask", "worker"]  # distributed no longer ships `dask-worker`
    assert option(args, "--nthreads") == "2"
    assert option(args, "--memory-limit") == str(4 * 2**30)
    assert offered(args) == {"cpu_cores": "2", "memory_mb": "4096"}

    scheduler = scheduler_container(spec)
    assert scheduler["image"] == image
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert scheduler["resources"] == {"requests": sized, "limits": sized}
    assert spec["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == (
        "xlibrary-pipeline"
    )
    assert nulls(spec) == []  # make_cluster_spec's nulls (env, ...) are pruned


@pytest.mark.parametrize(
    ("strategy", "workers", "cpu", "memory", "memory_mb"),
    [
        ("throughput", 8, "1", "2Gi", "2048"),
        ("balanced", 2, "4", "8Gi", "8192"),
        ("memory", 1, "8", "16Gi", "16384"),
    ],
)
def test_resource_limits_are_laid_out_by_the_strategy(
    strategy: str, workers: int, cpu: str, memory: str, memory_mb: str
) -> None:
    config = {
        "cluster_mode": "kubernetes",
        "resource_limits": {
            "max_cpu_cores": 8,
            "max_memory_gb": 16,
            "optimization_strategy": strategy,
        },
    }
    spec = cluster_spec(load_settings(config))
    assert spec["spec"]["worker"]["replicas"] == workers
    worker = worker_container(spec)
    sized = {"cpu": cpu, "memory": memory}
    assert worker["resources"] == {"requests": sized, "limits": sized}
    assert option(worker["args"], "--nthreads") == cpu
    assert option(worker["args"], "--memory-limit") == str(int(memory[:-2]) * 2**30)
    assert offered(worker["args"]) == {"cpu_cores": cpu, "memory_mb": memory_mb}
    assert workers * int(cpu) == 8  # the caps are used, never exceeded


def test_gpus_are_limits_of_the_workers_only() -> None:
    config = {
        "cluster_mode": "kubernetes",
        "worker_nodes": 2,
        "resource_allocation": {
            "cpu_per_worker": 4,
            "memory_per_worker": "16Gi",
            "gpu_per_worker": 1,
        },
    }
    spec = cluster_spec(load_settings(config))
    worker = worker_container(spec)
    assert worker["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert offered(worker["args"]) == {"cpu_cores": "4", "memory_mb": "16384", "gpu": "1"}
    # the scheduler runs no tasks: a GPU for it would sit idle or leave it unschedulable
    assert "nvidia.com/gpu" not in json.dumps(scheduler_container(spec))


def test_the_kubernetes_section() -> None:
    config = {
        **GUIDE,
        "kubernetes": {
            "name": "etl-nightly",
            "namespace": "pipelines",
            "image": "registry.example.com/etl:7",
            "env": {"LOG_LEVEL": "debug", "SHARDS": 4},
        },
    }
    spec = cluster_spec(load_settings(config))
    assert spec["metadata"] == {"name": "etl-nightly", "namespace": "pipelines"}
    env = [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "SHARDS", "value": "4"}]
    for container in (worker_container(spec), scheduler_container(spec)):
        assert container["image"] == "registry.example.com/etl:7"
        assert container["env"] == env
    assert spec["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == (
        "etl-nightly"
    )


def test_without_memory_the_workers_have_no_memory_limit() -> None:
    config = {
        "cluster_mode": "kubernetes",
        "worker_nodes": 2,
        "resource_allocation": {"cpu_per_worker": 1},
    }
    worker = worker_container(cluster_spec(load_settings(config)))
    assert worker["resources"] == {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}
    assert "--memory-limit" not in worker["args"]
    assert offered(worker["args"]) == {"cpu_cores": "1"}


@pytest.mark.parametrize(
    ("size", "expected"),
    [(4 * 2**30, "4Gi"), (512 * 2**20, "512Mi"), (4 * 10**9, "4G"), (1536 * 2**20, "1536Mi"),
     (3 * 2**40, "3Ti"), (1000, "1k"), (1023, "1023")],
)  # fmt: skip
def test_memory_quantities(size: int, expected: str) -> None:
    assert quantity(size) == expected


@pytest.mark.parametrize(
    ("config", "missing"),
    [
        ({}, "resource_allocation.cpu_per_worker"),
        ({"worker_nodes": 3}, "resource_allocation.cpu_per_worker"),
        ({"resource_allocation": {"cpu_per_worker": 2}}, "worker_nodes"),
        ({"resource_limits": {"max_memory_gb": 8}}, "resource_limits.max_cpu_cores"),
    ],
)
def test_sizes_never_come_from_this_machine(config: dict[str, Any], missing: str) -> None:
    settings = load_settings({"cluster_mode": "kubernetes", **config})
    with pytest.raises(ConfigError, match=f"needs {re.escape(missing)}: the workers run on"):
        cluster_spec(settings)


# -- the CRD schema -------------------------------------------------------------------------


def test_the_spec_validates_against_the_crd() -> None:
    spec = cluster_spec(load_settings(GUIDE))
    validate_spec(spec)  # raises on failure


def test_make_cluster_specs_nulls_would_fail_the_crd() -> None:
    """Why the nulls are pruned: the schema (and so validate_spec) rejects them."""
    from dask_kubernetes.operator import make_cluster_spec

    with pytest.raises(ConfigError, match=r"invalid at spec\.worker\.replicas: None"):
        validate_spec(make_cluster_spec(name="raw"))


def _replicas_four(spec: dict[str, Any]) -> None:
    spec["spec"]["worker"]["replicas"] = "four"


def _no_service(spec: dict[str, Any]) -> None:
    del spec["spec"]["scheduler"]["service"]


def _bad_port(spec: dict[str, Any]) -> None:
    scheduler_container(spec)["ports"][0]["containerPort"] = "http"


def _bad_name(spec: dict[str, Any]) -> None:
    spec["metadata"]["name"] = "Nightly_ETL"


def _wrong_kind(spec: dict[str, Any]) -> None:
    spec["kind"] = "Deployment"


@pytest.mark.parametrize(
    ("breaks", "message"),
    [
        (_replicas_four, "invalid at spec.worker.replicas: 'four' is not of type 'integer'"),
        (_no_service, "invalid at spec.scheduler: 'service' is a required property"),
        (_bad_port, "invalid at spec.scheduler.spec.containers.0.ports.0.containerPort"),
        (_bad_name, "'Nightly_ETL' is not a valid DaskCluster name"),
        (_wrong_kind, "expected a Kubernetes resource of kind DaskCluster or DaskAutoscaler"),
    ],
)
def test_a_broken_spec_fails_naming_the_field(breaks: Any, message: str) -> None:
    spec = copy.deepcopy(cluster_spec(load_settings(GUIDE)))
    breaks(spec)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_spec(spec)


def test_a_bad_cluster_name_in_the_config_is_a_config_error() -> None:
    settings = load_settings({**GUIDE, "kubernetes": {"name": "ETL pipeline"}})
    with pytest.raises(ConfigError, match=r"config key kubernetes\.name"):
        cluster_spec(settings)


# -- manifests ------------------------------------------------------------------------------

SCALING = {**GUIDE, "auto_scaling": True, "scaling": {"minimum": 1, "maximum": 6}}


def test_manifests_are_the_spec_as_yaml_with_a_header() -> None:
    settings = load_settings(GUIDE)
    manifests = render_manifests(settings)
    assert list(manifests) == ["daskcluster.yaml"]
    text = manifests["daskcluster.yaml"]
    first, _, body = text.partition("\n")
    assert first == HEADER.strip()
    assert "xlibrary-pipeline deploy render" in first and "do not edit" in first
    assert yaml.safe_load(body) == cluster_spec(settings)
    assert render_manifests(load_settings(GUIDE)) == manifests  # deterministic


def test_auto_scaling_adds_a_daskautoscaler() -> None:
    manifests = render_manifests(load_settings(SCALING))
    assert sorted(manifests) == ["daskautoscaler.yaml", "daskcluster.yaml"]
    autoscaler = yaml.safe_load(manifests["daskautoscaler.yaml"])
    assert autoscaler["kind"] == "DaskAutoscaler"
    assert autoscaler["metadata"]["name"] == "xlibrary-pipeline"  # the name adapt() uses
    assert autoscaler["spec"] == {"cluster": "xlibrary-pipeline", "minimum": 1, "maximum": 6}
    validate_spec(autoscaler)
    autoscaler["spec"]["minimum"] = "one"
    with pytest.raises(ConfigError, match=r"DaskAutoscaler resource is invalid at spec\.minimum"):
        validate_spec(autoscaler)


def test_the_committed_manifests_are_fresh() -> None:
    config = json.loads((DEPLOY / "config.json").read_text())
    assert config == GUIDE  # the guide's distributed example
    committed = {path.name: path.read_text() for path in DEPLOY.glob("*.yaml")}
    assert committed == render_manifests(load_settings(config)), (
        "deploy/kubernetes is stale: run `xlibrary-pipeline deploy render` and commit it"
    )


# -- the command ----------------------------------------------------------------------------


def test_deploy_render_writes_the_manifests(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "scaling.json"
    config.write_text(json.dumps(SCALING))
    out = tmp_path / "out"
    assert main(["deploy", "render", "--config", str(config), "-o", str(out)]) == 0
    expected = render_manifests(load_settings(SCALING))
    assert {p.name: p.read_text() for p in out.iterdir()} == expected
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == sorted(str(out / name) for name in expected)

    # auto_scaling off: the autoscaler this command wrote before goes; other files stay
    (out / "notes.yaml").write_text("mine: true\n")
    config.write_text(json.dumps(GUIDE))
    assert main(["deploy", "render", "--config", str(config), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["daskcluster.yaml", "notes.yaml"]
    assert f"removed {out / 'daskautoscaler.yaml'}" in capsys.readouterr().out


def test_deploy_render_reads_dir_config_json_by_default(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(GUIDE))
    assert main(["deploy", "render", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "daskcluster.yaml").read_text() == (DEPLOY / "daskcluster.yaml").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read config file"),
        ("{not json", "is not valid JSON"),
        (json.dumps({"cluster_mode": "kubernetes"}), "needs resource_allocation.cpu_per_worker"),
        (json.dumps({**GUIDE, "worker_node": 3}), "did you mean 'worker_nodes'?"),
    ],
)
def test_deploy_render_bad_input_is_one_line(
    tmp_path: Path, capsys: Any, content: str | None, message: str
) -> None:
    config = tmp_path / "config.json"
    if content is not None:
        config.write_text(content)
    out = tmp_path / "out"
    assert main(["deploy", "render", "--config", str(config), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("xlibrary-pipeline: error: ")
    assert message in err
    assert not out.exists()


# -- without the extra -----------------------------------------------------------------------


def test_missing_dask_kubernetes_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setitem(sys.modules, "dask_kubernetes", None)
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    settings = load_settings(GUIDE)
    for call in (cluster_spec, render_manifests, start_cluster):
        with pytest.raises(
            MissingExtraError, match=re.escape('pip install "xlibrary[kubernetes]"')
        ):
            call(settings)
    assert (
        main(["deploy", "render", "--config", str(DEPLOY / "config.json"), "-o", "/nonexistent"])
        == 2
    )
    assert 'pip install "xlibrary[kubernetes]"' in capsys.readouterr().err


# -- against kmock's in-memory Kubernetes API server -----------------------------------------


class FakeKubernetes:
    """kmock's Kubernetes emulator on 127.0.0.1, served from a thread of its own (the code
    under test is synchronous and runs its own event loop), knowing the Dask CRDs."""

    def __init__(self) -> None:
        self.emulator: Any = None
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            for plural, kind in [
                ("daskclusters", "DaskCluster"),
                ("daskworkergroups", "DaskWorkerGroup"),
                ("daskautoscalers", "DaskAutoscaler"),
            ]:
                emulator.resources[f"kubernetes.dask.org/v1/{plural}"] = kmock.ResourceInfo(
                    kind=kind,
                    namespaced=True,
                    verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
                )
            emulator["get", re.compile(r"/version/?")] << {"gitVersion": "v1.33.0"}
            self.emulator, self.url = emulator, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> FakeKubernetes:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("kmock did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "any"}}],
            "contexts": [
                {
                    "name": "kmock",
                    "context": {"cluster": "kmock", "user": "tester", "namespace": "default"},
                }
            ],
            "current-context": "kmock",
        }

    def history(self, name: str) -> list[Any]:
        """Every version of the DaskCluster ``name`` (``None`` where it was deleted)."""
        return list(self.emulator.objects[DASKCLUSTERS, "default", name].history)

    def requests(self, method: str) -> list[str]:
        """Paths of the DaskCluster requests made with ``method``."""
        return [
            request.url.path
            for request in self.emulator
            if request.method.value == method and "/daskclusters" in request.url.path
        ]


@pytest.fixture
def fake_kubernetes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as kube:
        path = tmp_path / "kubeconfig.yaml"
        path.write_text(yaml.safe_dump(kube.kubeconfig()))
        monkeypatch.setenv("KUBECONFIG", str(path))
        yield kube


@pytest.mark.timeout(60)
def test_start_cluster_creates_the_daskcluster(fake_kubernetes: FakeKubernetes) -> None:
    settings = load_settings({**GUIDE, "kubernetes": {"resource_timeout": 2}})
    # No operator runs in kmock, so no pod ever comes: the start times out, as it would
    # on a cluster without the Dask operator.
    with pytest.raises(ClusterError, match="not actioned after 2") as failed:
        start_cluster(settings)
    assert isinstance(failed.value.__cause__, TimeoutError)
    assert "the Dask operator is installed (see deploy/README.md)" in str(failed.value)

    assert fake_kubernetes.requests("POST") == [
        "/apis/kubernetes.dask.org/v1/namespaces/default/daskclusters"
    ]
    created, *_, last = fake_kubernetes.history("xlibrary-pipeline")
    assert created["spec"] == cluster_spec(settings)["spec"]  # what the manifests hold
    assert created["spec"]["worker"]["replicas"] == 3
    worker = created["spec"]["worker"]["spec"]["containers"][0]
    sized = {"cpu": "2", "memory": "4Gi"}
    assert worker["resources"] == {"requests": sized, "limits": sized}
    assert option(worker["args"], "--nthreads") == "2"
    assert offered(worker["args"]) == {"cpu_cores": "2", "memory_mb": "4096"}
    assert last is None  # the failed start deleted what it created


@pytest.mark.timeout(60)
def test_an_existing_daskcluster_is_never_taken_over(fake_kubernetes: FakeKubernetes) -> None:
    from dask_kubernetes.operator.kubecluster.kubecluster import reap_clusters

    theirs = copy.deepcopy(cluster_spec(load_settings(GUIDE)))
    theirs["metadata"]["namespace"] = "default"
    theirs["spec"]["worker"]["replicas"] = 7
    fake_kubernetes.emulator.objects[DASKCLUSTERS, "default", "xlibrary-pipeline"] = theirs

    with pytest.raises(ClusterError, match="already exists") as failed:
        start_cluster(load_settings({**GUIDE, "kubernetes": {"resource_timeout": 2}}))
    assert "kubectl delete daskcluster xlibrary-pipeline" in str(failed.value)
    reap_clusters()  # what dask-kubernetes runs at interpreter exit
    assert fake_kubernetes.requests("POST") == []
    assert fake_kubernetes.requests("DELETE") == []
    assert fake_kubernetes.history("xlibrary-pipeline")[-1]["spec"]["worker"]["replicas"] == 7


# -- a real cluster ---------------------------------------------------------------------------


def reachable_kubeconfig() -> str:
    """The cluster of $KUBECONFIG when its API server answers on TCP; skip otherwise."""
    paths = os.environ.get("KUBECONFIG", "")
    if not paths:
        pytest.skip("KUBECONFIG is not set: no real Kubernetes cluster to run a Dask cluster on")
    path = Path(paths.split(os.pathsep)[0])
    try:
        config = yaml.safe_load(path.read_text())
        contexts = {c["name"]: c["context"] for c in config["contexts"]}
        clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
        server = urlsplit(clusters[contexts[config["current-context"]]["cluster"]]["server"])
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        pytest.skip(f"KUBECONFIG={path} names no usable cluster: {exc!r}")
    port = server.port or (443 if server.scheme == "https" else 80)
    try:
        socket.create_connection((server.hostname, port), timeout=3).close()
    except OSError as exc:
        pytest.skip(f"the Kubernetes API server of KUBECONFIG={path} is not reachable: {exc}")
    return str(path)


@pytest.mark.timeout(900)
def test_a_real_cluster_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs the Dask operator on the cluster and the image (XLIBRARY_TEST_K8S_IMAGE, default
    ghcr.io/xlibrary/pipeline:<version>) pullable there."""
    reachable_kubeconfig()
    from distributed import Client

    kubernetes: dict[str, Any] = {
        "name": f"xlibrary-test-{uuid.uuid4().hex[:8]}",
        "resource_timeout": 300,
    }
    if os.environ.get("XLIBRARY_TEST_K8S_IMAGE"):
        kubernetes["image"] = os.environ["XLIBRARY_TEST_K8S_IMAGE"]
    settings = load_settings(
        {
            "cluster_mode": "kubernetes",
            "worker_nodes": 1,
            "resource_allocation": {"cpu_per_worker": 1, "memory_per_worker": "1Gi"},
            "kubernetes": kubernetes,
        }
    )
    cluster = start_cluster(settings)
    try:
        with Client(cluster) as client:
            assert client.submit(operator.add, 1, 1).result(timeout=300) == 2
    finally:
        cluster.close()

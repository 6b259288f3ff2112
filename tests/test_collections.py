"""Dask collections as task results: lazy on threads, persisted on a cluster, computed once at
the end, written by the workers when cached or saved."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.utils import key_split
from distributed import Client, LocalCluster, get_task_stream

from xlibrary.pipeline import Pipeline, PipelineManager, SerializationError
from xlibrary.pipeline.store import open_cache

ROWS = 100_000  # 1.6 MB: a from_pandas frame carrying it is persisted on a cluster
PARTS = 4


def frame() -> pd.DataFrame:
    return pd.DataFrame({"k": np.arange(ROWS) % 10, "v": np.arange(ROWS, dtype=float)})


def expected_totals() -> pd.Series:
    data = frame()
    return data[data.v % 2 == 0].groupby("k").v.sum()


_seen: list[int] = []  # partitions the counting task saw (threads: this process)
_seen_lock = threading.Lock()


def _count(part: pd.DataFrame) -> pd.DataFrame:
    with _seen_lock:
        _seen.append(len(part))
    return part


def etl(name: str = "collections") -> Pipeline:
    """load (from_pandas, built in the task) -> clean -> totals and size, both final."""
    p = Pipeline(name)

    @p.task("load")
    def load() -> dd.DataFrame:
        return dd.from_pandas(frame(), npartitions=PARTS)

    @p.task("clean", depends_on=["load"])
    def clean(data: dd.DataFrame) -> dd.DataFrame:
        return data[data.v % 2 == 0].map_partitions(_count, meta=data._meta)

    p.task("totals", depends_on=["clean"])(lambda data: data.groupby("k").v.sum())
    p.task("size", depends_on=["clean"])(lambda data: data.v.count())
    return p


@pytest.fixture
def store(tmp_path: Path) -> dict[str, Any]:
    return {"store": {"url": str(tmp_path / "store")}}


# -- threads ---------------------------------------------------------------------------------
def test_threads_pass_collections_lazily_and_compute_a_shared_one_once(
    store: dict[str, Any],
) -> None:
    _seen.clear()
    with PipelineManager({**store, "scheduler": "threads"}) as pm:
        result = pm.execute_pipeline(etl())
    assert result.success, result.error
    assert result.backend == "threads"
    pd.testing.assert_series_equal(result.final_result["totals"], expected_totals())
    assert result.final_result["size"] == ROWS // 2
    assert len(_seen) == PARTS  # "clean" feeds both final tasks: computed once
    for name in ("load", "clean"):  # intermediate results stay collections, lazy
        assert isinstance(result.results[name], dd.DataFrame)
    assert result.results["totals"] is result.final_result["totals"]


def test_compute_final_false_returns_the_final_collections(store: dict[str, Any]) -> None:
    _seen.clear()
    with PipelineManager({**store, "scheduler": "threads"}) as pm:
        result = pm.execute_pipeline(etl(), compute_final=False)
        submitted = pm.submit(etl(), compute_final=False).result(timeout=60)
    assert not _seen  # nothing computed
    totals = result.final_result["totals"]
    assert isinstance(totals, dd.Series)
    pd.testing.assert_series_equal(totals.compute(), expected_totals())
    assert isinstance(submitted.final_result["size"], dd.Scalar)


def test_arrays_bags_and_delayed_come_back_computed(store: dict[str, Any]) -> None:
    p = Pipeline("kinds")
    p.task("array")(lambda: da.arange(100, chunks=30))
    p.task("total", depends_on=["array"])(lambda a: (a * 2).sum())
    p.task("bag")(lambda: db.from_sequence(range(5), npartitions=2).map(lambda x: x + 1))
    p.task("delayed")(lambda: dask.delayed(sum)([1, 2, 3]))
    with PipelineManager({**store, "scheduler": "threads"}) as pm:
        result = pm.execute_pipeline(p)
    assert result.final_result == {"total": 9900, "bag": [1, 2, 3, 4, 5], "delayed": 6}
    assert isinstance(result.results["array"], da.Array)


def test_a_collection_that_fails_to_compute_fails_the_run_on_threads(
    store: dict[str, Any],
) -> None:
    p = Pipeline("broken")
    p.task("load")(lambda: dd.from_pandas(frame(), npartitions=PARTS))
    p.task("ratio", depends_on=["load"])(
        lambda d: d.map_partitions(_divide_by_zero, meta=d._meta).v.sum()
    )
    with PipelineManager({**store, "scheduler": "threads"}) as pm:
        result = pm.execute_pipeline(p)
    assert not result.success
    assert result.failed_task == "ratio"
    assert isinstance(result.tasks["ratio"].error, ZeroDivisionError)
    assert "_divide_by_zero" in (result.tasks["ratio"].traceback or "")


def _divide_by_zero(part: pd.DataFrame) -> pd.DataFrame:
    raise ZeroDivisionError("a partition divided by zero")


# -- a cluster -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two worker processes of one thread each: the case where a nested compute deadlocks."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _tasks_on_scheduler(client: Client) -> int:
    return int(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))


def _held_on_workers(client: Client) -> list[int]:
    def held() -> int:
        from xlibrary.pipeline import lazy

        return sum(len(collections) for collections in lazy._held.values())

    return sorted(client.run(held).values())


def test_a_cluster_persists_collections_and_computes_the_finals_at_the_end(
    client: Client, store: dict[str, Any]
) -> None:
    config = {**store, "keep_results": "all"}
    with PipelineManager(config, client=client) as pm, get_task_stream(client) as stream:
        result = pm.execute_pipeline(etl("on_cluster"))
    assert result.success, result.error
    assert result.backend == "distributed"
    pd.testing.assert_series_equal(result.final_result["totals"], expected_totals())
    assert result.final_result["size"] == ROWS // 2
    # the intermediate results are persisted collections: futures, not data
    clean = result.results["clean"]
    assert isinstance(clean, dd.DataFrame)
    assert len(cloudpickle.dumps(clean)) < 20_000 < frame().memory_usage().sum()
    pd.testing.assert_series_equal(
        client.compute(clean.groupby("k").v.sum()).result(), expected_totals()
    )
    # the from_pandas partitions went from the worker that built them to the workers
    # (scattered, not through the scheduler in a graph) under the task's name ...
    from distributed.client import futures_of

    keys = {str(future.key[0]) for future in futures_of(clean)}
    assert keys and all(k.startswith(f"load-{result.run_id}-frompandas-") for k in keys), keys
    assert {key_split(future.key) for future in futures_of(clean)} == {"load"}
    # ... and the rest ran on the workers under the pipeline tasks' names
    prefixes = {key_split(task["key"]) for task in stream.data}
    assert any(prefix.startswith("totals+size-") for prefix in prefixes), prefixes  # the end
    assert {"load", "clean", "totals", "size"} <= prefixes  # the tasks themselves
    # the workers let go of the run; what the result holds is the client's
    assert _held_on_workers(client) == [0, 0]
    del result, clean
    gc.collect()
    deadline = time.monotonic() + 10
    while _tasks_on_scheduler(client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _tasks_on_scheduler(client) == 0


def test_a_collection_split_when_optimized_comes_back_whole(
    client: Client, store: dict[str, Any]
) -> None:
    p = Pipeline("split")  # 16 partitions: Dask splits the groupby's output when optimizing
    p.task("load")(lambda: dd.from_pandas(frame(), npartitions=16))
    p.task("totals", depends_on=["load"])(lambda d: d.groupby("k").v.sum())
    with PipelineManager(store, client=client) as pm:
        result = pm.execute_pipeline(p)
    pd.testing.assert_series_equal(result.final_result.sort_index(), frame().groupby("k").v.sum())


def test_a_task_returns_only_once_the_scheduler_has_taken_in_its_graph(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A persisted graph reaches the scheduler on the worker's connection; the next task's
    graph, built on it, on another. A big graph (from_pandas, 120 MB) was still coming in
    when the next one arrived: "lost dependencies" (1 run in 3 of bench_collections)."""
    from dask.task_spec import DataNode

    from xlibrary.pipeline import lazy

    key = (f"later-{time.monotonic_ns()}", 0)
    kept: list[Any] = []

    def submit_later() -> None:
        time.sleep(0.5)
        kept.extend(client.get({key: DataNode(key, 1)}, [key], sync=False))

    started = time.monotonic()
    threading.Thread(target=submit_later, daemon=True).start()
    lazy._until_known(client, [key])
    assert time.monotonic() - started >= 0.5 and kept
    monkeypatch.setattr(lazy, "KNOWN_TIMEOUT", 0.2)
    with pytest.raises(TimeoutError, match="did not take in the graph"):
        lazy._until_known(client, [("never-sent", 0)])


def test_a_p2p_shuffle_in_a_task_does_not_deadlock_one_thread_workers(
    client: Client, store: dict[str, Any]
) -> None:
    p = Pipeline("shuffled")
    p.task("load")(lambda: dd.from_pandas(frame(), npartitions=PARTS))
    p.task("by_key", depends_on=["load"])(lambda d: d.shuffle("k"))
    p.task("indexed", depends_on=["by_key"])(lambda d: d.set_index("v").k.sum())
    with PipelineManager(store, client=client) as pm, get_task_stream(client) as stream:
        result = pm.execute_pipeline(p)
    assert result.success, result.error
    assert result.final_result == frame().k.sum()
    keys = {str(task["key"]) for task in stream.data}
    assert any("shuffle-barrier-" in key for key in keys), "not a P2P shuffle"


def test_a_partition_that_fails_fails_the_task_of_its_collection(
    client: Client, store: dict[str, Any]
) -> None:
    p = Pipeline("broken_on_cluster")
    p.task("load")(lambda: dd.from_pandas(frame(), npartitions=PARTS))
    p.task("ratio")(  # persisted where it was built: its data is in its graph
        lambda: dd.from_pandas(frame(), npartitions=PARTS).map_partitions(
            _divide_by_zero, meta=frame().iloc[:0]
        )
    )
    p.task("total", depends_on=["ratio"])(lambda d: d.v.sum())
    p.task("rows", depends_on=["load"])(lambda d: d.v.count())
    with PipelineManager(store, client=client) as pm:
        result = pm.execute_pipeline(p)
    assert result.states == {
        "load": "succeeded", "ratio": "failed", "total": "skipped", "rows": "succeeded"
    }  # fmt: skip
    assert result.failed_task == "ratio"
    assert isinstance(result.tasks["ratio"].error, ZeroDivisionError)
    assert result.results["rows"] == ROWS
    assert _held_on_workers(client) == [0, 0]


def test_a_collection_handed_on_lazily_fails_the_task_that_computes_it(
    client: Client, store: dict[str, Any]
) -> None:
    p = Pipeline("broken_lazily")
    p.task("load")(lambda: dd.from_pandas(frame(), npartitions=PARTS))
    p.task("ratio", depends_on=["load"])(
        lambda d: d.map_partitions(_divide_by_zero, meta=d._meta)  # a graph on futures
    )
    p.task("total", depends_on=["ratio"])(lambda d: d.v.sum())
    with PipelineManager(store, client=client) as pm:
        result = pm.execute_pipeline(p)
    assert result.states == {"load": "succeeded", "ratio": "succeeded", "total": "failed"}
    assert isinstance(result.tasks["total"].error, ZeroDivisionError)
    assert "_divide_by_zero" in (result.tasks["total"].traceback or "")
    assert _held_on_workers(client) == [0, 0]


def test_a_frame_read_from_files_is_handed_on_lazily_and_computed_whole(
    client: Client, store: dict[str, Any], tmp_path: Path
) -> None:
    """Persisting a read_parquet in the middle would read every column and lose Dask's
    optimizations across tasks (bench_collections: 1.36x hand-written Dask); handed on,
    the final compute is the one hand-written Dask makes."""
    path = str(tmp_path / "sales")
    dd.from_pandas(frame().assign(w=1.0), npartitions=PARTS).to_parquet(path)
    p = Pipeline("from_files")
    p.task("load")(lambda: dd.read_parquet(path))
    p.task("keep", depends_on=["load"])(lambda d: d[d.v % 2 == 0])
    p.task("totals", depends_on=["keep"])(lambda d: d.groupby("k").v.sum())
    config = {**store, "keep_results": "all"}
    with PipelineManager(config, client=client) as pm, get_task_stream(client) as stream:
        result = pm.execute_pipeline(p)
    pd.testing.assert_series_equal(result.final_result, expected_totals())
    from distributed.client import futures_of

    assert not futures_of(result.results["keep"])  # a graph, not persisted partitions
    prefixes = {key_split(task["key"]) for task in stream.data}
    assert any(prefix.startswith("totals-") for prefix in prefixes), prefixes


def test_compute_final_false_on_a_cluster_keeps_the_collection_for_the_client(
    client: Client, store: dict[str, Any]
) -> None:
    with PipelineManager(store, client=client) as pm:
        result = pm.execute_pipeline(etl("kept"), compute_final=False)
    totals = result.final_result["totals"]
    assert isinstance(totals, dd.Series)
    assert _held_on_workers(client) == [0, 0]  # the client holds it now
    time.sleep(0.2)
    pd.testing.assert_series_equal(client.compute(totals).result(), expected_totals())


def test_a_default_client_runs_collections_and_its_computes(
    client: Client, store: dict[str, Any]
) -> None:
    with Client(client.scheduler.address) as default, PipelineManager(store) as pm:
        result = pm.execute_pipeline(etl("default"), compute_final=False)
        assert result.backend == "distributed" and pm.client is default
        assert result.final_result["size"].compute() == ROWS // 2  # on the default client


# -- the cache and saved results -------------------------------------------------------------
_calls: list[str] = []  # a global, not a closure value (that would change the cache key)


def cached(pm: PipelineManager) -> Pipeline:
    p = Pipeline("cached_collections")

    @p.task("load")
    @pm.cache_result(key="load")  # a source task reads nothing the engine sees: give a key
    def load() -> dd.DataFrame:
        _calls.append("load")
        return dd.from_pandas(frame(), npartitions=PARTS)

    @p.task("grid")
    @pm.cache_result(key="grid")
    def grid() -> da.Array:
        _calls.append("grid")
        return da.arange(120, chunks=50).reshape(12, 10)

    @p.task("kept", depends_on=["load"])
    @pm.cache_result  # a derived key: the name, the code and load's entry
    def kept(data: dd.DataFrame) -> dd.DataFrame:
        return data[data.v % 2 == 0]

    p.task("totals", depends_on=["kept"])(lambda d: d.groupby("k").v.sum())
    p.task("grid_sum", depends_on=["grid"])(lambda g: g.sum(axis=0))
    return p


def _store_files(root: Path, part: str) -> list[Path]:
    return [path for path in root.rglob("*") if part in path.parts and path.is_file()]


@pytest.mark.parametrize("where", ["threads", "cluster"])
def test_cached_collections_are_written_as_parquet_and_zarr_and_read_back_lazily(
    where: str, client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    config: dict[str, Any] = {"store": {"url": str(root)}}
    on = {"client": client} if where == "cluster" else {}
    _calls.clear()
    with PipelineManager(config, **on) as pm:
        with get_task_stream(client) as stream:
            first = pm.execute_pipeline(cached(pm))
        assert first.success, first.error
        parquet = [p.name for p in _store_files(root, "collections") if p.suffix == ".parquet"]
        assert sorted(parquet) == sorted(2 * [f"part.{i}.parquet" for i in range(PARTS)])
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [r.getMessage() for r in warned if r.name.startswith("xlibrary")]
        if where == "cluster":  # written by the workers
            assert any("toparquet" in key_split(task["key"]) for task in stream.data)
        second = pm.execute_pipeline(cached(pm))
        assert second.states["load"] == "skipped"  # not needed: "kept" is a hit
        assert second.states["kept"] == "cached" and second.states["grid"] == "cached"
        assert _calls == (["load", "grid"] if where == "threads" else [])
        pd.testing.assert_series_equal(second.final_result["totals"], expected_totals())
        np.testing.assert_array_equal(
            second.final_result["grid_sum"], np.arange(120).reshape(12, 10).sum(axis=0)
        )
        assert pm.explain_cache(cached(pm))["kept"].status == "hit"
        assert pm.clear_cache() == 3
        assert not _store_files(root, "collections")


def test_the_cache_never_pickles_a_collection(tmp_path: Path) -> None:
    cache = open_cache("fsspec", str(tmp_path))
    with pytest.raises(SerializationError, match="parquet"):
        cache.save("k", dd.from_pandas(frame(), npartitions=2))


def test_a_bag_is_not_cached_and_says_so(
    store: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with PipelineManager({**store, "scheduler": "threads"}) as pm:
        p = Pipeline("bagged")
        p.task("bag")(pm.cache_result(key="bag")(lambda: db.from_sequence([1, 2, 3])))
        with caplog.at_level(logging.WARNING, "xlibrary.pipeline"):
            result = pm.execute_pipeline(p)
            again = pm.execute_pipeline(p)
    assert result.final_result == again.final_result == [1, 2, 3]
    assert again.states["bag"] == "succeeded"
    assert "not stored" in caplog.text and "dask.bag" in caplog.text


@pytest.mark.parametrize("where", ["threads", "cluster"])
def test_saved_intermediate_collections_come_back_lazily(
    where: str, client: Client, store: dict[str, Any]
) -> None:
    on = {"client": client} if where == "cluster" else {}
    config = {**store, "save_intermediate_results": True}
    with PipelineManager(config, **on) as pm:
        result = pm.execute_pipeline(etl("saved"))
        assert result.tasks["clean"].saved and result.tasks["load"].saved
        saved = pm.get_intermediate_results("saved", tasks=["clean"])
    written = Path(store["store"]["url"], "runs", "saved", result.run_id, "results")
    parts = sorted(path.name for path in (written / "clean.parquet").iterdir())
    assert parts == [f"part.{i}.parquet" for i in range(PARTS)]  # not a pickled graph
    clean = saved["clean"]
    assert isinstance(clean, dd.DataFrame)  # read lazily from the parquet files
    pd.testing.assert_series_equal(
        clean.groupby("k").v.sum().compute(scheduler="threads"), expected_totals()
    )


def test_prune_removes_collections_no_entry_names(tmp_path: Path) -> None:
    cache = open_cache("fsspec", str(tmp_path))
    place = cache.collection_place("key", "abc", "parquet", ".parquet")
    assert place is not None
    dd.from_pandas(frame(), npartitions=2).to_parquet(place.url)
    assert os.path.isdir(place.url)
    cache.prune()  # no entry was written for it: a run that stopped
    assert not os.path.exists(place.url)


_fail_once: list[bool] = []


def test_a_retry_restores_a_saved_collection_from_its_parquet_files(
    store: dict[str, Any],
) -> None:
    p = Pipeline("retried_collections")
    p.task("load")(lambda: dd.from_pandas(frame(), npartitions=PARTS))

    @p.task("totals", depends_on=["load"])
    def totals(data: dd.DataFrame) -> dd.Series:
        if not _fail_once:
            _fail_once.append(True)
            raise ConnectionError("the first attempt fails")
        return data.groupby("k").v.sum()

    config = {**store, "save_intermediate_results": True, "scheduler": "threads"}
    with PipelineManager(config) as pm:
        failed = pm.execute_pipeline(p)
        assert failed.failed_task == "totals" and failed.tasks["load"].saved
        retried = pm.retry_failed_task("retried_collections", "totals", pipeline=p)
    assert retried.states == {"load": "cached", "totals": "succeeded"}
    assert retried.tasks["load"].source == f"run:{failed.run_id}"
    saved = Path(store["store"]["url"], "runs", "retried_collections", failed.run_id, "results")
    assert (saved / "load.parquet" / "part.0.parquet").is_file()  # not a pickled graph
    pd.testing.assert_series_equal(retried.final_result, frame().groupby("k").v.sum())

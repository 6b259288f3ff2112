"""Datasets wired into pipelines: source tasks keyed by their files' fingerprints, outputs
written after a task succeeds (versioned or not) and cached from there, catalogs, keys that
cannot go stale silently (no visible input: not cached), cache=False, refresh, and a task that
changes its input caught in debug mode."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest

from tests.conftest import Calls
from xlibrary.pipeline import (
    ConfigError,
    Pipeline,
    PipelineDefinitionError,
    PipelineManager,
)
from xlibrary.pipeline.datasets import Catalog, Dataset
from xlibrary.pipeline.errors import DatasetError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def cached_pm(store: str) -> Iterator[PipelineManager]:
    with PipelineManager({"store": {"url": store}, "caching": {"cache_results": True}}) as pm:
        yield pm


@pytest.fixture(params=["memory", "local"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh directory URL: on memory:// or a local directory."""
    if request.param == "memory":
        name = f"data-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)
    else:
        yield str(tmp_path / "data")


def _write_csv(url: str, frame: pd.DataFrame) -> None:
    Dataset(url).save(frame)
    time.sleep(0.01)  # a rewrite within the file system's clock tick could keep the mtime


def _companies(calls: Calls, url: str) -> Pipeline:
    p = Pipeline("companies")
    p.dataset("companies", url)

    @p.task("rated", depends_on=["companies"])
    def rated(frame: pd.DataFrame) -> pd.DataFrame:
        calls("rated")
        return frame[frame["rating"] > 1]

    @p.task("total", depends_on=["rated"])
    def total(frame: pd.DataFrame) -> int:
        calls("total")
        return int(frame["rating"].sum())

    return p


def test_a_dataset_source_loads_and_a_changed_file_misses(
    cached_pm: PipelineManager, base: str
) -> None:
    url = f"{base}/01_raw/companies.csv"
    _write_csv(url, pd.DataFrame({"id": [1, 2, 3], "rating": [1, 2, 3]}))
    calls = Calls()
    p = _companies(calls, url)
    first = cached_pm.execute_pipeline(p)
    assert first.final_result == 5
    assert first.states == {"companies": "succeeded", "rated": "succeeded", "total": "succeeded"}
    again = cached_pm.execute_pipeline(p)
    assert again.final_result == 5 and calls.counts == {"rated": 1, "total": 1}
    # nothing changed: the tasks using the file hit, and the file is not even read
    assert again.states == {"companies": "skipped", "rated": "skipped", "total": "cached"}
    _write_csv(url, pd.DataFrame({"id": [1, 2, 3], "rating": [1, 2, 4]}))
    explained = cached_pm.explain_cache(p)
    assert explained["rated"].status == "miss"
    assert "dataset 'companies'" in explained["rated"].reason
    assert "companies.csv changed" in explained["rated"].reason
    assert explained["companies"].runs
    changed = cached_pm.execute_pipeline(p)
    assert changed.final_result == 6
    assert changed.states == {"companies": "succeeded", "rated": "succeeded", "total": "succeeded"}


def test_a_glob_of_parquet_files_is_one_dataset_and_a_new_file_misses(
    cached_pm: PipelineManager, base: str
) -> None:
    for part in range(2):
        Dataset(f"{base}/events/part-{part}.parquet").save(pd.DataFrame({"n": [part, part]}))
    calls = Calls()
    p = Pipeline("events")
    p.dataset("events", f"{base}/events/part-*.parquet")

    @p.task("count", depends_on=["events"])
    def count(frame: pd.DataFrame) -> int:
        calls("count")
        return len(frame)

    assert cached_pm.execute_pipeline(p).final_result == 4
    assert cached_pm.execute_pipeline(p).states["count"] == "cached"
    Dataset(f"{base}/events/part-2.parquet").save(pd.DataFrame({"n": [2]}))
    assert "part-2.parquet was added" in cached_pm.explain_cache(p)["count"].reason
    assert cached_pm.execute_pipeline(p).final_result == 5
    assert calls.counts == {"count": 2}


def test_a_dataset_takes_a_format_load_arguments_or_a_dataset(
    cached_pm: PipelineManager, tmp_path: Path
) -> None:
    path = tmp_path / "semicolons.txt"
    path.write_text("a;b\n1;2\n")
    p = Pipeline("formats")
    declared = p.dataset("frame", str(path), format="csv", sep=";")
    assert isinstance(declared, Dataset) and declared.name == "frame"
    p.dataset("same", Dataset(str(path), format="csv", load_args={"sep": ";"}))
    p.task("sum", depends_on=["frame", "same"])(lambda a, b: int(a["b"].sum() + b["a"].sum()))
    assert cached_pm.execute_pipeline(p).final_result == 3
    with pytest.raises(DatasetError, match="format"):
        Pipeline("bad").dataset("x", str(tmp_path / "x.unknown"))


def test_a_missing_file_fails_its_task_with_the_dataset_named(
    cached_pm: PipelineManager, tmp_path: Path
) -> None:
    calls = Calls()
    p = _companies(calls, str(tmp_path / "nowhere.csv"))
    explained = cached_pm.explain_cache(p)
    assert "cannot fingerprint" in explained["companies"].reason
    result = cached_pm.execute_pipeline(p)
    assert result.failed_task == "companies"
    assert "nowhere.csv" in str(result.error) and "'companies'" in str(result.error)


def test_a_task_reading_nothing_visible_is_not_cached_unless_given_a_key_or_ttl(
    cached_pm: PipelineManager, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls()
    outside = {"value": 1}
    p = Pipeline("invisible")

    @p.task("read")
    def read() -> int:  # reads something the engine cannot see
        calls("read")
        return outside["value"]

    p.task("keyed")(cached_pm.cache_result(key="keyed")(lambda: calls("keyed") or 2))
    p.task("ttl")(cached_pm.cache_result(ttl=60)(lambda: calls("ttl") or 3))
    p.task("use", depends_on=["read"])(lambda x: calls("use") or x * 10)

    with caplog.at_level(logging.DEBUG, logger="xlibrary.pipeline"):
        explained = cached_pm.explain_cache(p)
    assert explained["read"].status == "not cached"
    assert "reads nothing the engine can see" in explained["read"].reason
    assert "declare a dataset or give a key" in explained["read"].reason
    debug = [r for r in caplog.records if "reads nothing the engine can see" in r.getMessage()]
    assert len(debug) == 1 and debug[0].levelno == logging.DEBUG
    assert cached_pm.execute_pipeline(p).results["use"] == 10
    outside["value"] = 2
    second = cached_pm.execute_pipeline(p)
    assert second.results["use"] == 20  # never the stale 10
    assert second.states == {
        "read": "succeeded",
        "keyed": "cached",
        "ttl": "cached",
        "use": "succeeded",
    }


def test_cache_false_is_never_cached(cached_pm: PipelineManager) -> None:
    calls = Calls()
    p = Pipeline("never")
    p.task("a", cache=False)(lambda *, n=1: calls("a") or n)
    p.task("b", depends_on=["a"], cache=False)(cached_pm.cache_result(lambda x: calls("b") or x))
    cached_pm.execute_pipeline(p)
    assert cached_pm.execute_pipeline(p).states == {"a": "succeeded", "b": "succeeded"}
    assert calls.counts == {"a": 2, "b": 2}
    assert cached_pm.explain_cache(p)["a"].reason == "cache=False"
    with pytest.raises(PipelineDefinitionError, match="cache must be False"):
        p.task("c", cache="yes")(lambda: 1)  # type: ignore[arg-type]


def test_refresh_recomputes_and_rewrites_entries(cached_pm: PipelineManager) -> None:
    calls = Calls()
    p = Pipeline("refreshed")
    p.task("a")(lambda *, n=1: calls("a") or n)
    p.task("b", depends_on=["a"])(lambda x: calls("b") or x + 1)
    p.task("c", depends_on=["a"])(lambda x: calls("c") or x + 2)
    cached_pm.execute_pipeline(p)
    cached_pm.execute_pipeline(p)
    assert calls.counts == {"a": 1, "b": 1, "c": 1}
    only_b = cached_pm.execute_pipeline(p, refresh=["b"])
    assert only_b.states == {"a": "cached", "b": "succeeded", "c": "cached"}
    assert calls.counts == {"a": 1, "b": 2, "c": 1}
    every = cached_pm.execute_pipeline(p, refresh=True)
    assert set(every.states.values()) == {"succeeded"}
    assert calls.counts == {"a": 2, "b": 3, "c": 2}
    # what refresh wrote is what the next run reads
    assert set(cached_pm.execute_pipeline(p).states.values()) == {"cached", "skipped"}
    assert calls.counts == {"a": 2, "b": 3, "c": 2}
    upstream = cached_pm.execute_pipeline(p, refresh=["a"])  # needed, though b and c hit
    assert upstream.states["a"] == "succeeded" and calls.counts["a"] == 3
    with pytest.raises(ConfigError, match="did you mean 'b'"):
        cached_pm.execute_pipeline(p, refresh=["bb"])
    handle = cached_pm.submit(p, refresh="c")
    assert handle.result(timeout=30).states["c"] == "succeeded"


def test_refresh_also_reruns_a_task_whose_key_is_known_only_while_running(
    cached_pm: PipelineManager,
) -> None:
    calls = Calls()
    p = Pipeline("late")
    p.task("a", cache=False)(lambda: calls("a") or 1)
    p.task("b", depends_on=["a"])(lambda x: calls("b") or x + 1)
    cached_pm.execute_pipeline(p)
    assert cached_pm.execute_pipeline(p).states["b"] == "cached"
    assert cached_pm.execute_pipeline(p, refresh=["b"]).states["b"] == "succeeded"
    assert calls.counts == {"a": 3, "b": 2}


def test_save_to_writes_the_result_after_the_task_succeeds(
    tmp_path: Path, base: str, store: str
) -> None:
    url = f"{base}/03_primary/model_input.parquet"
    p = Pipeline("saved")
    p.task("frame")(lambda: pd.DataFrame({"a": [1, 2]}))

    @p.task("doubled", depends_on=["frame"], save_to=url)
    def doubled(frame: pd.DataFrame) -> pd.DataFrame:
        return frame * 2

    @p.task("broken", depends_on=["frame"], save_to=f"{base}/broken.parquet")
    def broken(frame: pd.DataFrame) -> Any:
        raise ValueError("no")

    with PipelineManager({"store": {"url": store}}) as pm:
        result = pm.execute_pipeline(p)
    pd.testing.assert_frame_equal(Dataset(url).load(), pd.DataFrame({"a": [2, 4]}))
    assert result.states["broken"] == "failed"
    assert not Dataset(f"{base}/broken.parquet").exists()


def test_an_output_the_value_cannot_be_written_to_fails_the_task(store: str, base: str) -> None:
    p = Pipeline("unwritable")
    p.task("text", save_to=f"{base}/frame.parquet")(lambda *, n=1: "not a frame")
    with PipelineManager({"store": {"url": store}}) as pm:
        result = pm.execute_pipeline(p)
    assert result.failed_task == "text"
    assert "frame.parquet" in str(result.error)


def test_save_to_is_checked_when_declared(tmp_path: Path) -> None:
    p = Pipeline("checked")
    with pytest.raises(PipelineDefinitionError, match="cannot tell its format"):
        p.task("a", save_to=str(tmp_path / "x.unknown"))(lambda: 1)
    with pytest.raises(PipelineDefinitionError, match="give the output with save_to"):
        p.task("b", versioned=True)(lambda: 1)
    with pytest.raises(PipelineDefinitionError, match="is a glob"):
        p.task("c", save_to=str(tmp_path / "*.csv"))(lambda: 1)
    spec = p.task("d", save_to="relative/out.csv")(lambda: 1)
    assert p["d"].save_to == str(Path("relative/out.csv").resolve())
    assert spec is not None


def test_an_up_to_date_output_is_cached_from_there(store: str, base: str) -> None:
    calls = Calls()
    url = f"{base}/out/model_input.parquet"
    p = Pipeline("up_to_date")

    @p.task("frame", depends_on=[], save_to=url)
    def frame(*, rows: int = 3) -> pd.DataFrame:
        calls("frame")
        return pd.DataFrame({"a": list(range(rows))})

    @p.task("total", depends_on=["frame"], cache=False)
    def total(values: pd.DataFrame) -> int:
        return int(values["a"].sum())

    config = {"store": {"url": store}, "caching": {"cache_results": True}}
    with PipelineManager(config) as pm:
        assert pm.execute_pipeline(p).final_result == 3
        second = pm.execute_pipeline(p)
        assert second.states["frame"] == "cached" and calls.counts == {"frame": 1}
        assert second.tasks["frame"].source.startswith("dataset:")
        assert second.final_result == 3
        # another value overwrites the file: the first key's entry no longer stands for it
        assert pm.execute_pipeline(p, params={"rows": 4}).final_result == 6
        explained = pm.explain_cache(p)
        assert explained["frame"].status == "miss"
        assert "saved output changed" in explained["frame"].reason
        assert pm.execute_pipeline(p).final_result == 3
        assert calls.counts == {"frame": 3}
        Dataset(url).save(pd.DataFrame({"a": [100]}))  # someone edits the output
        assert pm.execute_pipeline(p).final_result == 3
        assert calls.counts == {"frame": 4}


def test_a_versioned_output_keeps_each_run_and_another_process_reads_the_latest(
    store: str, tmp_path: Path
) -> None:
    url = str(tmp_path / "models" / "regressor.pkl")
    calls = Calls()
    p = Pipeline("versioned")

    @p.task("regressor", save_to=url, versioned=True)
    def regressor(*, alpha: float = 1.0) -> dict:
        calls("regressor")
        return {"alpha": alpha}

    config = {"store": {"url": store}, "caching": {"cache_results": True}}
    with PipelineManager(config) as pm:
        first = pm.execute_pipeline(p)
        second = pm.execute_pipeline(p, params={"alpha": 2.0})
        back = pm.execute_pipeline(p)  # the first version is intact: cached from it
    assert back.states == {"regressor": "cached"} and back.final_result == {"alpha": 1.0}
    assert f"@{first.run_id}" in back.tasks["regressor"].source
    assert calls.counts == {"regressor": 2}
    assert Dataset(url, versioned=True).versions() == [first.run_id, second.run_id]
    code = (
        "from xlibrary.pipeline.datasets import Dataset; import sys; "
        f"print(Dataset({url!r}, versioned=True).load())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert out.stdout.strip() == "{'alpha': 2.0}"


def test_a_catalog_gives_sources_and_outputs_by_name(
    cached_pm: PipelineManager, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    pd.DataFrame({"id": [1, 2], "rating": [3, 4]}).to_csv(tmp_path / "data/companies.csv")
    catalog_file = tmp_path / "catalog.yml"
    catalog_file.write_text(
        f"""
companies:
  type: pandas.CSVDataset
  filepath: {tmp_path}/data/companies.csv
  load_args:
    index_col: 0
preprocessed_companies:
  type: pandas.ParquetDataset
  filepath: {tmp_path}/data/preprocessed.parquet
unused:
  type: pandas.CSVDataset
  filepath: {tmp_path}/data/not_there.csv
"""
    )
    p = Pipeline("kedro")
    catalog = p.attach(Catalog.from_yaml(catalog_file))
    assert isinstance(catalog, Catalog) and p.catalog is catalog

    @p.task("preprocessed_companies", depends_on=["companies"])
    def preprocess(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(rating=frame["rating"] * 10)

    result = cached_pm.execute_pipeline(p)
    assert result.states == {"companies": "succeeded", "preprocessed_companies": "succeeded"}
    saved = Dataset(f"{tmp_path}/data/preprocessed.parquet").load()
    assert list(saved["rating"]) == [30, 40]
    assert "unused" not in result.states
    with pytest.raises(DatasetError, match=r"unknown dataset type .*supported: pandas.CSVDataset"):
        Pipeline("bad").attach({"x": {"type": "pandas.SQLTableDataset", "filepath": "x"}})


def test_debug_mode_warns_when_a_task_changes_its_input(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = Pipeline("mutating")
    p.task("frame")(lambda: pd.DataFrame({"rating": ["90%", "80%"]}))

    @p.task("preprocess", depends_on=["frame"])
    def preprocess(frame: pd.DataFrame) -> pd.DataFrame:
        frame["rating"] = frame["rating"].str.rstrip("%").astype(float)  # in place
        return frame

    p.task("clean", depends_on=["frame"])(lambda frame: frame.copy())
    config = {"store": {"url": str(tmp_path / "s")}, "debug_mode": True}
    with caplog.at_level(logging.WARNING), PipelineManager(config) as pm:
        pm.execute_pipeline(p, parallel=False)
    warned = [r.getMessage() for r in caplog.records if "changed its input" in r.getMessage()]
    assert len(warned) == 1 and "'preprocess'" in warned[0] and "'frame'" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING), PipelineManager({"store": {"url": str(tmp_path)}}) as pm:
        pm.execute_pipeline(p)
    assert not [r for r in caplog.records if "changed its input" in r.getMessage()]


def test_datasets_and_outputs_on_a_local_cluster(tmp_path: Path) -> None:
    """Fingerprints are taken on the client; the output is written by a worker process."""
    source = tmp_path / "in.csv"
    pd.DataFrame({"v": [1, 2, 3]}).to_csv(source, index=False)
    out = tmp_path / "out" / "result.parquet"
    p = Pipeline("clustered")
    p.dataset("values", str(source))

    @p.task("scaled", depends_on=["values"], save_to=str(out))
    def scaled(frame: pd.DataFrame, *, factor: int = 1) -> pd.DataFrame:
        import os

        return frame.assign(v=frame["v"] * factor, pid=os.getpid())

    config = {
        "distributed_mode": True,
        "worker_nodes": 1,
        "store": {"url": str(tmp_path / "store")},
        "caching": {"cache_results": True},
    }
    import os

    with PipelineManager(config) as pm:
        first = pm.execute_pipeline(p, params={"factor": 10})
        assert first.success, first.error
        written = Dataset(str(out)).load()
        assert list(written["v"]) == [10, 20, 30]
        assert written["pid"].iloc[0] != os.getpid()  # written by the worker's process
        again = pm.execute_pipeline(p, params={"factor": 10})
        assert again.states == {"values": "skipped", "scaled": "cached"}
        pd.DataFrame({"v": [1]}).to_csv(source, index=False)
        changed = pm.execute_pipeline(p, params={"factor": 10})
        assert changed.states == {"values": "succeeded", "scaled": "succeeded"}
        assert list(Dataset(str(out)).load()["v"]) == [10]


def test_a_catalog_source_is_one_of_the_pipelines_tasks(tmp_path: Path) -> None:
    p = Pipeline("listed")
    p.attach({"raw": {"type": "pandas.CSVDataset", "filepath": str(tmp_path / "raw.csv")}})
    p.task("use", depends_on=["raw"])(lambda frame: len(frame))
    assert p.task_names == ("use", "raw")
    assert "raw" in p and len(p) == 2
    assert [t.name for t in p.tasks] == ["raw", "use"]


def test_datasets_and_outputs_with_the_redis_cache(
    redis_url: str, store: str, tmp_path: Path
) -> None:
    calls = Calls()
    source = tmp_path / "in.csv"
    pd.DataFrame({"v": [1, 2]}).to_csv(source, index=False)
    p = Pipeline("redis_data")
    p.dataset("values", str(source))

    @p.task("doubled", depends_on=["values"], save_to=str(tmp_path / "out.parquet"))
    def doubled(frame: pd.DataFrame, *, factor: int = 2) -> pd.DataFrame:
        calls("doubled")
        return frame * factor

    config = {
        "store": {"url": store},
        "caching": {"cache_results": True, "cache_type": "redis", "redis_url": redis_url},
    }
    with PipelineManager(config) as pm:
        assert list(pm.execute_pipeline(p).final_result["v"]) == [2, 4]
        again = pm.execute_pipeline(p)
        assert again.states == {"values": "skipped", "doubled": "cached"}
        assert again.tasks["doubled"].source.startswith("dataset:")
        assert "factor: 2 → 3" in pm.explain_cache(p, params={"factor": 3})["doubled"].reason
        pd.DataFrame({"v": [5]}).to_csv(source, index=False)
        assert "in.csv changed" in pm.explain_cache(p)["doubled"].reason
        assert list(pm.execute_pipeline(p).final_result["v"]) == [10]
    assert calls.counts == {"doubled": 2}


def test_a_dataset_only_uncached_tasks_read_is_not_fingerprinted(
    cached_pm: PipelineManager, tmp_path: Path
) -> None:
    p = Pipeline("partly")
    p.dataset("later", str(tmp_path / "not_yet.csv"))
    p.task("raw", depends_on=["later"], cache=False)(lambda frame: len(frame))
    p.task("cached")(lambda *, n=1: n)
    explained = cached_pm.explain_cache(p)
    assert explained["later"].reason == "not cached"  # nothing keyed on it: no stat taken
    assert explained["cached"].status == "miss"

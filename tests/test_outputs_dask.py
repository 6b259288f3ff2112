"""A task's Dask collection saved to its declared output (``save_to``): written by the workers
after the task returned, never computed inside the task (a nested compute in a worker task
can deadlock, issue 14), put in place atomically, and a failed write fails the task."""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, Event

from tests.conftest import WHERE, dask_processes, manager_on
from xlibrary.pipeline import Dataset, Pipeline, PipelineManager

FRAME = pd.DataFrame({"id": range(400), "value": np.arange(400) * 0.5})


def waits_for(part: pd.DataFrame, event: str) -> pd.DataFrame:
    """A partition that waits (up to 10 s) for ``event``, and says whether it came."""
    came = Event(event).wait(timeout=10)
    return part.assign(came=came)


def frames_pipeline(
    out: str, event: str | None = None, name: str = "frames", versioned: bool = False
) -> Pipeline:
    p = Pipeline(name)

    @p.task("make", save_to=out, versioned=versioned)
    def make() -> Any:
        frame = dd.from_pandas(FRAME, npartitions=4)
        if event is not None:
            meta = FRAME.assign(came=True).iloc[:0]
            frame = frame.map_partitions(waits_for, event, meta=meta)
        return frame

    @p.task("total", depends_on=["make"])
    def total(frame: Any) -> float:
        return float(frame["value"].sum().compute())

    return p


def test_a_collection_saved_to_its_output_on_threads(tmp_path: Path) -> None:
    out = str(tmp_path / "out" / "made.parquet")
    with PipelineManager() as pm:
        result = pm.execute_pipeline(frames_pipeline(out))
    assert result.states == {"make": "succeeded", "total": "succeeded"}
    assert result.results["total"] == FRAME["value"].sum()
    assert sorted(p.name for p in Path(out).iterdir()) == [f"part.{i}.parquet" for i in range(4)]
    assert not [p for p in Path(out).parent.iterdir() if p.name.startswith(".")]  # no temp dir
    pd.testing.assert_frame_equal(Dataset(out).load(), FRAME)


def test_a_versioned_output_of_a_collection_is_the_runs_version(tmp_path: Path) -> None:
    url = str(tmp_path / "versions" / "made.parquet")
    with PipelineManager() as pm:
        result = pm.execute_pipeline(frames_pipeline(url, name="versioned", versioned=True))
    dataset = Dataset(url, versioned=True)
    assert (Path(url) / result.run_id / "made.parquet").is_dir()
    pd.testing.assert_frame_equal(dataset.load(), FRAME)


def test_an_output_that_cannot_hold_a_collection_fails_the_task(tmp_path: Path) -> None:
    with PipelineManager() as pm:
        result = pm.execute_pipeline(frames_pipeline(str(tmp_path / "made.pkl"), name="bad_out"))
    assert result.states == {"make": "failed", "total": "skipped"}
    assert "pickle" in str(result.error)


def test_a_failed_write_of_the_output_fails_the_task_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "broken" / "made.parquet"
    p = Pipeline("broken_write")

    def explode(part: pd.DataFrame) -> pd.DataFrame:
        raise OSError("disk full")

    @p.task("make", save_to=str(out))
    def make() -> Any:
        return dd.from_pandas(FRAME, npartitions=2).map_partitions(explode, meta=FRAME.iloc[:0])

    with PipelineManager() as pm:
        result = pm.execute_pipeline(p)
    assert result.states == {"make": "failed"}
    assert "disk full" in str(result.error)
    assert not out.exists() and not list(out.parent.glob(".tmp-*"))


def test_on_worker_processes_the_task_returns_before_its_output_is_written(
    tmp_path: Path,
) -> None:
    """The partitions wait for an event the test sets only once the scheduler holds the
    task's result: had the task computed its write itself (a nested compute), it could not
    finish before its partitions, which would time out waiting (``came`` False)."""
    out = str(tmp_path / "cluster" / "made.parquet")
    event = f"go-{uuid.uuid4().hex}"
    with dask_processes(workers=1) as (address, _):
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            seen: list[float] = []

            def release_when_made() -> None:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    made = client.run_on_scheduler(_made_in_memory)
                    if made:
                        seen.append(time.monotonic())
                        break
                    time.sleep(0.05)
                Event(event, client=client).set()

            watcher = threading.Thread(target=release_when_made, daemon=True)
            watcher.start()
            with PipelineManager(client=client) as pm:
                result = pm.execute_pipeline(frames_pipeline(out, event, name="cluster_frames"))
            watcher.join(timeout=40)
    assert result.states == {"make": "succeeded", "total": "succeeded"}, result.error
    assert seen, "the task 'make' never finished before its output was written"
    written = Dataset(out).load()
    assert written["came"].all()  # every partition was written after the task returned
    pd.testing.assert_frame_equal(written.drop(columns="came"), FRAME)


def _made_in_memory(dask_scheduler: Any) -> bool:
    return any(
        type(key) is tuple and key[0] == "make" and ts.state == "memory"
        for key, ts in dask_scheduler.tasks.items()
    )


@pytest.mark.parametrize("fmt", ["zarr", "npy"])
def test_an_array_saved_to_its_output(tmp_path: Path, fmt: str) -> None:
    import dask.array as da

    out = str(tmp_path / f"grid.{fmt}")
    p = Pipeline(f"array_out_{fmt}")
    p.task("grid", save_to=out)(lambda: da.arange(100).reshape(10, 10).rechunk(5))
    with PipelineManager() as pm:
        result = pm.execute_pipeline(p)
    assert result.states == {"grid": "succeeded"}, result.error
    np.testing.assert_array_equal(Dataset(out).load(), np.arange(100).reshape(10, 10))


@pytest.mark.parametrize("where", ["threads", "processes"])
def test_a_cached_collection_output_is_read_back_from_its_files(tmp_path: Path, where: str) -> None:
    """Its cache entry notes where the workers wrote it, once they did: the next run is
    cached from the parquet directory, lazily."""
    out = str(tmp_path / "cached" / "made.parquet")
    calls = tmp_path / "calls"
    p = Pipeline(f"cached_collection_{where}")

    @p.task("make", depends_on=[], save_to=out)
    def make(*, rows: int = 400) -> Any:
        with open(calls, "a") as file:
            file.write("x")
        return dd.from_pandas(FRAME.iloc[:rows], npartitions=4)

    config = {"store": {"url": str(tmp_path / "store")}, "caching": {"cache_results": True}}
    with contextlib.ExitStack() as stack:
        if where == "processes":
            address, _ = stack.enter_context(dask_processes(workers=1))
            config["scheduler_address"] = address
        pm = stack.enter_context(PipelineManager(config))
        first = pm.execute_pipeline(p)
        second = pm.execute_pipeline(p)
    assert first.states == {"make": "succeeded"}, first.error
    assert second.states == {"make": "cached"} and calls.read_text() == "x"
    assert second.tasks["make"].source.startswith("dataset:")
    pd.testing.assert_frame_equal(second.final_result, FRAME)  # computed from the files
    pd.testing.assert_frame_equal(Dataset(out).load(), FRAME)


@WHERE
def test_a_lazy_dataset_source_hands_tasks_a_collection_the_workers_read(
    tmp_path: Path, where: str
) -> None:
    """``pipeline.dataset(..., lazy=True)``: tasks get a dask DataFrame of the parquet files
    (never loaded whole by a task), the final result is computed, and a changed file misses."""
    trips = tmp_path / "trips"
    trips.mkdir()
    for i in range(3):
        FRAME.iloc[i * 100 : (i + 1) * 100].to_parquet(trips / f"part-{i}.parquet")
    p = Pipeline(f"lazy_source_{where}")
    p.dataset("trips", str(trips / "*.parquet"), lazy=True)

    @p.task("kinds", depends_on=["trips"])
    def kinds(frame: Any) -> Any:
        assert isinstance(frame, dd.DataFrame) and frame.npartitions >= 3  # one a file
        return frame[frame["value"] >= 10]

    @p.task("total", depends_on=["kinds"])
    def total(frame: Any) -> Any:
        return frame["value"].sum()

    config = {"store": {"url": str(tmp_path / "store")}, "caching": {"cache_results": True}}
    with manager_on(where, config) as pm:
        first = pm.execute_pipeline(p)
        assert first.states == {"trips": "succeeded", "kinds": "succeeded", "total": "succeeded"}
        assert first.final_result == FRAME["value"].iloc[:300][FRAME["value"] >= 10].sum()
        FRAME.iloc[300:].to_parquet(trips / "part-3.parquet")  # a new file: everything misses
        second = pm.execute_pipeline(p)
    assert second.final_result == FRAME["value"][FRAME["value"] >= 10].sum()
    with pytest.raises(Exception, match="give format, lazy and load arguments to the Dataset"):
        p.dataset("again", Dataset(str(trips / "*.parquet")), lazy=True)


def test_two_tasks_saving_one_version_the_second_fails_and_the_first_stays(
    tmp_path: Path,
) -> None:
    url = str(tmp_path / "same" / "made.parquet")
    p = Pipeline("same_version")
    p.task("a", save_to=url, versioned=True)(lambda: dd.from_pandas(FRAME, npartitions=2))
    p.task("b", depends_on=["a"], save_to=url, versioned=True)(lambda a: a.head(3, compute=False))
    with PipelineManager() as pm:
        result = pm.execute_pipeline(p)
    assert result.states["a"] == "succeeded" and result.states["b"] == "failed"
    assert "never overwritten" in str(result.error)
    pd.testing.assert_frame_equal(Dataset(url, versioned=True).load(), FRAME)  # a's, whole
    assert not list((tmp_path / "same").rglob(".tmp-*"))


def test_a_commit_with_nothing_written_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "kept.parquet"
    dataset = Dataset(str(out))
    dataset.save(dd.from_pandas(FRAME, npartitions=2))
    _, save = dataset.save_lazily(dd.from_pandas(FRAME.head(5), npartitions=1))
    save.abandon()  # as if the workers never wrote it
    with pytest.raises(Exception, match="nothing was written"):
        save.commit()
    pd.testing.assert_frame_equal(dataset.load(), FRAME)
    assert "lazy" not in vars(save) and len(pickle.dumps(save)) < 2_000  # it holds no data


def test_a_cancelled_run_leaves_no_temporary_output(tmp_path: Path) -> None:
    out = tmp_path / "cancelled" / "made.parquet"
    started = tmp_path / "slow-started"
    p = Pipeline("cancelled_output")
    p.task("make", save_to=str(out))(lambda: dd.from_pandas(FRAME, npartitions=2))

    @p.task("slow", depends_on=["make"])
    def slow(frame: Any) -> int:
        started.touch()
        time.sleep(3)
        return 1

    p.task("after", depends_on=["slow"])(lambda n: n)  # never starts: the run stops there
    with PipelineManager() as pm:
        handle = pm.submit(p)
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        handle.cancel()
        with contextlib.suppress(Exception):
            handle.result(timeout=30)
        assert handle.status() == "cancelled"
    assert not out.exists()
    assert not list(out.parent.glob(".tmp-*")) if out.parent.exists() else True

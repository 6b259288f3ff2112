"""Dask collections as datasets: written by a LocalCluster's worker processes, part by part,
and loaded back equal (eagerly, or lazily as a collection again)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster, get_task_stream

from xlibrary.pipeline.datasets import Dataset


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _ran_on_workers(client: Client, tasks: list[dict[str, object]], name: str) -> set[str]:
    """The workers that ran tasks whose key holds ``name``."""
    workers = set(client.scheduler_info()["workers"])
    ran = {str(t["worker"]) for t in tasks if name in str(t["key"])}
    assert ran, f"no {name} task ran: {sorted({str(t['key']) for t in tasks})}"
    assert ran <= workers
    return ran


def test_a_dask_dataframe_is_written_as_parquet_by_the_workers(
    client: Client, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"id": range(1000), "value": np.arange(1000) * 0.5})
    collection = dd.from_pandas(frame, npartitions=4)
    dataset = Dataset(str(tmp_path / "data" / "model_input.parquet"), versioned=True)
    with get_task_stream(client) as stream:
        version = dataset.save(collection)
    _ran_on_workers(client, stream.data, "toparquetdata")
    assert version is not None
    written = tmp_path / "data" / "model_input.parquet" / version / "model_input.parquet"
    assert sorted(p.name for p in written.iterdir()) == [f"part.{i}.parquet" for i in range(4)]
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".")]  # no temp dir

    pd.testing.assert_frame_equal(dataset.load(), frame)
    lazy = Dataset(dataset.url, versioned=True, lazy=True).load()
    assert isinstance(lazy, dd.DataFrame) and lazy.npartitions == 4
    pd.testing.assert_frame_equal(lazy.compute(), frame)


def test_a_dask_array_is_written_as_zarr_and_as_npy_chunks_by_the_workers(
    client: Client, tmp_path: Path
) -> None:
    array = da.arange(24, chunks=5).reshape(4, 6).rechunk((2, 3))
    expected = np.arange(24).reshape(4, 6)
    with get_task_stream(client) as stream:
        Dataset(str(tmp_path / "grid.npy")).save(array)
    _ran_on_workers(client, stream.data, "_write_chunk")
    names = sorted(os.listdir(tmp_path / "grid.npy"))
    assert names == ["0.0.npy", "0.1.npy", "1.0.npy", "1.1.npy", "_npy_chunks.json"]
    np.testing.assert_array_equal(Dataset(str(tmp_path / "grid.npy")).load(), expected)
    lazy = Dataset(str(tmp_path / "grid.npy"), lazy=True).load()
    assert lazy.chunks == array.chunks
    np.testing.assert_array_equal(lazy.compute(), expected)

    pytest.importorskip("zarr", reason="zarr is in the datasets extra")
    with get_task_stream(client) as stream:
        Dataset(str(tmp_path / "grid.zarr")).save(array)
    _ran_on_workers(client, stream.data, "store")
    np.testing.assert_array_equal(Dataset(str(tmp_path / "grid.zarr")).load(), expected)
    lazy = Dataset(str(tmp_path / "grid.zarr"), lazy=True).load()
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), expected)

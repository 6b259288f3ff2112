"""Datasets: every format round-trips through fsspec (memory:// and a local directory), globs
load as one table, versioned saves are read by another process, and errors name the dataset,
the URL and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pytest

from xlibrary.pipeline.datasets import (
    Dataset,
    DatasetFormat,
    format_for_path,
    format_for_value,
    register_format,
)
from xlibrary.pipeline.datasets.formats import formats
from xlibrary.pipeline.errors import (
    DatasetError,
    DatasetNotFoundError,
    MissingExtraError,
    PipelineError,
)

ROOT = Path(__file__).resolve().parent.parent


def needs(package: str) -> pytest.MarkDecorator:
    """Skip (shown by -ra) where the datasets extra is missing: pip install -e '.[dev]'."""
    import importlib.util

    missing = importlib.util.find_spec(package) is None
    return pytest.mark.skipif(missing, reason=f"{package} (the datasets extra) is not installed")


FRAME = pd.DataFrame(
    {"id": [1, 2, 3], "name": ["a", "b", "c"], "score": [0.5, 1.5, None]},
)


@pytest.fixture(params=["memory", "local"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh directory URL: on memory:// or a local temp dir."""
    if request.param == "memory":
        name = f"datasets-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)
    else:
        yield str(tmp_path)


def _equal(got: Any, expected: Any, *, by_dask: bool = False) -> None:
    """``by_dask``: read by dask, whose strings are Arrow strings (NA for missing values)."""
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected, check_dtype=not by_dask)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype
    elif isinstance(expected, dict) and all(isinstance(v, pd.DataFrame) for v in expected.values()):
        assert list(got) == list(expected)
        for name in expected:
            pd.testing.assert_frame_equal(got[name], expected[name])
    else:
        assert got == expected


CASES: list[Any] = [
    ("companies.csv", FRAME),
    ("companies.csv.gz", FRAME),
    ("companies.parquet", FRAME),
    ("companies.json", FRAME),
    ("companies.jsonl", FRAME),
    pytest.param("companies.xlsx", FRAME, marks=needs("openpyxl")),
    pytest.param(
        "companies.xlsx", {"first": FRAME, "second": FRAME.head(1)}, marks=needs("openpyxl")
    ),  # sheets
    ("companies.feather", FRAME),
    ("model.pkl", {"weights": [1.0, 2.0], "scale": lambda x: 2 * x}),
    ("notes.txt", "héllo\nworld\n"),
    ("blob.bin", b"\x00\x01\xff"),
    ("matrix.npy", np.arange(12, dtype="float32").reshape(3, 4)),
    pytest.param("matrix.zarr", np.arange(12, dtype="int16").reshape(3, 4), marks=needs("zarr")),
]


def _case_id(i: int, case: Any) -> str:
    return f"{(case.values if hasattr(case, 'values') else case)[0]}-{i}"


@pytest.mark.parametrize(
    ("name", "value"), CASES, ids=[_case_id(i, c) for i, c in enumerate(CASES)]
)
def test_every_format_round_trips(base: str, name: str, value: Any) -> None:
    sheets = {"sheet_name": None} if isinstance(value, dict) and name.endswith(".xlsx") else {}
    dataset = Dataset(f"{base}/data/{name}", load_args=sheets)
    assert not dataset.exists()
    assert dataset.save(value) is None
    assert dataset.exists()
    got = dataset.load()
    if callable(getattr(value, "get", None)) and callable(value.get("scale")):
        assert got["weights"] == value["weights"] and got["scale"](3) == 6
    else:
        _equal(got, value)


def test_the_format_comes_from_the_extension_or_is_given() -> None:
    assert Dataset("memory://x/a.CSV").format == "csv"
    assert Dataset("memory://x/a.csv.gz").format == "csv"
    assert Dataset("memory://x/events-*.parquet").format == "parquet"
    assert Dataset("memory://x/table.dat", format="csv").format == "csv"
    assert format_for_path("a/b.ndjson") == "jsonl"
    assert format_for_path("a/b.unknown") is None


def test_a_local_relative_path_is_fixed_when_declared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dataset = Dataset("data/01_raw/companies.csv")
    assert dataset.url == str(tmp_path / "data/01_raw/companies.csv")
    dataset.save(FRAME)
    monkeypatch.chdir("/")
    _equal(dataset.load(), FRAME)


def test_a_compressed_csv_is_compressed_on_disk(tmp_path: Path) -> None:
    Dataset(str(tmp_path / "c.csv.gz")).save(FRAME)
    assert (tmp_path / "c.csv.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip's magic


def test_load_and_save_args_go_to_pandas_over_the_defaults(tmp_path: Path) -> None:
    dataset = Dataset(str(tmp_path / "semi.csv"), load_args={"sep": ";"}, save_args={"sep": ";"})
    dataset.save(FRAME)
    assert (tmp_path / "semi.csv").read_text().splitlines()[0] == "id;name;score"
    _equal(dataset.load(), FRAME)
    indexed = Dataset(str(tmp_path / "i.csv"), save_args={"index": True})
    indexed.save(FRAME)
    assert (tmp_path / "i.csv").read_text().startswith(",id,name")


def test_a_glob_of_parquet_files_loads_as_one_frame(base: str) -> None:
    for i in range(3):
        part = FRAME.assign(part=i)
        Dataset(f"{base}/events/day-{i}.parquet").save(part)
    Dataset(f"{base}/events/other.csv").save(FRAME)  # not matched
    expected = pd.concat([FRAME.assign(part=i) for i in range(3)], ignore_index=True)
    _equal(Dataset(f"{base}/events/day-*.parquet").load(), expected)

    lazy = Dataset(f"{base}/events/day-*.parquet", lazy=True).load()
    import dask.dataframe as dd

    assert isinstance(lazy, dd.DataFrame)
    assert lazy.npartitions == 3
    _equal(lazy.compute(scheduler="threads").reset_index(drop=True), expected, by_dask=True)


@pytest.mark.parametrize("name", ["t.csv", "t.json", "t.jsonl", "t.parquet"])
def test_tables_load_lazily_as_dask_frames(base: str, name: str) -> None:
    Dataset(f"{base}/{name}").save(FRAME)
    lazy = Dataset(f"{base}/{name}", lazy=True).load()
    import dask.dataframe as dd

    assert isinstance(lazy, dd.DataFrame)
    _equal(lazy.compute(scheduler="threads").reset_index(drop=True), FRAME, by_dask=True)


@pytest.mark.parametrize("name", ["a.npy", pytest.param("a.zarr", marks=needs("zarr"))])
def test_arrays_load_lazily_as_dask_arrays(base: str, name: str) -> None:
    import dask.array as da

    value = np.arange(20.0).reshape(4, 5)
    Dataset(f"{base}/{name}").save(value)
    lazy = Dataset(f"{base}/{name}", lazy=True).load()
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), value)


def test_lazy_needs_a_format_dask_reads() -> None:
    with pytest.raises(DatasetError, match=r"cannot load lazily.*lazy=True works with .*parquet"):
        Dataset("memory://x/a.xlsx", lazy=True)


def test_a_versioned_save_twice_is_read_newest_first_by_another_process(tmp_path: Path) -> None:
    url = str(tmp_path / "data" / "model_input.parquet")
    dataset = Dataset(url, versioned=True)
    with pytest.raises(DatasetNotFoundError, match="no version has been saved yet"):
        dataset.load()
    first = dataset.save(FRAME.head(1))
    second = dataset.save(FRAME)
    assert first is not None and second is not None and first < second
    # Kedro's layout: <filepath>/<version>/<file name>
    assert (tmp_path / "data" / "model_input.parquet" / second / "model_input.parquet").is_file()
    assert dataset.versions() == [first, second]

    code = (
        "import sys; from xlibrary.pipeline.datasets import Dataset; "
        "frame = Dataset(sys.argv[1], versioned=True).load(); print(len(frame))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(FRAME))

    _equal(dataset.load(version=first), FRAME.head(1))
    with pytest.raises(DatasetError, match="never overwritten"):
        dataset.save(FRAME, version=first)
    with pytest.raises(DatasetError, match="cannot name a version"):
        dataset.load(version="../escape")


def test_a_versioned_dataset_takes_the_version_it_is_given(base: str) -> None:
    dataset = Dataset(f"{base}/m.pkl", versioned=True)
    assert dataset.save({"v": 1}, version="20260101T000000.000000-00000000") is not None
    dataset.save({"v": 2}, version="20260102T000000.000000-00000000")
    assert dataset.load() == {"v": 2}
    assert dataset.fingerprint().files[0].path.endswith("20260102T000000.000000-00000000/m.pkl")


def test_an_unfinished_version_is_not_the_latest(tmp_path: Path) -> None:
    dataset = Dataset(str(tmp_path / "t.csv"), versioned=True)
    dataset.save(FRAME)
    (tmp_path / "t.csv" / "99999999T999999.999999-ffffffff").mkdir()  # a save in progress
    _equal(dataset.load(), FRAME)


def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    import threading

    dataset = Dataset(str(tmp_path / "state.pkl"))
    dataset.save({"ok": True})
    with pytest.raises(DatasetError, match=r"dataset .*state\.pkl.*cannot save it as pickle"):
        dataset.save({"ok": False, "lock": threading.Lock()})  # unpicklable, mid-write
    assert dataset.load() == {"ok": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pkl"]


def test_a_saved_file_has_the_usual_permissions(tmp_path: Path) -> None:
    Dataset(str(tmp_path / "p.csv")).save(FRAME)
    (tmp_path / "q.txt").write_text("x")
    assert (tmp_path / "p.csv").stat().st_mode == (tmp_path / "q.txt").stat().st_mode


def test_a_missing_file_names_the_dataset_and_the_url(base: str) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        Dataset(f"{base}/nothing.csv", name="companies").load()
    assert "dataset 'companies'" in str(info.value)
    assert "nothing.csv" in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, PipelineError)
    with pytest.raises(DatasetNotFoundError, match="no file matches"):
        Dataset(f"{base}/none-*.csv").load()
    with pytest.raises(DatasetNotFoundError, match="nothing is at"):
        Dataset(f"{base}/nothing.csv").fingerprint()


def test_an_unknown_format_names_the_known_ones() -> None:
    with pytest.raises(
        DatasetError,
        match=r"dataset 'raw' .*: unknown dataset file type 'csvv'; did you mean 'csv'\?",
    ):
        Dataset("memory://x/a.csv", format="csvv", name="raw")
    with pytest.raises(DatasetError, match=r"cannot tell its format.*'a\.dat'.*csv.*parquet"):
        Dataset("memory://x/a.dat")


def test_a_missing_optional_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    missing = {"openpyxl", "zarr"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    with pytest.raises(
        MissingExtraError, match=r"'openpyxl'.*pip install \"xlibrary\[datasets\]\""
    ):
        Dataset("memory://x/a.xlsx", name="shuttles").save(FRAME)
    with pytest.raises(MissingExtraError, match=r"zarr format of dataset.*xlibrary\[datasets\]"):
        Dataset("memory://x/a.zarr").load()
    # without zarr the engine stores a dask array as npy chunks
    import dask.array as da

    assert format_for_value(da.ones(4, chunks=2)) == "npy"


def test_values_a_format_cannot_hold_are_refused_before_writing(base: str) -> None:
    with pytest.raises(DatasetError, match=r"csv format saves a pandas DataFrame, not dict"):
        Dataset(f"{base}/a.csv").save({"a": 1})
    with pytest.raises(DatasetError, match="txt format saves a str"):
        Dataset(f"{base}/a.txt").save(b"bytes")
    with pytest.raises(DatasetError, match="cannot save to a glob"):
        Dataset(f"{base}/*.csv").save(FRAME)
    import dask.dataframe as dd

    with pytest.raises(DatasetError, match=r"dask DataFrame is saved as a partitioned parquet"):
        Dataset(f"{base}/a.csv").save(dd.from_pandas(FRAME, npartitions=1))
    with pytest.raises(DatasetError, match="never pickled"):
        Dataset(f"{base}/a.pkl").save(dd.from_pandas(FRAME, npartitions=1))
    assert not Dataset(f"{base}/a.csv").exists()


def test_a_corrupt_file_is_an_error_naming_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=r"dataset 'raw' .*cannot load it as parquet"):
        Dataset(str(tmp_path / "bad.parquet"), name="raw").load()


def test_the_engine_picks_a_format_for_a_value() -> None:
    import dask.array as da
    import dask.dataframe as dd

    assert format_for_value(FRAME) == "parquet"
    assert format_for_value(dd.from_pandas(FRAME, npartitions=1)) == "parquet"
    assert format_for_value(np.ones(3)) == "npy"
    assert format_for_value(np.array([object()])) == "pickle"
    import importlib.util

    zarr = importlib.util.find_spec("zarr") is not None
    assert format_for_value(da.ones(4, chunks=2)) == ("zarr" if zarr else "npy")
    assert format_for_value({"a": 1}) == "pickle"


def test_a_dataset_travels_by_value_and_hides_its_secrets() -> None:
    import pickle

    dataset = Dataset(
        "s3://bucket/x.csv?token=abc", storage_options={"secret": "hunter2"}, name="x"
    )
    assert pickle.loads(pickle.dumps(dataset)) == dataset
    shown = repr(dataset)
    assert "hunter2" not in shown and "abc" not in shown and "storage_options=<secret>" in shown


def test_a_registered_format_is_picked_by_its_extension(base: str) -> None:
    class TsvFormat(DatasetFormat):
        name = "tsv-test"
        extensions = (".tsv",)

        def read(self, file: Any, **load_args: Any) -> Any:
            return pd.read_csv(file, sep="\t", **load_args)

        def write(self, value: Any, file: Any, **save_args: Any) -> None:
            value.to_csv(file, sep="\t", index=False, **save_args)

    register_format("tsv-test", TsvFormat)
    try:
        dataset = Dataset(f"{base}/t.tsv")
        assert dataset.format == "tsv-test"
        dataset.save(FRAME)
        _equal(dataset.load(), FRAME)
        with pytest.raises(DatasetError, match="belongs to the 'tsv-test' format"):
            register_format("other", TsvFormat, extensions=[".tsv"])
    finally:
        import importlib

        module = importlib.import_module("xlibrary.pipeline.datasets.formats")
        module._extensions.pop(".tsv", None)
        formats._entries.pop("tsv-test", None)


def test_a_directory_dataset_replaces_the_old_one_whole(tmp_path: Path) -> None:
    import dask.dataframe as dd

    url = str(tmp_path / "table.parquet")
    Dataset(url).save(dd.from_pandas(FRAME, npartitions=3))
    assert len(list((tmp_path / "table.parquet").iterdir())) == 3
    Dataset(url).save(dd.from_pandas(FRAME.head(2), npartitions=1))
    _equal(Dataset(url).load().reset_index(drop=True), FRAME.head(2), by_dask=True)
    Dataset(url).save(FRAME)  # a single file in place of the directory
    assert (tmp_path / "table.parquet").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def test_a_directory_of_csv_parts_loads_as_one_frame_eagerly_and_lazily(tmp_path: Path) -> None:
    import dask.dataframe as dd

    parts = tmp_path / "parts.csv"
    parts.mkdir()
    for i in range(3):
        FRAME.assign(part=i).to_csv(parts / f"{i}.part", index=False)
    (parts / "_SUCCESS").write_text("")
    expected = pd.concat([FRAME.assign(part=i) for i in range(3)], ignore_index=True)
    _equal(Dataset(str(parts)).load(), expected)
    lazy = Dataset(str(parts), lazy=True).load()
    assert isinstance(lazy, dd.DataFrame) and lazy.npartitions == 3
    _equal(lazy.compute(scheduler="threads").reset_index(drop=True), expected, by_dask=True)


def test_a_dataset_has_a_token_for_cache_keys_and_a_hash() -> None:
    one = Dataset("memory://t/a.csv", load_args={"sep": ";"})
    assert one.token == Dataset("memory://t/a.csv", load_args={"sep": ";"}).token
    assert one.token != Dataset("memory://t/a.csv", load_args={"sep": ","}).token
    assert one.token != Dataset("memory://t/b.csv", load_args={"sep": ";"}).token
    rotated = Dataset("memory://t/a.csv", load_args={"sep": ";"}, storage_options={"key": "k2"})
    assert rotated.token == one.token  # credentials do not change what the data is
    assert len({one, Dataset("memory://t/a.csv", load_args={"sep": ";"})}) == 1

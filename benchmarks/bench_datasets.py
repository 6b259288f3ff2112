"""Datasets, measured against their plain counterparts in one process.

    nox -s bench          # or: python benchmarks/bench_datasets.py [--files N] [--rows N]

1. Fingerprint cost per file: ``Dataset(glob).fingerprint()`` over N small files in a local
   directory, against a bare ``os.stat`` of each file (the yardstick: a fingerprint cannot do
   less than stat each file). Target: under 1 ms per file.
2. Reading a 1,000,000-row parquet file through ``Dataset.load`` against ``pd.read_parquet``
   on the same file in the same run; the ratio (target: no slower, ~1.0).
3. What fingerprints add to a run: a cached run of a pipeline of N dataset source tasks (one
   small local file each) and one task using them all, against a cached run of that task
   alone (explicit key); the difference per file (target: under 1 ms per file per run).
4. A cached task read back from its ``save_to`` parquet output (1,000,000 rows): the whole
   cached run against ``pd.read_parquet`` of the same file (target: no slower, ~1.0).
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from bench_store import median_time  # one timing helper for the benchmarks

from xlibrary.pipeline import Pipeline, PipelineManager
from xlibrary.pipeline.datasets import Dataset


def fingerprints(files: int, repeat: int, root: Path) -> None:
    directory = root / "many"
    directory.mkdir()
    for i in range(files):
        (directory / f"part-{i:05d}.csv").write_text(f"a,b\n{i},{i * 2}\n")
    pattern = str(directory / "part-*.csv")
    dataset = Dataset(pattern)

    def bare_stat() -> None:
        for path in glob.glob(pattern):
            os.stat(path)

    assert len(dataset.fingerprint().files) == files
    ours = median_time(dataset.fingerprint, repeat)
    yardstick = median_time(bare_stat, repeat)
    print(f"fingerprint of a glob of {files} local files (median of {repeat}):")
    print(f"  Dataset.fingerprint   {ours * 1e3:8.2f} ms   {ours / files * 1e6:7.2f} µs/file")
    print(
        f"  glob + os.stat        {yardstick * 1e3:8.2f} ms   "
        f"{yardstick / files * 1e6:7.2f} µs/file"
    )
    print(f"  ratio                 {ours / yardstick:8.2f}x   (target: < 1 ms per file)")

    one = Dataset(str(directory / "part-00000.csv"))
    single = median_time(one.fingerprint, repeat * 20)
    print(f"  one file              {single * 1e6:8.1f} µs")


def parquet_read(rows: int, repeat: int, root: Path) -> None:
    frame = _frame(rows)
    dataset = Dataset(str(root / "model_input.parquet"))
    dataset.save(frame)
    path = str(root / "model_input.parquet")
    pd.testing.assert_frame_equal(dataset.load(), pd.read_parquet(path))

    plain = ours = 0.0
    for _ in range(2):  # interleaved, so that neither gets the warmer cache only
        plain = median_time(lambda: pd.read_parquet(path), repeat)
        ours = median_time(dataset.load, repeat)
    size = os.path.getsize(path) / 1e6
    print(f"\nreading a {rows:,}-row parquet file ({size:.1f} MB, median of {repeat}):")
    print(f"  pd.read_parquet       {plain * 1e3:8.1f} ms")
    print(f"  Dataset.load          {ours * 1e3:8.1f} ms")
    print(f"  ratio                 {ours / plain:8.2f}x   (target: no slower, ~1.0)")


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": np.arange(rows),
            "value": rng.normal(size=rows),
            "group": rng.integers(0, 100, size=rows),
            "label": pd.Series(rng.integers(0, 1000, size=rows)).astype(str),
        }
    )


def fingerprints_in_runs(files: int, repeat: int, root: Path) -> None:
    directory = root / "sources"
    directory.mkdir()
    with_data, alone = Pipeline("with_datasets"), Pipeline("alone")
    for i in range(files):
        path = directory / f"source-{i:04d}.csv"
        path.write_text(f"a\n{i}\n")
        with_data.dataset(f"source_{i}", str(path))
    names = [f"source_{i}" for i in range(files)]
    with_data.task("total", depends_on=names)(lambda *frames: sum(len(f) for f in frames))
    alone.task("total", cache=True)(lambda *, n=files: n)  # keyed by its parameter
    config = {"store": {"url": str(root / "store")}, "caching": {"cache_results": True}}
    with PipelineManager(config) as pm:
        for pipeline in (with_data, alone):  # the first runs fill the cache
            pm.execute_pipeline(pipeline)
            assert pm.execute_pipeline(pipeline).states["total"] == "cached"
        ours = base = 0.0
        for _ in range(2):  # interleaved
            ours = median_time(lambda: pm.execute_pipeline(with_data), repeat)
            base = median_time(lambda: pm.execute_pipeline(alone), repeat)
    added = (ours - base) / files
    print(f"\na cached run of {files} dataset sources and a task using them (median of {repeat}):")
    print(f"  the task alone, cached        {base * 1e3:8.2f} ms")
    print(f"  with {files} datasets, cached   {ours * 1e3:8.2f} ms")
    print(f"  added per file                {added * 1e6:8.1f} µs   (target: < 1 ms per file)")


def cached_output_read(rows: int, repeat: int, root: Path) -> None:
    path = str(root / "output" / "model_input_table.parquet")
    frame = _frame(rows)
    p = Pipeline("cached_output")
    p.task("table", save_to=path, cache=True)(lambda *, rows=rows: frame)
    config = {"store": {"url": str(root / "store2")}, "caching": {"cache_results": True}}
    with PipelineManager(config) as pm:
        pm.execute_pipeline(p)
        again = pm.execute_pipeline(p)
        assert again.states["table"] == "cached", again.states
        assert again.tasks["table"].source.startswith("dataset:")
        pd.testing.assert_frame_equal(again.final_result, frame)
        plain = ours = 0.0
        for _ in range(2):  # interleaved
            plain = median_time(lambda: pd.read_parquet(path), repeat)
            ours = median_time(lambda: pm.execute_pipeline(p), repeat)
    print(f"\na cached task read from its save_to parquet ({rows:,} rows, median of {repeat}):")
    print(f"  pd.read_parquet               {plain * 1e3:8.1f} ms")
    print(f"  the cached run                {ours * 1e3:8.1f} ms")
    print(f"  ratio                         {ours / plain:8.2f}x   (target: no slower, ~1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sources", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fingerprints(args.files, args.repeat, Path(tmp))
        parquet_read(args.rows, args.repeat, Path(tmp))
        fingerprints_in_runs(args.sources, args.repeat, Path(tmp))
        cached_output_read(args.rows, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()

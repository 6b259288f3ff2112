"""Datasets, measured against their plain counterparts in one process.

    nox -s bench          # or: python benchmarks/bench_datasets.py [--files N] [--rows N]

1. Fingerprint cost per file: ``Dataset(glob).fingerprint()`` over N small files in a local
   directory, against a bare ``os.stat`` of each file (the yardstick: a fingerprint cannot do
   less than stat each file). Target: under 1 ms per file.
2. Reading a 1,000,000-row parquet file through ``Dataset.load`` against ``pd.read_parquet``
   on the same file in the same run; the ratio (target: no slower, ~1.0).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xlibrary.pipeline.datasets import Dataset


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


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
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            "value": rng.normal(size=rows),
            "group": rng.integers(0, 100, size=rows),
            "label": pd.Series(rng.integers(0, 1000, size=rows)).astype(str),
        }
    )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fingerprints(args.files, args.repeat, Path(tmp))
        parquet_read(args.rows, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()

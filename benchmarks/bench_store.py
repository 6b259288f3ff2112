"""The store and the cache, measured against their plain counterparts in one process.

    nox -s bench          # or: python benchmarks/bench_store.py [--rows N] [--tasks N]

1. Cache-hit overhead: a pipeline of N independent trivial tasks, each cached, run cold
   (every task runs and writes its entry) and warm (every task is a hit, loaded from the store
   in a local directory), against the same pipeline uncached and raw Dask on the same pool.
2. A 1,000,000-row DataFrame saved to and loaded from the store (an Arrow IPC entry with a
   checksum, written atomically) against plain ``DataFrame.to_parquet`` / ``read_parquet``
   on the same filesystem: the ratio (target <= 1.5), and the sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.threaded
import numpy as np
import pandas as pd
from dask.task_spec import Task as DaskTask

from xlibrary.pipeline import Pipeline, PipelineManager, Task
from xlibrary.pipeline.store import Cache, FsCacheBackend, FsStore


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def trivial(i: int) -> int:
    return i


def cache_hits(tasks: int, repeat: int, root: Path) -> None:
    def build(cached: bool, pm: PipelineManager) -> Pipeline:
        p = Pipeline(f"hits_{tasks}_{cached}")
        for i in range(tasks):

            def one(i: int = i) -> int:
                return trivial(i)

            p.add(Task(f"t{i}", pm.cache_result(key=f"t{i}")(one) if cached else one))
        return p

    with PipelineManager({"store": {"url": str(root / "hits")}}) as pm:
        plain, cached = build(False, pm), build(True, pm)
        pool = pm._backends.get("threads").pool

        def raw() -> Any:
            graph = {(f"t{i}", "raw"): DaskTask((f"t{i}", "raw"), trivial, i) for i in range(tasks)}
            return dask.threaded.get(graph, list(graph), pool=pool)

        def cold() -> None:
            pm.clear_cache(cached)
            pm.execute_pipeline(cached)

        raw_s = median_time(raw, repeat)
        plain_s = median_time(lambda: pm.execute_pipeline(plain), repeat)
        cold_s = median_time(cold, repeat)
        pm.execute_pipeline(cached)
        assert set(pm.execute_pipeline(cached).states.values()) == {"cached"}
        warm_s = median_time(lambda: pm.execute_pipeline(cached), repeat)
    per = 1e6 / tasks
    print(f"\ncache, {tasks} independent trivial tasks (store: a local directory)")
    print(f"  {'raw dask':<34}{raw_s:8.4f} s  {raw_s * per:8.1f} us/task")
    print(f"  {'engine, uncached':<34}{plain_s:8.4f} s  {plain_s * per:8.1f} us/task")
    print(f"  {'engine, cold cache (run + write)':<34}{cold_s:8.4f} s  {cold_s * per:8.1f} us/task")
    print(f"  {'engine, warm cache (all hits)':<34}{warm_s:8.4f} s  {warm_s * per:8.1f} us/task")
    print(f"  cache-hit overhead: {(warm_s - plain_s) * per:+.1f} us/task against an uncached run")


def dataframe(rows: int, repeat: int, root: Path) -> float:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            "value": rng.random(rows),
            "category": pd.Categorical(rng.choice(["a", "b", "c"], rows)),
            "when": pd.date_range("2024-01-01", periods=rows, freq="s"),
            "label": pd.array(rng.choice(["red", "green", "blue"], rows), dtype="string"),
        }
    )
    parquet = root / "frame.parquet"
    cache = Cache(FsCacheBackend(FsStore(str(root / "frames"))))

    parquet_save = median_time(lambda: frame.to_parquet(parquet), repeat)
    parquet_load = median_time(lambda: pd.read_parquet(parquet), repeat)
    store_save = median_time(lambda: cache.save("frame", frame), repeat)
    store_load = median_time(lambda: cache.load("frame"), repeat)
    loaded = cache.load("frame")
    assert loaded is not None
    pd.testing.assert_frame_equal(loaded[1], frame)
    (entry,) = list((root / "frames").rglob("*.entry"))

    ratio = (store_save + store_load) / (parquet_save + parquet_load)
    print(f"\n{rows:,}-row DataFrame (5 columns), local filesystem")
    print(f"  {'':<26}{'save s':>9}{'load s':>9}{'size MB':>10}")
    print(
        f"  {'to_parquet/read_parquet':<26}{parquet_save:9.4f}{parquet_load:9.4f}"
        f"{parquet.stat().st_size / 1e6:10.1f}"
    )
    print(
        f"  {'store (' + loaded[0].format + ' entry)':<26}{store_save:9.4f}{store_load:9.4f}"
        f"{entry.stat().st_size / 1e6:10.1f}"
    )
    print(f"  ratio store / parquet, save + load: {ratio:.2f}   (target <= 1.5)")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache_hits(args.tasks, args.repeat, Path(tmp))
        dataframe(args.rows, args.repeat, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

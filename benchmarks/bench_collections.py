"""Dask collections through the engine against hand-written Dask and Hamilton's Dask adapter.

    python benchmarks/bench_collections.py [--rows N] [--rounds R] [--hamilton PATH]

The work (issue 14): 5,000,000 rows in 16 partitions -> keep the rows with v > 0.5 -> sum of v
per k (1,000 groups) -> a pandas Series, on a 2-worker LocalCluster of one thread each. Two
sources: ``read_parquet`` of 16 parquet files, and ``from_pandas`` of a frame built in the
first step (by the client in hand-written Dask and in Hamilton, whose functions run there; in
a task, so on a worker, in the engine).

* dask: hand-written, ``client.compute(...).result()``.
* hamilton: ``h_dask.DaskGraphAdapter(use_delayed=False, compute_at_end=True)``, the functions
  returning the collections (Hamilton's advice for dask dataframes); only when Hamilton can be
  imported: ``pip install --target DIR apache-hamilton`` and ``--hamilton DIR`` (it is no
  dependency of this project).
* engine: a pipeline of three tasks (load, keep, totals) run with ``pm.execute_pipeline``.

Each measurement runs in a fresh client process connected to the same cluster (one warm-up
run, then one timed run), so that the client's peak memory of one approach does not hide in
another's: the peak is the client process's resident memory while the timed run goes, above
what it had before it. Rounds alternate the approaches. Medians are printed, with the ratio
to hand-written Dask (target: engine <= 1.1x dask, and no slower than Hamilton; client peak
below the data's size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 16
GROUPS = 1000


def make_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"k": rng.integers(0, GROUPS, size=rows), "v": rng.random(rows), "w": rng.random(rows)}
    )


# -- the three approaches, each in its own client process ------------------------------------
def _source(source: str, path: str, rows: int) -> Any:
    import dask.dataframe as dd

    if source == "parquet":
        return dd.read_parquet(path)
    return dd.from_pandas(make_frame(rows), npartitions=PARTITIONS)


def run_dask(client: Any, source: str, path: str, rows: int) -> pd.Series:
    data = _source(source, path, rows)
    kept = data[data.v > 0.5]
    return client.compute(kept.groupby("k").v.sum()).result()


def run_engine(client: Any, source: str, path: str, rows: int) -> pd.Series:
    from xlibrary.pipeline import Pipeline, PipelineManager

    p = Pipeline("bench_collections")
    p.task("load")(lambda: _source(source, path, rows))
    p.task("keep", depends_on=["load"])(lambda data: data[data.v > 0.5])
    p.task("totals", depends_on=["keep"])(lambda kept: kept.groupby("k").v.sum())
    config = {"store": {"url": "memory://bench-collections"}, "caching": {"enabled": False}}
    with PipelineManager(config, client=client) as pm:
        result = pm.execute_pipeline(p)
    if not result.success:
        raise RuntimeError(str(result.error))
    return result.final_result


_HAMILTON_NODES = """
from typing import Any


def load() -> Any:
    return _source(SOURCE, PATH, ROWS)


def keep(load: Any) -> Any:
    return load[load.v > 0.5]


def totals(keep: Any) -> Any:
    return keep.groupby("k").v.sum()
"""


def run_hamilton(client: Any, source: str, path: str, rows: int) -> pd.Series:
    from hamilton import base, driver
    from hamilton.plugins import h_dask

    module = types.ModuleType("bench_hamilton_nodes")
    module.__dict__.update(_source=_source, SOURCE=source, PATH=path, ROWS=rows)
    exec(_HAMILTON_NODES, module.__dict__)  # a module of three functions: the nodes
    sys.modules[module.__name__] = module
    adapter = h_dask.DaskGraphAdapter(
        client, result_builder=base.DictResult(), use_delayed=False, compute_at_end=True
    )
    out = driver.Driver({}, module, adapter=adapter).execute(["totals"])
    return out["totals"]


RUNNERS = {"dask": run_dask, "engine": run_engine, "hamilton": run_hamilton}


class PeakMemory:
    """This process's highest resident memory while the block runs (sampled every 5 ms)."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def one(args: argparse.Namespace) -> None:
    """A client process: warm up, then time one run, and print what it measured as JSON."""
    import warnings

    from distributed import Client

    warnings.simplefilter("ignore")  # "Sending large graph": from_pandas, as expected
    runner = RUNNERS[args.one]
    with Client(args.address, set_as_default=True) as client:
        expected = run_dask(client, args.source, args.path, args.rows)
        runner(client, args.source, args.path, args.rows)  # warm-up
        with PeakMemory() as memory:
            started = time.perf_counter()
            got = runner(client, args.source, args.path, args.rows)
            seconds = time.perf_counter() - started
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index())
    added = memory.peak - memory.before
    print(json.dumps({"seconds": seconds, "peak": memory.peak, "added": added}))


# -- the driver ----------------------------------------------------------------------------
def measure(approach: str, source: str, address: str, path: str, args: argparse.Namespace) -> Any:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), args.hamilton]))}
    command = [
        sys.executable, __file__, "--one", approach, "--source", source, "--address", address,
        "--path", path, "--rows", str(args.rows),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{approach}/{source} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def hamilton_importable(path: str | None) -> bool:
    env = {**os.environ, "PYTHONPATH": path or ""}
    code = "import hamilton.plugins.h_dask"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hamilton", default=None, help="a directory holding apache-hamilton")
    parser.add_argument("--one", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--source", choices=["parquet", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args)
        return

    import dask.dataframe as dd
    from distributed import LocalCluster

    approaches = ["dask", "engine"]
    if hamilton_importable(args.hamilton):
        approaches.insert(1, "hamilton")
    else:
        print("Hamilton not importable (pip install --target DIR apache-hamilton; --hamilton DIR)")
    frame = make_frame(args.rows)
    size = int(frame.memory_usage(index=True).sum())
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
    ):
        path = str(Path(tmp) / "data")
        dd.from_pandas(frame, npartitions=PARTITIONS).to_parquet(path)
        del frame
        found: dict[tuple[str, str], list[Any]] = {}
        for _ in range(args.rounds):
            for source in ("parquet", "pandas"):
                for approach in approaches:
                    got = measure(approach, source, cluster.scheduler_address, path, args)
                    found.setdefault((source, approach), []).append(got)
    print(
        f"\n{args.rows:,} rows ({size / 1e6:.0f} MB in pandas), {PARTITIONS} partitions, "
        f"filter -> groupby -> pandas; 2 workers x 1 thread; median of {args.rounds} fresh "
        "client processes (times exclude start-up)"
    )
    header = f"{'source':<10}{'approach':<10}{'s':>8}{'x dask':>9}"
    print(f"{header}{'client peak MB':>16}{'added MB':>10}")
    for source in ("parquet", "pandas"):
        base = statistics.median(r["seconds"] for r in found[(source, "dask")])
        for approach in approaches:
            runs = found[(source, approach)]
            seconds = statistics.median(r["seconds"] for r in runs)
            peak = statistics.median(r["peak"] for r in runs) / 1e6
            added = statistics.median(r["added"] for r in runs) / 1e6
            print(
                f"{source:<10}{approach:<10}{seconds:>8.2f}{seconds / base:>9.2f}"
                f"{peak:>16.0f}{added:>10.0f}"
            )
    print("targets: engine <= 1.1x dask and <= hamilton; client peak added below the data's size")


if __name__ == "__main__":
    main()

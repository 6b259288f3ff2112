"""A 10,000-task pipeline on a 2-worker LocalCluster: engine against raw Dask, and the client's
peak memory while it runs.

    nox -s bench          # or: python benchmarks/bench_scale.py [--tasks N] [--repeat N]

The pipeline: one source, N-2 tasks that each turn its output into a 10 kB block, and one task
that sums their sizes. Raw Dask runs the same task-spec graph with one ``client.get`` of the
final key. The engine runs it with ``keep_results`` at its cluster default, ``final`` (only the
last result comes back; the blocks are released on the workers as soon as the sum has them),
and with ``all`` (every block comes back to the client), to show what that default saves.
Client memory is the peak resident memory of this process during the run, above what it held
before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef

from xlibrary.pipeline import Pipeline, PipelineManager, Task
from xlibrary.pipeline.monitoring.metrics import rss_bytes, sampler

BLOCK = 10_000


def source() -> int:
    return 1


def block(seed: int) -> bytes:
    return bytes([seed % 256]) * BLOCK


def total(*blocks: bytes) -> int:
    return sum(len(b) for b in blocks)


def raw_graph(n: int, token: str) -> tuple[dict[Any, DaskTask], Any]:
    src = ("source", token)
    graph = {src: DaskTask(src, source)}
    refs = []
    for i in range(n - 2):
        key = (f"block_{i}", token)
        graph[key] = DaskTask(key, block, TaskRef(src))
        refs.append(TaskRef(key))
    out = ("total", token)
    graph[out] = DaskTask(out, total, *refs)
    return graph, out


def pipeline(n: int) -> Pipeline:
    p = Pipeline(f"scale_{n}")
    p.add(Task("source", source))
    for i in range(n - 2):
        p.add(Task(f"block_{i}", block, ("source",)))
    p.add(Task("total", total, tuple(f"block_{i}" for i in range(n - 2))))
    return p


def measure(fn: Callable[[], Any]) -> tuple[float, int]:
    """Seconds, and the client's peak memory above its level before the run (bytes)."""
    sampler.ensure_running()
    time.sleep(0.05)
    before = rss_bytes()
    started = time.time()
    fn()
    elapsed = time.time() - started
    peak = sampler.peak_between(started) or before
    return elapsed, max(0, peak - before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.tasks
    expected = (n - 2) * BLOCK

    from distributed import Client, LocalCluster

    cases: dict[str, list[tuple[float, int]]] = {"raw": [], "final": [], "all": []}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
        PipelineManager(client=client) as final,
        PipelineManager({"keep_results": "all"}, client=client) as keep_all,
    ):
        p = pipeline(n)
        runs = {
            "raw": lambda: client.get(*raw_graph(n, f"raw-{time.time_ns()}")),
            "final": lambda: final.execute_pipeline(p).final_result,
            "all": lambda: keep_all.execute_pipeline(p).final_result,
        }
        for fn in runs.values():  # warm up, and check the answers
            assert fn() == expected
        for _ in range(args.repeat):
            for name, fn in runs.items():
                cases[name].append(measure(fn))

    def seconds(name: str) -> float:
        return statistics.median(t for t, _ in cases[name])

    def memory(name: str) -> float:
        return max(m for _, m in cases[name]) / 2**20

    raw = seconds("raw")
    print(f"\n{n:,} tasks on a 2-worker LocalCluster (median of {args.repeat})")
    print(f"  {'':<34}{'seconds':>9}{'ratio':>8}{'client peak MB':>16}")
    print(f"  {'raw dask':<34}{raw:9.2f}{1:8.2f}{memory('raw'):16.1f}")
    for name, label in (
        ("final", "engine, keep_results final"),
        ("all", "engine, keep_results all"),
    ):
        print(f"  {label:<34}{seconds(name):9.2f}{seconds(name) / raw:8.2f}{memory(name):16.1f}")
    print("  (target: ratio <= 1.3 for the default, final)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

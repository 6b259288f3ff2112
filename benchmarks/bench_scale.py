"""A 10,000-task pipeline on a 2-worker LocalCluster: engine against raw Dask, and the client's
peak memory while it runs.

    nox -s bench          # or: python benchmarks/bench_scale.py [--tasks N] [--repeat N]

The pipeline: about N tasks that each make a 10 kB block; a sum of the block sizes for each
group of about sqrt(N) blocks (a tree reduction, as Dask does: one task of 10,000 inputs makes a
worker fetch them all at once, and one key with 10,000 dependents costs the scheduler the square
of that), and the total. Raw Dask runs the
same task-spec graph with one ``client.get`` of the final key. The engine runs it with
``keep_results`` at its cluster default, ``final`` (only the last result comes back; the blocks
are released on the workers as soon as their group's sum has them), and with ``all`` (every
block comes back to the client), to show what that default saves. Client memory is the peak
resident memory of this process during the run, above what it held before.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef

from xlibrary.pipeline import Pipeline, PipelineManager, Task
from xlibrary.pipeline.taskmetrics import rss_bytes, sampler

BLOCK = 10_000


def block(seed: int) -> bytes:
    return bytes([seed % 256]) * BLOCK


def total(*blocks: bytes) -> int:
    return sum(len(b) for b in blocks)


def add(*sizes: int) -> int:
    return sum(sizes)


def shape(n: int) -> tuple[int, int]:
    """``(groups, blocks per group)`` so that blocks + group sums + total = ``n``."""
    groups = max(1, round((n - 1) ** 0.5))
    return groups, max(1, (n - 1 - groups) // groups)


def raw_graph(n: int, token: str) -> tuple[dict[Any, DaskTask], Any]:
    groups, per = shape(n)
    graph: dict[Any, DaskTask] = {}
    sums = []
    for g in range(groups):
        refs = []
        for i in range(per):
            key = (f"block_{g}_{i}", token)
            graph[key] = DaskTask(key, block, g * per + i)
            refs.append(TaskRef(key))
        key = (f"sum_{g}", token)
        graph[key] = DaskTask(key, total, *refs)
        sums.append(TaskRef(key))
    out = ("total", token)
    graph[out] = DaskTask(out, add, *sums)
    return graph, out


def pipeline(n: int) -> Pipeline:
    groups, per = shape(n)
    p = Pipeline(f"scale_{n}")
    for g in range(groups):
        for i in range(per):
            p.add(Task(f"block_{g}_{i}", functools.partial(block, g * per + i)))
        p.add(Task(f"sum_{g}", total, tuple(f"block_{g}_{i}" for i in range(per))))
    p.add(Task("total", add, tuple(f"sum_{g}" for g in range(groups))))
    return p


def measure(fn: Callable[[], Any], expected: int) -> tuple[float, int]:
    """Seconds, and the client's peak memory above its level before the run (bytes)."""
    sampler.ensure_running()
    time.sleep(0.05)
    before = rss_bytes()
    started = time.time()
    value = fn()
    elapsed = time.time() - started
    assert value == expected, value
    peak = sampler.peak_between(started) or before
    return elapsed, max(0, peak - before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    n = args.tasks
    groups, per = shape(n)
    expected = groups * per * BLOCK
    tasks = 1 + groups * (per + 1)

    from distributed import Client, LocalCluster

    cases: dict[str, list[tuple[float, int]]] = {"raw": [], "final": [], "all": []}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
        PipelineManager(client=client) as final,
        PipelineManager({"keep_results": "all"}, client=client) as keep_all,
    ):
        small, p = pipeline(200), pipeline(n)
        small_expected = shape(200)[0] * shape(200)[1] * BLOCK
        runs = {
            "raw": lambda: client.get(*raw_graph(n, f"raw-{time.time_ns()}")),
            "final": lambda: final.execute_pipeline(p).final_result,
            "all": lambda: keep_all.execute_pipeline(p).final_result,
        }
        # warm up on a small graph and check every answer (a 10,000-task run takes a minute
        # or more on 2 cores: Dask's own cost per task grows with the graph)
        assert client.get(*raw_graph(200, "warm")) == small_expected
        assert final.execute_pipeline(small).final_result == small_expected
        assert keep_all.execute_pipeline(small).final_result == small_expected
        for _ in range(args.repeat):
            for name, fn in runs.items():
                cases[name].append(measure(fn, expected))

    def seconds(name: str) -> float:
        return statistics.median(t for t, _ in cases[name])

    def memory(name: str) -> float:
        return max(m for _, m in cases[name]) / 2**20

    raw = seconds("raw")
    print(f"\n{tasks:,} tasks on a 2-worker LocalCluster (median of {args.repeat})")
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

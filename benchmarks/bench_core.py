"""Engine overhead against raw Dask, on the same graphs and the same scheduler, in one process.

    nox -s bench          # or: python benchmarks/bench_core.py [--repeat N] [--quick]

Cases: a fan-out of 2,000 tiny tasks into one reduce, and a chain of 500, each on the embedded
default (Dask's threaded scheduler, the engine's own pool for both) and on a 2-worker
LocalCluster (one Client for both). Raw Dask builds its task-spec graph and asks for the
final key; the engine runs a declared pipeline of the same shape through execute_pipeline
(plan, lower, run, collect every task's outcome). Each case alternates raw and engine runs
after a warm-up and prints the medians and their ratio (engine / raw; target <= 1.3). The
"submit" case starts the run with pm.submit and waits on its handle (a run in the background).

Then the cost of monitoring: the threaded fan-out with monitoring off and on (target: on <=
1.15x off). Last, a fresh process from start to the ETL example's printed result
(`xlibrary-pipeline run examples/etl.py`; target under 2 s).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.threaded
from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef

from xlibrary.pipeline import Pipeline, PipelineManager, Task

ROOT = Path(__file__).resolve().parent.parent


def source() -> int:
    return 1


def inc(x: int) -> int:
    return x + 1


def total(*xs: int) -> int:
    return sum(xs)


# -- the same shapes, as raw Dask graphs and as pipelines ------------------------------------
def raw_fanout(n: int, token: str) -> tuple[dict[Any, DaskTask], Any]:
    src = ("source", token)
    graph = {src: DaskTask(src, source)}
    leaves = []
    for i in range(n):
        key = (f"leaf_{i}", token)
        graph[key] = DaskTask(key, inc, TaskRef(src))
        leaves.append(TaskRef(key))
    out = ("total", token)
    graph[out] = DaskTask(out, total, *leaves)
    return graph, out


def pipeline_fanout(n: int) -> Pipeline:
    p = Pipeline(f"fanout_{n}")
    p.add(Task("source", source))
    for i in range(n):
        p.add(Task(f"leaf_{i}", inc, ("source",)))
    p.add(Task("total", total, tuple(f"leaf_{i}" for i in range(n))))
    return p


def raw_chain(n: int, token: str) -> tuple[dict[Any, DaskTask], Any]:
    key = ("step_0", token)
    graph = {key: DaskTask(key, source)}
    for i in range(1, n):
        new = (f"step_{i}", token)
        graph[new] = DaskTask(new, inc, TaskRef(key))
        key = new
    return graph, key


def pipeline_chain(n: int) -> Pipeline:
    p = Pipeline(f"chain_{n}")
    p.add(Task("step_0", source))
    for i in range(1, n):
        p.add(Task(f"step_{i}", inc, (f"step_{i - 1}",)))
    return p


# -- timing --------------------------------------------------------------------------------
def compare(
    raw: Callable[[], Any], engine: Callable[[], Any], repeat: int, expected: int
) -> tuple[float, float]:
    """Median seconds of raw and engine, alternating, after one warm-up of each."""
    assert raw() == expected and engine() == expected
    raw_times, engine_times = [], []
    for i in range(repeat):
        order = [(raw, raw_times), (engine, engine_times)]
        for fn, times in order if i % 2 == 0 else reversed(order):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(raw_times), statistics.median(engine_times)


_counter = 0


def token() -> str:
    global _counter
    _counter += 1
    return f"raw{_counter}"


def local_cases(repeat: int, fan: int, chain: int) -> list[tuple[str, float, float]]:
    rows = []
    with PipelineManager() as pm:
        from xlibrary.pipeline.backends.local import LocalBackend

        backend = pm._backends.get("threads")
        assert isinstance(backend, LocalBackend)
        pool = backend.pool  # the same thread pool for raw Dask and the engine

        def raw_threads(build: Callable[[int, str], Any], n: int) -> Callable[[], Any]:
            def run() -> Any:
                graph, key = build(n, token())
                return dask.threaded.get(graph, key, pool=pool)

            return run

        fan_p, chain_p = pipeline_fanout(fan), pipeline_chain(chain)
        rows.append(
            (
                f"threads   fan-out {fan}",
                *compare(
                    raw_threads(raw_fanout, fan),
                    lambda: pm.execute_pipeline(fan_p).final_result,
                    repeat,
                    2 * fan,
                ),
            )
        )
        rows.append(
            (
                f"threads   chain {chain}",
                *compare(
                    raw_threads(raw_chain, chain),
                    lambda: pm.execute_pipeline(chain_p).final_result,
                    repeat,
                    chain,
                ),
            )
        )
        rows.append(
            (
                f"threads   submit fan-out {fan}",
                *compare(
                    raw_threads(raw_fanout, fan),
                    lambda: pm.submit(fan_p).result().final_result,
                    repeat,
                    2 * fan,
                ),
            )
        )
    return rows


def cluster_cases(repeat: int, fan: int, chain: int) -> list[tuple[str, float, float]]:
    from distributed import Client, LocalCluster

    rows = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
        PipelineManager(client=client) as pm,
    ):

        def raw_cluster(build: Callable[[int, str], Any], n: int) -> Callable[[], Any]:
            def run() -> Any:
                graph, key = build(n, token())
                return client.get(graph, key)

            return run

        fan_p, chain_p = pipeline_fanout(fan), pipeline_chain(chain)
        rows.append(
            (
                f"cluster   fan-out {fan}",
                *compare(
                    raw_cluster(raw_fanout, fan),
                    lambda: pm.execute_pipeline(fan_p).final_result,
                    repeat,
                    2 * fan,
                ),
            )
        )
        rows.append(
            (
                f"cluster   chain {chain}",
                *compare(
                    raw_cluster(raw_chain, chain),
                    lambda: pm.execute_pipeline(chain_p).final_result,
                    repeat,
                    chain,
                ),
            )
        )
    return rows


def monitoring_cost(repeat: int, fan: int) -> tuple[float, float]:
    """The fan-out on threads with monitoring off and on (memory, CPU, metrics, alerts)."""
    fan_p = pipeline_fanout(fan)
    with PipelineManager() as off, PipelineManager({"monitoring_enabled": True}) as on:
        return compare(
            lambda: off.execute_pipeline(fan_p).final_result,
            lambda: on.execute_pipeline(fan_p).final_result,
            repeat,
            2 * fan,
        )


def startup(repeat: int) -> float:
    """Median wall seconds of a fresh `xlibrary-pipeline run examples/etl.py`."""
    script = shutil.which("xlibrary-pipeline") or str(
        Path(sys.executable).with_name("xlibrary-pipeline")
    )
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        proc = subprocess.run(
            [script, "run", "examples/etl.py"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        times.append(time.perf_counter() - started)
        assert '"count": 5' in proc.stdout
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side (median)")
    parser.add_argument("--quick", action="store_true", help="smaller graphs, for a smoke test")
    parser.add_argument("--no-cluster", action="store_true", help="skip the LocalCluster cases")
    args = parser.parse_args()
    fan, chain = (200, 50) if args.quick else (2000, 500)

    # Threaded runs take ~0.1 s and a 2-core machine is noisy: take many more of them.
    rows = local_cases(args.repeat * 4, fan, chain)
    if not args.no_cluster:
        rows += cluster_cases(max(3, args.repeat // 2), fan, chain)
    monitor_off, monitor_on = monitoring_cost(args.repeat * 4, fan)
    start = startup(args.repeat)

    print(
        f"\n{'case':<32}{'raw dask s':>12}{'engine s':>12}{'ratio':>8}"
        f"{'extra us/task':>15}   (target: ratio <= 1.3)"
    )
    worst = 0.0
    for name, raw_s, engine_s in rows:
        ratio = engine_s / raw_s
        worst = max(worst, ratio)
        tasks = int(name.rsplit(" ", 1)[1])
        extra = (engine_s - raw_s) / tasks * 1e6
        print(f"{name:<32}{raw_s:>12.4f}{engine_s:>12.4f}{ratio:>8.2f}{extra:>15.1f}")
    print(
        f"\nmonitoring, threads fan-out {fan}: off {monitor_off:.4f}s, on {monitor_on:.4f}s, "
        f"ratio {monitor_on / monitor_off:.2f}   (target <= 1.15)"
    )
    print(f"fresh process to the ETL example's result: {start:.2f}s   (target < 2 s)")
    print(f"worst ratio: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

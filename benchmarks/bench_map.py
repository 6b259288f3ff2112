"""Mapped tasks (``map_over=``) against raw Dask, on the same work, in one process run.

    python benchmarks/bench_map.py [--repeat N] [--quick] [--no-cluster]
                                   [--threads-elements N] [--cluster-elements N]

Every element sleeps 1 ms. Cases, each alternating yardstick and engine after a warm-up, with
the medians and their ratio (engine / yardstick) printed:

* threads: a pipeline mapping over 100,000 elements, unbatched, against a raw Dask task-spec
  graph of the same 100,000 tasks and a gather task, on the engine's own thread pool
  (target: ratio <= 1.2);
* a 2-worker LocalCluster, one thread each, over 10,000 elements: unbatched against
  ``client.map`` + ``client.gather`` (target <= 1.2); ``batch_size="auto"`` against
  ``dask.bag.from_sequence(...).map(...)`` (target <= 1.0), and against the unbatched run
  (target: at least 3x faster).

``--quick`` runs 2,000 and 500 elements, to check that the benchmark works.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import dask.threaded
from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef

from xlibrary.pipeline import Pipeline, PipelineManager


def element(x: int) -> int:
    time.sleep(0.001)
    return x


def gathered(*xs: int) -> list[int]:
    return list(xs)


def mapping(n: int, **options: Any) -> Pipeline:
    p = Pipeline(f"map_{n}_{options.get('batch_size') or 'each'}")
    p.task("items")(lambda: range(n))
    p.task("element", depends_on=["items"], map_over="items", **options)(element)
    return p


def compare(
    yardstick: Callable[[], Any], engine: Callable[[], Any], repeat: int, expected: list[int]
) -> tuple[float, float]:
    """Median seconds of the yardstick and the engine, alternating, after a warm-up of each."""
    assert list(yardstick()) == expected and list(engine()) == expected
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeat):
        order = [(yardstick, times[0]), (engine, times[1])]
        for fn, kept in order if i % 2 == 0 else reversed(order):
            started = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def thread_cases(repeat: int, n: int) -> list[tuple[str, float, float, float]]:
    with PipelineManager() as pm:
        from xlibrary.pipeline.backends.local import LocalBackend

        backend = pm._backends.get("threads")
        assert isinstance(backend, LocalBackend)
        pool = backend.pool  # the same threads for both
        runs = iter(range(10**9))

        def raw() -> Any:
            token = f"raw{next(runs)}"
            graph: dict[Any, Any] = {
                ("element", token, i): DaskTask(("element", token, i), element, i) for i in range(n)
            }
            out = ("gather", token)
            graph[out] = DaskTask(out, gathered, *[TaskRef(k) for k in list(graph)])
            return dask.threaded.get(graph, out, pool=pool)

        p = mapping(n)
        raw_s, engine_s = compare(raw, lambda: pm.execute_pipeline(p).final_result, repeat,
                                  list(range(n)))  # fmt: skip
        return [(f"threads {n:,} unbatched vs raw Dask", raw_s, engine_s, 1.2)]


def cluster_cases(repeat: int, n: int) -> list[tuple[str, float, float, float]]:
    import dask.bag as db
    from distributed import Client, LocalCluster

    rows = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
        PipelineManager(client=client) as pm,
    ):
        expected = list(range(n))

        def client_map() -> Any:
            return client.gather(client.map(element, range(n), pure=False))

        def bag() -> Any:
            return db.from_sequence(range(n)).map(element).compute(scheduler=client)

        each, auto = mapping(n), mapping(n, batch_size="auto")
        raw_s, each_s = compare(client_map, lambda: pm.execute_pipeline(each).final_result,
                                repeat, expected)  # fmt: skip
        rows.append((f"cluster {n:,} unbatched vs client.map", raw_s, each_s, 1.2))
        bag_s, auto_s = compare(bag, lambda: pm.execute_pipeline(auto).final_result, repeat,
                                expected)  # fmt: skip
        rows.append((f"cluster {n:,} auto vs dask.bag", bag_s, auto_s, 1.0))
        rows.append((f"cluster {n:,} auto vs unbatched", each_s, auto_s, 1 / 3))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (median)")
    parser.add_argument("--quick", action="store_true", help="fewer elements, a smoke test")
    parser.add_argument("--no-cluster", action="store_true", help="skip the LocalCluster cases")
    parser.add_argument("--threads-elements", type=int, help="elements of the threads case")
    parser.add_argument("--cluster-elements", type=int, help="elements of the cluster cases")
    args = parser.parse_args()
    threads_n, cluster_n = (2_000, 500) if args.quick else (100_000, 10_000)
    threads_n, cluster_n = args.threads_elements or threads_n, args.cluster_elements or cluster_n
    rows = thread_cases(args.repeat, threads_n)
    if not args.no_cluster:
        rows += cluster_cases(args.repeat, cluster_n)
    print(f"\n{'case':<40}{'yardstick s':>13}{'engine s':>11}{'ratio':>8}{'target':>9}")
    for name, yardstick, engine, target in rows:
        ratio = engine / yardstick
        verdict = "ok" if ratio <= target else "OVER"
        print(f"{name:<40}{yardstick:>13.3f}{engine:>11.3f}{ratio:>8.2f}{target:>8.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

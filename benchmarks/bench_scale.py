"""Scale: a 100,000-task fan-out on threads, and a 10,000-task pipeline on a 2-worker
LocalCluster, each against raw Dask (and the cluster one against ``client.map``).

    nox -s bench          # or: python benchmarks/bench_scale.py [--tasks N] [--loops N]
                          #     [--threads-tasks N] [--only threads|cluster] [--cases ...]

Threads: a fan-out (one source, N tasks on it, their total) declared, planned and run with
``execute_pipeline``, against building the same raw task-spec graph and running it with
``dask.threaded.get`` on the same thread pool (alternating, medians of ``--threads-repeat``).
Targets: declare + plan <= 2x the raw build; run <= 1.2x the raw run.

Cluster: about N tasks that each make a 10 kB block; a sum of the block sizes for each
group of about sqrt(N) blocks (a tree reduction, as Dask does: one task of 10,000 inputs makes a
worker fetch them all at once, and one key with 10,000 dependents costs the scheduler the square
of that), and the total. Raw Dask runs the same task-spec graph with one ``client.get`` of the
final key; ``client.map`` maps the blocks and submits the sums. The engine runs it with
``keep_results`` at its cluster default, ``final`` (only the last result comes back; the blocks
are released on the workers as soon as their group's sum has them), and with ``all`` (every
block comes back to the client), to show what that default saves. Each case runs ``--loops``
times; a run that fails or takes over ``--timeout`` seconds counts as not completed. Client
memory is the peak resident memory of this process during the run, above what it held before.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench_core import pipeline_fanout as fanout  # the same fan-out as bench_core's
from bench_core import raw_fanout as fanout_graph
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


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def threads_case(n: int, repeat: int) -> None:
    """Declare, plan and run the fan-out of ``n`` tasks on threads, against building and
    running the raw graph on the same thread pool (alternating, medians of ``repeat``)."""
    import dask.threaded

    times: dict[str, list[float]] = {k: [] for k in ("build", "declare", "plan", "raw", "run")}
    with PipelineManager() as pm:
        from xlibrary.pipeline.backends.local import LocalBackend

        backend = pm._backends.get("threads")
        assert isinstance(backend, LocalBackend)
        pool = backend.pool  # one pool for raw Dask and the engine
        small = fanout(200)  # warm up
        assert pm.execute_pipeline(small).final_result == 2 * 200
        assert dask.threaded.get(*fanout_graph(200, "warm"), pool=pool) == 2 * 200
        for i in range(repeat):
            for name, elapsed in threads_round(pm, pool, n, flip=i % 2 == 1).items():
                times[name].append(elapsed)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nfan-out of {n:,} tasks on threads (median of {repeat})")
    print(f"  raw graph build {med['build']:8.2f} s")
    print(f"  declare         {med['declare']:8.2f} s")
    print(f"  plan            {med['plan']:8.2f} s")
    ratio = (med["declare"] + med["plan"]) / med["build"]
    print(f"  declare + plan / raw build  {ratio:6.2f}   (target <= 2)")
    print(f"  raw run         {med['raw']:8.2f} s")
    print(f"  engine run      {med['run']:8.2f} s   (with the plan made above)")
    print(f"  run / raw run               {med['run'] / med['raw']:6.2f}   (target <= 1.2)")


def threads_round(pm: PipelineManager, pool: Any, n: int, *, flip: bool) -> dict[str, float]:
    """One round of the threads case: seconds by stage."""
    import dask.threaded

    out = {}
    out["build"], (graph, key) = timed(lambda: fanout_graph(n, f"raw-{time.time_ns()}"))
    out["declare"], p = timed(lambda: fanout(n))
    out["plan"], _ = timed(lambda: pm.plan(p))  # kept: the run below uses it
    order: list[tuple[str, Callable[[], Any]]] = [
        ("raw", lambda: dask.threaded.get(graph, key, pool=pool)),
        ("run", lambda: pm.execute_pipeline(p).final_result),
    ]
    for name, fn in reversed(order) if flip else order:
        out[name], value = timed(fn)
        assert value == 2 * n, value
    return out


def by_map(client: Any, n: int) -> int:
    """The same work as :func:`pipeline` with ``client.map`` and ``client.submit``."""
    groups, per = shape(n)
    blocks = client.map(block, range(groups * per), pure=False)
    sums = [
        client.submit(total, *blocks[g * per : (g + 1) * per], pure=False) for g in range(groups)
    ]
    value: int = client.submit(add, *sums, pure=False).result()
    return value


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


def within(fn: Callable[[], Any], seconds: float) -> Callable[[], Any]:
    """``fn``, given up on after ``seconds`` (TimeoutError; the run goes on in the background
    until the cluster closes)."""

    def run() -> Any:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(fn)
            try:
                return future.result(timeout=seconds)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)

    return run


def cluster_case(n: int, loops: int, cases: list[str], timeout: float) -> None:
    groups, per = shape(n)
    expected = groups * per * BLOCK
    tasks = 1 + groups * (per + 1)

    from distributed import Client, LocalCluster

    results: dict[str, list[tuple[float, int] | str]] = {name: [] for name in cases}
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
            "map": lambda: by_map(client, n),
            "final": lambda: final.execute_pipeline(p).final_result,
            "all": lambda: keep_all.execute_pipeline(p).final_result,
        }
        # warm up on a small graph and check every answer (a 10,000-task run takes a minute
        # or more on 2 cores: Dask's own cost per task grows with the graph)
        assert client.get(*raw_graph(200, "warm")) == small_expected
        assert by_map(client, 200) == small_expected
        assert final.execute_pipeline(small).final_result == small_expected
        assert keep_all.execute_pipeline(small).final_result == small_expected
        for loop in range(loops):
            for name in cases:
                try:
                    results[name].append(measure(within(runs[name], timeout), expected))
                    print(f"  loop {loop + 1}: {name} {results[name][-1][0]:.1f} s", flush=True)
                except Exception as exc:  # a run that never finished, or failed
                    results[name].append(f"{type(exc).__name__}")
                    print(f"  loop {loop + 1}: {name} did not complete ({exc!r})", flush=True)

    def seconds(name: str) -> float | None:
        done = [r[0] for r in results[name] if not isinstance(r, str)]
        return statistics.median(done) if done else None

    def memory(name: str) -> float:
        done = [r[1] for r in results[name] if not isinstance(r, str)]
        return max(done, default=0) / 2**20

    labels = {
        "raw": "raw dask (client.get)",
        "map": "client.map + submit",
        "final": "engine, keep_results final",
        "all": "engine, keep_results all",
    }
    print(f"\n{tasks:,} tasks on a 2-worker LocalCluster ({loops} loops, median of completed)")
    print(f"  {'':<30}{'done':>6}{'seconds':>9}{'/raw':>7}{'/map':>7}{'client MB':>11}  each")
    raw, by_client_map = seconds("raw") if "raw" in cases else None, None
    by_client_map = seconds("map") if "map" in cases else None
    for name in cases:
        mid = seconds(name)
        done = sum(not isinstance(r, str) for r in results[name])
        each = " ".join(f"{r[0]:.1f}" if not isinstance(r, str) else r for r in results[name])

        def ratio(base: float | None, mid: float | None = mid) -> str:
            return f"{mid / base:7.2f}" if mid is not None and base else f"{'-':>7}"

        shown = f"{mid:9.2f}" if mid is not None else f"{'-':>9}"
        print(
            f"  {labels[name]:<30}{done:>3}/{loops:<2}{shown}{ratio(raw)}{ratio(by_client_map)}"
            f"{memory(name):11.1f}  {each}"
        )
    print("  (targets: engine final / raw <= 1.3; engine final / client.map <= 1.5)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="cluster case")
    parser.add_argument("--loops", "--repeat", type=int, default=1, help="cluster runs of each")
    parser.add_argument("--cases", default="raw,map,final,all", help="cluster cases to run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a cluster run gets")
    parser.add_argument("--threads-tasks", type=int, default=100_000, help="threads case")
    parser.add_argument("--threads-repeat", type=int, default=3)
    parser.add_argument("--only", choices=("threads", "cluster"), default=None)
    args = parser.parse_args()
    if args.only != "cluster":
        threads_case(args.threads_tasks, args.threads_repeat)
    if args.only != "threads":
        cluster_case(args.tasks, args.loops, args.cases.split(","), args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

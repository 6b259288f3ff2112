"""Dynamic map (``map_over=``): one call per element, on threads and on real scheduler and
worker processes (``dask scheduler`` + two ``dask worker`` subprocesses, one thread each)."""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin

from tests.conftest import dask_processes
from xlibrary.pipeline import (
    CachePolicy,
    MapInputError,
    Pipeline,
    PipelineDefinitionError,
    PipelineManager,
    RetryPolicy,
    RunRecord,
    Task,
    TaskRecord,
    TaskStatus,
    TaskTimeoutError,
)
from xlibrary.pipeline.backends import LocalBackend
from xlibrary.pipeline.execute import execute
from xlibrary.pipeline.pipeline import task as builder_task
from xlibrary.pipeline.present import text_table


# -- functions the workers import (this module is on their PYTHONPATH) -------------------------
def numbers() -> list[int]:
    return list(range(12))


def settings() -> dict[str, int]:
    return {"factor": 3}


def scaled(x: int, model: dict[str, int]) -> int:
    time.sleep(0.002 * (12 - x))  # later elements finish first: order must not follow
    return x * model["factor"]


def fails_at_seven(x: int) -> int:
    if x == 7:
        raise ValueError(f"bad element {x}")
    return x * 10


def pid_of(x: int) -> tuple[int, int]:
    time.sleep(0.1)
    return x, os.getpid()


def flaky(x: int, where: str) -> int:
    """Fails the first call of element 3 (a marker file says it failed once)."""
    Path(where, f"call-{x}-{uuid.uuid4().hex}").touch()
    marker = Path(where, f"failed-{x}")
    if x == 3 and not marker.exists():
        marker.touch()
        raise ConnectionError("first try of element 3")
    return x + 100


def slow_at_two(x: int) -> int:
    if x == 2:
        time.sleep(3)
    return x


def calls(where: str | Path, x: int) -> int:
    return len(list(Path(where).glob(f"call-{x}-*")))


class Keys(SchedulerPlugin):
    """A scheduler plugin keeping the keys of the tasks the scheduler was given, and each
    time a key's result arrived in memory."""

    name = "test-map-keys"

    def __init__(self) -> None:
        self.keys: set[Any] = set()
        self.stored: list[Any] = []
        self.restricted: dict[Any, dict[str, float]] = {}

    def update_graph(self, scheduler: Any, *, keys: Any = (), tasks: Any = (), **_: Any) -> None:
        self.keys.update(tasks or ())
        for key in tasks or ():
            state = scheduler.tasks.get(key)
            if state is not None and state.resource_restrictions:
                self.restricted[key] = dict(state.resource_restrictions)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory":
            self.stored.append(key)


def seen_keys(dask_scheduler: Any) -> list[Any]:
    return sorted(dask_scheduler.plugins[Keys.name].keys, key=repr)


def restricted_keys(dask_scheduler: Any) -> dict[Any, dict[str, float]]:
    return dict(dask_scheduler.plugins[Keys.name].restricted)


def stored_keys(dask_scheduler: Any) -> list[Any]:
    return list(dask_scheduler.plugins[Keys.name].stored)


# -- backends ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with dask_processes(workers=2, worker_args=["--nthreads", "1"]) as (address, _):
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address


@pytest.fixture(params=["threads", "processes"])
def pm(request: pytest.FixtureRequest) -> Iterator[PipelineManager]:
    if request.param == "threads":
        with PipelineManager() as manager:
            yield manager
    else:
        address = request.getfixturevalue("cluster")
        with PipelineManager({"scheduler_address": address}) as manager:
            yield manager


@pytest.fixture(params=["threads", "processes"])
def on(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The config of a manager on threads, or on the scheduler and worker processes."""
    if request.param == "threads":
        return {}
    return {"scheduler_address": request.getfixturevalue("cluster")}


def _scoring(*, total: bool = True, **options: Any) -> Pipeline:
    p = Pipeline("scoring")
    p.task("files")(numbers)
    p.task("model")(settings)
    p.task("score", depends_on=["files", "model"], map_over="files", **options)(scaled)
    if total:
        p.task("total", depends_on=["score"])(sum)
    return p


# -- results ----------------------------------------------------------------------------------
def test_results_in_input_order_with_other_dependencies_whole(pm: PipelineManager) -> None:
    result = pm.execute_pipeline(_scoring(total=False))
    assert result.success, result.error
    assert result.final_result == [x * 3 for x in range(12)]
    assert result.tasks["score"].elements == {"succeeded": 12, "failed": 0}
    downstream = pm.execute_pipeline(_scoring())  # on a cluster, only the final result returns
    assert downstream.final_result == sum(x * 3 for x in range(12))


@pytest.mark.parametrize(
    "made",
    [tuple, range, np.array, pd.Series, pd.Index, lambda xs: pd.Series(xs, index=xs[::-1])],
    ids=["tuple", "range", "numpy", "series", "index", "series-by-position"],
)
def test_any_sequence_is_mapped_by_position(made: Any) -> None:
    p = Pipeline("kinds")
    p.task("files")(lambda: made(list(range(5))) if made is not range else range(5))
    p.task("double", depends_on=["files"], map_over="files")(lambda x: int(x) * 2)
    with PipelineManager() as pm:
        assert pm.execute_pipeline(p).final_result == [0, 2, 4, 6, 8]


def test_an_empty_sequence_gives_an_empty_list(on: dict[str, Any]) -> None:
    p = Pipeline("empty")
    p.task("files")(list)
    p.task("score", depends_on=["files"], map_over="files")(lambda x: 1 / 0)
    p.task("count", depends_on=["score"])(len)
    with PipelineManager(on) as pm:
        result = pm.execute_pipeline(p)
    assert result.success and result.final_result == 0
    assert result.results.get("score", []) == []  # kept on threads, not on a cluster
    assert result.tasks["score"].elements == {"succeeded": 0, "failed": 0}


@pytest.mark.parametrize(
    ("value", "kind"),
    [("abc", "str"), ({"a": 1}, "dict"), ({1, 2}, "set"), (5, "int"), (b"xy", "bytes")],
)
def test_a_non_sequence_fails_the_task_naming_it_the_dependency_and_the_fix(
    value: Any, kind: str, on: dict[str, Any]
) -> None:
    p = Pipeline("bad-input")
    p.task("files")(lambda: value)
    p.task("score", depends_on=["files"], map_over="files")(lambda x: x)
    p.task("after", depends_on=["score"])(len)
    with PipelineManager(on) as pm:
        result = pm.execute_pipeline(p)
    assert result.states == {"files": "succeeded", "score": "failed", "after": "skipped"}
    error = result.tasks["score"].error
    assert isinstance(error, MapInputError) and isinstance(error, TypeError)
    message = str(error)
    assert "'score'" in message and "'files'" in message and f"a {kind}" in message
    assert "list(" in message


def test_bad_declarations_name_the_task_and_the_fix() -> None:
    p = Pipeline("decl")
    p.task("files")(numbers)
    p.task("model")(settings)
    with pytest.raises(
        PipelineDefinitionError, match=r"'score'.*map_over='file'.*'files', 'model'"
    ):
        p.task("score", depends_on=["files", "model"], map_over="file")(scaled)
    for size in (0, -2, 1.5, True, "big"):
        with pytest.raises(PipelineDefinitionError, match="batch_size"):
            p.task("s", depends_on=["files"], map_over="files", batch_size=size)(abs)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match="on_error"):
        p.task("s", depends_on=["files"], map_over="files", on_error="ignore")(abs)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match=r"batch_size=.*mapped tasks only"):
        p.task("s", depends_on=["files"], batch_size=10)(abs)
    with pytest.raises(PipelineDefinitionError, match=r"on_error=.*mapped tasks only"):
        Task("s", abs, depends_on=("files",), on_error="skip")
    spec = Task("s", abs, depends_on=("files",), map_over="files", batch_size="auto")
    assert (spec.map_over, spec.batch_size, spec.on_error) == ("files", "auto", None)


def test_the_builder_and_task_specs_take_map_over() -> None:
    pm = PipelineManager()
    try:

        @pm.pipeline("built")
        def built() -> None:
            builder_task("files")(numbers)
            builder_task("halve", depends_on=["files"], map_over="files", batch_size=5)(
                lambda x: x / 2
            )

        p = Pipeline("specs")
        p.add(Task("files", numbers))
        p.add(Task("neg", lambda x: -x, depends_on=("files",), map_over="files"))
        assert pm.execute_pipeline(built).final_result == [x / 2 for x in range(12)]
        assert pm.execute_pipeline(p).final_result == [-x for x in range(12)]
    finally:
        pm.close()


# -- failures ---------------------------------------------------------------------------------
def _failing(
    on_error: str | None = None, batch_size: int | None = None, *, after: bool = True
) -> Pipeline:
    p = Pipeline("failing")
    p.task("files")(lambda: list(range(10)))
    p.task("score", depends_on=["files"], map_over="files", on_error=on_error,
           batch_size=batch_size)(fails_at_seven)  # fmt: skip
    if after:
        p.task("after", depends_on=["score"])(len)
    return p


@pytest.mark.parametrize("batch_size", [None, 4])
def test_a_failing_element_fails_the_task_with_its_index(
    pm: PipelineManager, batch_size: int | None
) -> None:
    result = pm.execute_pipeline(_failing(batch_size=batch_size))
    assert result.states == {"files": "succeeded", "score": "failed", "after": "skipped"}
    assert result.failed_task == "score"
    record = result.tasks["score"]
    assert record.error_message == "element 7 of 'score' failed: ValueError: bad element 7"
    assert record.error_type == "ValueError" and isinstance(record.error, ValueError)
    assert record.elements == {"succeeded": 9, "failed": 1}
    assert "element 7 of 'score' failed" in str(result.error)


def test_on_error_skip_keeps_the_exception_in_its_slot(
    pm: PipelineManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="xlibrary"):
        result = pm.execute_pipeline(_failing("skip", after=False))
    assert result.success
    values = result.final_result
    assert [v for i, v in enumerate(values) if i != 7] == [x * 10 for x in range(10) if x != 7]
    assert isinstance(values[7], ValueError) and str(values[7]) == "bad element 7"
    assert result.tasks["score"].elements == {"succeeded": 9, "failed": 1}
    assert any(
        "'score'" in r.getMessage()
        and "1 of 10" in r.getMessage()
        and "element 7" in r.getMessage()
        for r in caplog.records
        if r.name == "xlibrary.pipeline"  # this process's own, wherever the task ran
    )


def test_retries_apply_per_element(pm: PipelineManager, tmp_path: Path) -> None:
    where = str(tmp_path)
    p = Pipeline("retrying")
    p.task("files")(lambda: list(range(6)))
    p.task("where")(lambda: where)
    p.add(Task("score", flaky, depends_on=("files", "where"), map_over="files", batch_size=2,
               retry=RetryPolicy(max_retries=2, retry_on=(ConnectionError,))))  # fmt: skip
    result = pm.execute_pipeline(p)
    assert result.success, result.error
    assert result.final_result == [x + 100 for x in range(6)]
    assert [calls(tmp_path, x) for x in range(6)] == [1, 1, 1, 2, 1, 1]
    assert result.tasks["score"].attempts == 2


def test_timeouts_apply_per_element(on: dict[str, Any]) -> None:
    p = Pipeline("timing")
    p.task("files")(lambda: list(range(5)))
    p.task("score", depends_on=["files"], map_over="files", timeout=0.5, on_error="skip")(
        slow_at_two
    )
    with PipelineManager(on) as pm:
        started = time.monotonic()
        result = pm.execute_pipeline(p)
    assert time.monotonic() - started < 2.5
    values = result.final_result
    assert values[:2] == [0, 1] and values[3:] == [3, 4]
    assert isinstance(values[2], TaskTimeoutError)
    assert result.tasks["score"].elements == {"succeeded": 4, "failed": 1}


def test_batch_sizes_give_the_same_results(pm: PipelineManager) -> None:
    expected = [x * 3 for x in range(12)]
    for size in (None, 1, 5, 12, 100, "auto"):
        result = pm.execute_pipeline(_scoring(total=False, batch_size=size))
        assert result.final_result == expected, size


# -- caching, records, display ----------------------------------------------------------------
def test_a_mapped_task_is_cached_whole(tmp_path: Path, on: dict[str, Any]) -> None:
    where = str(tmp_path / "calls")
    os.makedirs(where)
    p = Pipeline("cached-map")
    p.task("files")(lambda: list(range(6)))
    p.task("where")(lambda: where)
    p.task("score", depends_on=["files", "where"], map_over="files",
           cache=CachePolicy(key="scores-v1"))(flaky)  # fmt: skip
    with PipelineManager({**on, "store": {"url": str(tmp_path / "store")}}) as pm:
        first = pm.execute_pipeline(p)
        second = pm.execute_pipeline(p)
    assert first.states["score"] == TaskStatus.FAILED  # element 3 failed its first call
    with PipelineManager({**on, "store": {"url": str(tmp_path / "store")}}) as pm:
        third = pm.execute_pipeline(p)
        fourth = pm.execute_pipeline(p)
    assert second.states["score"] == TaskStatus.SUCCEEDED
    assert third.states["score"] == fourth.states["score"] == TaskStatus.CACHED
    assert fourth.results["score"] == [x + 100 for x in range(6)]
    assert [calls(where, x) for x in range(6)] == [2, 2, 2, 2, 2, 2]


def test_counts_in_the_record_and_one_row_in_the_table(tmp_path: Path, on: dict[str, Any]) -> None:
    with PipelineManager({**on, "store": {"url": str(tmp_path / "store")}}) as pm:
        result = pm.execute_pipeline(_failing("skip"))
        stored = pm.store.read_record("failing", result.run_id)
    assert stored.tasks["score"].elements == {"succeeded": 9, "failed": 1}
    data = result.record.to_json()
    assert RunRecord.from_json(data).tasks["score"].elements == {"succeeded": 9, "failed": 1}
    old = {"status": "succeeded", "attempts": 1}  # written before mapped tasks
    assert TaskRecord.from_json("score", old).elements is None
    table = text_table(result)
    rows = [line for line in table.splitlines() if line.startswith("score")]
    assert len(rows) == 1 and "9 succeeded, 1 failed" in rows[0]
    big = TaskRecord(name="m", status=TaskStatus.SUCCEEDED,
                     elements={"succeeded": 9998, "failed": 2})  # fmt: skip
    from xlibrary.pipeline.present import elements_words

    assert elements_words(big.elements) == "9,998 succeeded, 2 failed"
    from xlibrary.pipeline.cli._store import _task_row

    assert "elements: 9,998 succeeded, 2 failed" in _task_row("m", big)[-1]
    assert "9 succeeded, 1 failed" in result._repr_html_()  # type: ignore[attr-defined]


# -- on real scheduler and worker processes ---------------------------------------------------
def test_elements_are_keys_of_their_own_on_several_worker_processes(cluster: str) -> None:
    # a name no other test uses: Dask balances by what it learnt of a name's tasks' durations
    p = Pipeline("spread")
    p.task("files")(lambda: list(range(24)))
    p.task("pids", depends_on=["files"], map_over="files")(pid_of)
    with PipelineManager({"scheduler_address": cluster}) as pm:
        pm.client.register_plugin(Keys())
        result = pm.execute_pipeline(p)
        keys = pm.client.run_on_scheduler(seen_keys)
        stored = pm.client.run_on_scheduler(stored_keys)
    assert result.success, result.error
    assert [x for x, _ in result.final_result] == list(range(24))
    pids = {pid for _, pid in result.final_result}
    assert len(pids) >= 2 and os.getpid() not in pids
    run_id = result.run_id
    elements = [k for k in keys if k[0] == "pids" and len(k) == 3 and k[1] == run_id]
    assert sorted(k[2] for k in elements) == list(range(24))
    assert ("pids", run_id) in keys and ("files", run_id) in keys
    # each result is made once: the second round refers to the first one's on the cluster
    assert stored.count(("files", run_id)) == stored.count(("pids", run_id)) == 1


class Recording:
    """A backend that passes each round on to a real one, keeping the graphs it was given."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.name, self.graphs = backend, backend.name, []

    def run(self, graph: Any, keys: Any, **options: Any) -> Any:
        self.graphs.append(set(graph))  # the keys only: the graph holds the round's futures
        return self.backend.run(graph, keys, **options)

    def __getattr__(self, name: str) -> Any:  # held, release_held, threads, ...
        return getattr(self.backend, name)


def test_other_inputs_stay_on_the_cluster_between_rounds(cluster: str) -> None:
    from distributed import Client

    from xlibrary.pipeline.backends.distributed import DistributedBackend

    with Client(cluster, set_as_default=False) as client:
        backend = Recording(DistributedBackend(client=client))
        with PipelineManager() as pm:
            plan = pm.plan(_scoring())
        result = execute(plan, backend, keep_results="final")
        deadline, left = time.monotonic() + 10, [None]
        while left and time.monotonic() < deadline:  # the client releases in its own time
            time.sleep(0.1)
            left = client.run_on_scheduler(
                lambda dask_scheduler, run: [k for k in dask_scheduler.tasks if run in k],
                run=result.run_id,
            )
    assert result.final_result == sum(x * 3 for x in range(12))
    first, second = backend.graphs
    run_id = result.run_id
    assert {("files", run_id), ("model", run_id)} <= set(first)
    # the second round refers to them on the cluster: neither is sent again
    assert ("files", run_id) not in second and ("model", run_id) not in second
    assert ("score", run_id, 11) in second and ("total", run_id) in second
    assert not left  # what was held for the second round is released at the end


def test_auto_batches_on_processes_use_fewer_keys(cluster: str) -> None:
    p = Pipeline("batched")
    p.task("files")(lambda: list(range(100)))
    p.task("where", depends_on=["files"], map_over="files", batch_size="auto")(abs)
    with PipelineManager({"scheduler_address": cluster}) as pm:
        pm.client.register_plugin(Keys())
        result = pm.execute_pipeline(p)
        keys = pm.client.run_on_scheduler(seen_keys)
    assert result.final_result == list(range(100))
    batches = [k for k in keys if len(k) == 3 and k[1] == result.run_id]
    assert len(batches) == math.ceil(100 / math.ceil(100 / (2 * 4)))  # 2 threads, 4 each


# -- with the rest of the engine --------------------------------------------------------------
def _recovering(where: str) -> Pipeline:
    p = Pipeline("recovering")
    p.task("files")(lambda: list(range(6)))
    p.task("where")(lambda: where)
    p.task("score", depends_on=["files", "where"], map_over="files")(flaky)
    p.task("total", depends_on=["score"])(sum)
    return p


@pytest.mark.parametrize("how", ["retry_failed_task", "resume"])
def test_a_failed_mapped_task_reruns_whole(tmp_path: Path, how: str) -> None:
    where = str(tmp_path / "calls")
    os.makedirs(where)
    config = {"save_intermediate_results": True, "store": {"url": str(tmp_path / "store")}}
    with PipelineManager(config) as pm:
        p = _recovering(where)
        failed = pm.execute_pipeline(p)
        assert failed.states["score"] == "failed" and failed.states["total"] == "skipped"
        if how == "resume":
            again = pm.resume(p)
        else:
            again = pm.retry_failed_task(pipeline=p, task_name="score")
    assert again.success, again.error
    assert again.final_result == sum(x + 100 for x in range(6))
    assert again.tasks["files"].source is not None  # restored, not rerun
    assert [calls(where, x) for x in range(6)] == [2, 2, 2, 2, 2, 2]


def test_selection_sequential_runs_and_kept_results(tmp_path: Path) -> None:
    p = _scoring()
    with PipelineManager() as pm:
        sequential = pm.execute_pipeline(p, parallel=False)
        selected = pm.execute_pipeline(p, targets=["score"])
    assert sequential.final_result == sum(x * 3 for x in range(12))
    assert selected.final_result == [x * 3 for x in range(12)]
    assert "total" not in selected.results
    with PipelineManager({"keep_results": "final"}) as pm:
        final = pm.execute_pipeline(p)
    assert final.final_result == sum(x * 3 for x in range(12))
    assert set(final.results) == {"total"}
    assert final.tasks["score"].elements == {"succeeded": 12, "failed": 0}


def test_two_levels_of_mapped_tasks_and_progress(tmp_path: Path) -> None:
    p = Pipeline("levels")
    p.task("n")(lambda: 4)
    p.task("ranges", depends_on=["n"])(lambda n: [list(range(i)) for i in range(n)])
    p.task("lengths", depends_on=["ranges"], map_over="ranges")(len)
    p.task("squares", depends_on=["lengths"], map_over="lengths", batch_size=3)(lambda x: x * x)
    done: list[str] = []

    class Listener:
        def started(self, task: str) -> None:
            pass

        def done(self, task: str) -> None:
            done.append(task)

        def close(self) -> None:
            pass

    with PipelineManager({"monitoring_enabled": True}) as pm:
        result = pm.execute_pipeline(p)
        plan = pm.plan(p)
    assert result.final_result == [0, 1, 4, 9]
    assert result.tasks["squares"].elements == {"succeeded": 4, "failed": 0}
    backend = LocalBackend(2)
    try:
        watched = execute(plan, backend, listeners=[Listener()])
    finally:
        backend.close()
    assert watched.final_result == [0, 1, 4, 9]
    assert sorted(done) == ["lengths", "n", "ranges", "squares"]  # one each, no elements


def type_name(x: Any) -> str:
    return type(x).__name__


def test_mapping_a_task_changes_its_derived_cache_key(tmp_path: Path) -> None:
    def declared(**options: Any) -> Pipeline:
        p = Pipeline("keyed")
        p.task("files", cache=False)(lambda: [1, 2])
        p.task("kinds", depends_on=["files"], cache=CachePolicy(), **options)(type_name)
        return p

    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as pm:
        assert pm.execute_pipeline(declared()).final_result == "list"
        assert pm.execute_pipeline(declared()).states["kinds"] == TaskStatus.CACHED
        mapped = pm.execute_pipeline(declared(map_over="files"))
        assert mapped.states["kinds"] == TaskStatus.SUCCEEDED
        assert mapped.final_result == ["int", "int"]
        again = pm.execute_pipeline(declared(map_over="files"))
    assert again.states["kinds"] == TaskStatus.CACHED and again.final_result == ["int", "int"]


def test_elements_carry_the_tasks_resource_requests() -> None:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, processes=False, resources={"gpu": 1}, dashboard_address=":0")
        as cluster,
        Client(cluster, set_as_default=False) as client,
        PipelineManager(client=client) as pm,
    ):  # fmt: skip
        p = Pipeline("asking")
        p.task("files")(lambda: list(range(5)))
        p.task("model")(lambda: 10)
        p.task("score", depends_on=["files", "model"], map_over="files",
               resource_requirements={"gpu": 1})(lambda x, m: x + m)  # fmt: skip
        p.task("total", depends_on=["score", "model"])(lambda s, m: sum(s) - m)
        client.register_plugin(Keys())
        result = pm.execute_pipeline(p)
        asked = client.run_on_scheduler(restricted_keys)
    assert result.final_result == 50
    run_id = result.run_id
    assert asked == {**{("score", run_id, i): {"gpu": 1} for i in range(5)},
                     ("score", run_id): {"gpu": 1}}  # fmt: skip

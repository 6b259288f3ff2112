"""Running on the embedded default (threads in this process): results, failures, retries."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from xlibrary.pipeline import (
    Pipeline,
    PipelineError,
    PipelineExecutionError,
    PipelineManager,
    PipelineResult,
    TaskStatus,
    TaskTimeoutError,
)


@pytest.fixture
def pm() -> Iterator[PipelineManager]:
    with PipelineManager() as manager:
        yield manager


def test_results_and_final_result(pm: PipelineManager) -> None:
    p = Pipeline("etl")
    p.task("extract")(lambda: [1, 2, 3])
    p.task("transform", depends_on=["extract"])(lambda rows: [r * 2 for r in rows])
    p.task("load", depends_on=["transform"])(lambda rows: {"count": len(rows), "sum": sum(rows)})
    result = pm.execute_pipeline(p)
    assert isinstance(result, PipelineResult)
    assert result.success and result.error is None and result.failed_task is None
    assert result.final_result == {"count": 3, "sum": 12}
    assert result.results == {
        "extract": [1, 2, 3],
        "transform": [2, 4, 6],
        "load": result.final_result,
    }
    assert result.states == {n: TaskStatus.SUCCEEDED for n in ("extract", "transform", "load")}
    assert all(run.attempts == 1 and run.duration is not None for run in result.tasks.values())
    assert result.duration >= 0 and result.run_id and result.pipeline == "etl"
    assert result.raise_for_status() is result


def test_dependencies_arrive_positionally_in_depends_on_order(pm: PipelineManager) -> None:
    p = Pipeline("order")
    p.task("a")(lambda: "A")
    p.task("b")(lambda: "B")
    p.task("c")(lambda: "C")
    p.task("join", depends_on=["c", "a", "b"])(lambda *xs: "".join(xs))
    assert pm.execute_pipeline(p).final_result == "CAB"


def test_several_sinks_give_a_dict(pm: PipelineManager) -> None:
    p = Pipeline("fan")
    p.task("root")(lambda: 10)
    p.task("plus", depends_on=["root"])(lambda x: x + 1)
    p.task("times", depends_on=["root"])(lambda x: x * 2)
    assert pm.execute_pipeline(p).final_result == {"plus": 11, "times": 20}


def test_independent_tasks_run_in_parallel(pm: PipelineManager) -> None:
    # Each training task waits until all three are running at once: a barrier, not a timer.
    barrier = threading.Barrier(3, timeout=10)
    p = Pipeline("parallel")
    p.task("prepare")(lambda: 1)
    for name in ("a", "b", "c"):
        p.task(name, depends_on=["prepare"])(lambda x, name=name: (barrier.wait(), name)[1])
    p.task("select", depends_on=["a", "b", "c"])(lambda *names: sorted(names))
    result = pm.execute_pipeline(p, parallel=True)
    assert result.success, result.error
    assert result.final_result == ["a", "b", "c"]


def test_sequential_runs_in_this_thread_in_dependency_order(pm: PipelineManager) -> None:
    seen: list[tuple[str, int]] = []
    p = Pipeline("seq")
    p.task("a")(lambda: seen.append(("a", threading.get_ident())))
    p.task("b", depends_on=["a"])(lambda _: seen.append(("b", threading.get_ident())))
    p.task("c", depends_on=["a"])(lambda _: seen.append(("c", threading.get_ident())))
    p.task("d", depends_on=["b", "c"])(lambda *_: seen.append(("d", threading.get_ident())))
    assert pm.execute_pipeline(p, parallel=False).success
    names = [name for name, _ in seen]
    assert names[0] == "a" and names[-1] == "d" and sorted(names[1:3]) == ["b", "c"]
    assert {ident for _, ident in seen} == {threading.get_ident()}


def _failing_pipeline(calls: list[str]) -> Pipeline:
    p = Pipeline("failing")

    def record(name: str, value: object = None):
        def run(*_: object) -> object:
            calls.append(name)
            return value

        return run

    p.task("extract")(record("extract", 1))

    @p.task("transform", depends_on=["extract"])
    def transform(x: int) -> None:
        calls.append("transform")
        helper_that_fails(x)

    p.task("load", depends_on=["transform"])(record("load"))
    p.task("report", depends_on=["load"])(record("report"))
    p.task("audit", depends_on=["extract"])(record("audit", "audited"))
    return p


def helper_that_fails(x: int) -> None:
    raise ValueError(f"row {x} is malformed")


def test_failure_skips_downstream_and_finishes_independent_branches(pm: PipelineManager) -> None:
    calls: list[str] = []
    result = pm.execute_pipeline(_failing_pipeline(calls))
    assert not result.success
    assert result.failed_task == "transform"
    assert result.states == {
        "extract": "succeeded",
        "transform": "failed",
        "audit": "succeeded",
        "load": "skipped",
        "report": "skipped",
    }
    assert sorted(calls) == ["audit", "extract", "transform"]
    assert result.results == {"extract": 1, "audit": "audited"}
    assert result.final_result is None
    assert result.tasks["report"].skipped_because == "transform"
    run = result.tasks["transform"]
    assert isinstance(run.error, ValueError) and str(run.error) == "row 1 is malformed"
    assert "in transform" in run.traceback and "in helper_that_fails" in run.traceback

    error = result.error
    assert isinstance(error, PipelineExecutionError) and isinstance(error, PipelineError)
    assert error.failed_task == "transform"
    assert error.error_message == "row 1 is malformed"
    assert error.run_id == result.run_id
    assert error.__cause__ is run.error
    assert "helper_that_fails" in error.stack_trace
    assert "task 'transform' of pipeline 'failing' failed" in str(error)
    assert "skipped downstream: load, report" in str(error)
    with pytest.raises(PipelineExecutionError):
        result.raise_for_status()


def test_debug_mode_raises(caplog) -> None:
    with PipelineManager({"debug_mode": True}) as pm, pytest.raises(PipelineExecutionError) as info:
        pm.execute_pipeline(_failing_pipeline([]))
    assert info.value.failed_task == "transform"
    assert isinstance(info.value.__cause__, ValueError)


def test_raise_on_failure_argument(pm: PipelineManager) -> None:
    with pytest.raises(PipelineExecutionError, match="row 1 is malformed"):
        pm.execute_pipeline(_failing_pipeline([]), raise_on_failure=True)
    with PipelineManager({"raise_on_failure": True}) as strict:
        result = strict.execute_pipeline(_failing_pipeline([]), raise_on_failure=False)
        assert not result.success


def test_manager_default_retries_and_task_override(pm: PipelineManager) -> None:
    attempts = {"flaky": 0, "strict": 0}

    def flaky() -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise ConnectionError("try again")
        return "ok"

    def strict() -> str:
        attempts["strict"] += 1
        raise ConnectionError("no")

    p = Pipeline("retries")
    p.task("flaky")(flaky)
    p.retry_on_failure(max_retries=0)(p.task("strict")(strict))
    with PipelineManager({"fault_tolerance": {"max_retries": 3}}) as manager:
        result = manager.execute_pipeline(p)
    assert result.tasks["flaky"].status == "succeeded" and result.tasks["flaky"].attempts == 3
    assert result.tasks["strict"].status == "failed" and result.tasks["strict"].attempts == 1
    assert attempts == {"flaky": 3, "strict": 1}


def test_task_timeout_from_config() -> None:
    release = threading.Event()
    p = Pipeline("slow")
    p.task("wait")(lambda: release.wait(30))
    with PipelineManager({"fault_tolerance": {"task_timeout": 0.3}}) as pm:
        result = pm.execute_pipeline(p)
    release.set()
    assert result.failed_task == "wait"
    assert isinstance(result.tasks["wait"].error, TaskTimeoutError)


def test_a_failing_run_leaks_no_threads(pm: PipelineManager) -> None:
    p = _failing_pipeline([])
    pm.execute_pipeline(p)  # starts the pool
    before = threading.active_count()
    for _ in range(20):
        assert not pm.execute_pipeline(p).success
    assert threading.active_count() <= before


def test_unknown_pipeline_name_and_undecorated_builder(pm: PipelineManager) -> None:
    with pytest.raises(PipelineError, match="no pipeline named 'nope'"):
        pm.execute_pipeline("nope")

    def builder() -> None: ...

    with pytest.raises(PipelineError, match=r"is a function, not a pipeline.*@pm.pipeline"):
        pm.execute_pipeline(builder)  # type: ignore[arg-type]


def test_run_by_registered_name(pm: PipelineManager) -> None:
    p = Pipeline("named")
    p.task("x")(lambda: 5)
    pm.execute_pipeline(p)
    assert pm.execute_pipeline("named").final_result == 5


def test_closed_manager_refuses_to_run() -> None:
    p = Pipeline("p")
    p.task("x")(lambda: 1)
    pm = PipelineManager()
    pm.execute_pipeline(p)
    pm.close()
    pm.close()  # twice is fine
    with pytest.raises(PipelineError, match="closed"):
        pm.execute_pipeline(p)


def test_resources_on_the_embedded_backend_warn_once(pm: PipelineManager, caplog) -> None:
    p = Pipeline("res")
    p.task("big", resource_requirements={"memory_mb": 4096})(lambda: 1)
    with caplog.at_level(logging.WARNING, logger="xlibrary.pipeline"):
        assert pm.execute_pipeline(p).success
        pm.execute_pipeline(p)
    warnings = [r.getMessage() for r in caplog.records if "resource_requirements" in r.getMessage()]
    assert len(warnings) == 1 and "take effect on dask.distributed" in warnings[0]
    assert "'big'" in warnings[0]


def test_concurrent_runs_from_many_threads(pm: PipelineManager) -> None:
    p = Pipeline("shared")
    p.task("a")(lambda: time.sleep(0.01) or 1)
    p.task("b", depends_on=["a"])(lambda x: x + 1)
    results: list[PipelineResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(pm.execute_pipeline(p))) for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 10 and all(r.final_result == 2 for r in results)
    assert len({r.run_id for r in results}) == 10

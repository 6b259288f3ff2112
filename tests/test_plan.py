"""Planning: whole-pipeline checks before any task runs, and effective policies."""

from __future__ import annotations

import pytest

from xlibrary.pipeline import (
    DependencyCycleError,
    EmptyPipelineError,
    Pipeline,
    PipelineDefinitionError,
    PipelineError,
    PipelineManager,
    RetryPolicy,
    Task,
    UnknownDependencyError,
)
from xlibrary.pipeline.plan import make_plan
from xlibrary.pipeline.settings import FaultTolerance


def test_unknown_dependency_suggests_the_closest_name() -> None:
    p = Pipeline("etl")
    p.task("extract")(lambda: 1)
    p.task("transform", depends_on=["extrct"])(lambda x: x)
    with pytest.raises(UnknownDependencyError) as info:
        p.validate()
    message = str(info.value)
    assert "unknown dependency 'extrct' of task 'transform'" in message
    assert "did you mean 'extract'?" in message


def test_cycle_is_printed() -> None:
    p = Pipeline("loop")
    p.add(Task("a", lambda x: x, ("c",)))
    p.add(Task("b", lambda x: x, ("a",)))
    p.add(Task("c", lambda x: x, ("b",)))
    with pytest.raises(DependencyCycleError) as info:
        p.validate()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert " -> ".join(cycle) in str(info.value)


def test_self_dependency_is_a_cycle() -> None:
    p = Pipeline("self")
    p.add(Task("a", lambda x: x, ("a",)))
    with pytest.raises(DependencyCycleError, match="a -> a"):
        p.validate()


def test_empty_pipeline() -> None:
    with pytest.raises(EmptyPipelineError, match=r"pipeline 'nothing' has no tasks"):
        Pipeline("nothing").validate()


def test_bad_definition_fails_before_any_task_runs() -> None:
    calls: list[str] = []
    p = Pipeline("p")
    p.task("ok")(lambda: calls.append("ok"))
    p.task("bad", depends_on=["missing"])(lambda x: calls.append("bad"))
    with PipelineManager() as pm, pytest.raises(PipelineDefinitionError):
        pm.execute_pipeline(p)
    assert calls == []
    assert issubclass(PipelineDefinitionError, PipelineError)


def test_effective_policies_come_from_the_task_or_the_manager() -> None:
    p = Pipeline("p")
    p.task("default")(lambda: 1)
    p.task("own", timeout=1)(lambda: 1)
    p.retry_on_failure(max_retries=0)(p.task("never_retry")(lambda: 1))
    plan = make_plan(p, FaultTolerance(max_retries=3, retry_delay=0.5, task_timeout=60))
    by_name = {t.name: t for t in plan.tasks}
    assert by_name["default"].retry == RetryPolicy(max_retries=3, delay=0.5)
    assert by_name["default"].timeout == 60
    assert by_name["own"].timeout == 1
    assert by_name["never_retry"].retry is None


def test_sinks_are_the_tasks_nothing_depends_on() -> None:
    p = Pipeline("p")
    p.task("a")(lambda: 1)
    p.task("b", depends_on=["a"])(lambda x: x)
    p.task("c", depends_on=["a"])(lambda x: x)
    assert make_plan(p, FaultTolerance()).sinks == ("b", "c")


def test_plan_is_cached_until_the_pipeline_changes() -> None:
    p = Pipeline("p")
    p.task("a")(lambda: 1)
    with PipelineManager() as pm:
        first = pm.plan(p)
        assert pm.plan(p) is first
        p.task("b", depends_on=["a"])(lambda x: x)
        assert [t.name for t in pm.plan(p).tasks] == ["a", "b"]

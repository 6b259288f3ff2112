"""Declaring: Pipeline, task specs, decorators, the builder form."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest

from xlibrary.pipeline import (
    DuplicateTaskError,
    Pipeline,
    PipelineDefinitionError,
    PipelineManager,
    RetryPolicy,
    Task,
    TaskSignatureError,
    task,
)


def test_decorator_returns_the_function_unchanged() -> None:
    p = Pipeline("p")

    def double(x: int) -> int:
        return x * 2

    assert p.task("double", depends_on=["source"])(double) is double
    assert double(4) == 8
    assert double.__dict__ == {}  # nothing is hung on the function


def test_task_spec_is_introspectable() -> None:
    p = Pipeline("p")

    @p.task("extract")
    def extract() -> list[int]:
        """Pull rows from the source.

        More detail here."""
        return [1]

    @p.task("load", depends_on=["extract"], timeout=5, resource_requirements={"cpu_cores": 2})
    def load(rows: list[int]) -> int:
        return len(rows)

    spec = p.get_task("load")
    assert isinstance(spec, Task)
    assert (spec.name, spec.func, spec.depends_on) == ("load", load, ("extract",))
    assert spec.timeout == 5
    assert spec.resource_requirements == {"cpu_cores": 2}
    assert p["extract"].description == "Pull rows from the source."
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    assert dataclasses.replace(spec, timeout=9).timeout == 9
    assert "load" in p and len(p) == 2


def test_tasks_come_in_topological_order_then_declaration_order() -> None:
    p = Pipeline("p")
    p.add(Task("report", lambda a, b: None, ("merge", "audit")))
    p.add(Task("merge", lambda x, y: None, ("left", "right")))
    p.add(Task("right", lambda: None))
    p.add(Task("left", lambda: None))
    p.add(Task("audit", lambda: None))
    assert [t.name for t in p.tasks] == ["right", "left", "audit", "merge", "report"]
    assert p.task_names == ("report", "merge", "right", "left", "audit")
    assert [t.name for t in p] == [t.name for t in p.tasks]


def test_bare_decorator_names_task_after_function() -> None:
    p = Pipeline("p")

    @p.task
    def extract() -> int:
        return 1

    @p.task(depends_on="extract")  # a single name is accepted as a string
    def load(x: int) -> int:
        return x

    assert p.task_names == ("extract", "load")
    assert p["load"].depends_on == ("extract",)


def test_duplicate_task_name() -> None:
    p = Pipeline("p")
    p.task("a")(lambda: 1)
    with pytest.raises(DuplicateTaskError, match=r"already has a task named 'a'.*another name"):
        p.task("a")(lambda: 2)


def test_non_callable_task() -> None:
    p = Pipeline("p")
    with pytest.raises(TaskSignatureError, match=r"task 'x': 42 is not callable"):
        p.task("x")(42)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("depends_on", "func", "fragment"),
    [
        (["a"], lambda: None, r"cannot be called with 1 result from depends_on=\['a'\]"),
        ([], lambda x: None, r"cannot be called with no results"),
        (["a"], lambda x, y: None, r"one positional parameter per dependency"),
        # a required keyword-only parameter is a pipeline parameter (tests/test_params.py)
        (["a"], lambda x, y, *, key: None, r"missing a required argument: 'y'"),
    ],
)
def test_signature_that_cannot_take_the_dependencies(depends_on, func, fragment) -> None:
    p = Pipeline("p")
    with pytest.raises(TaskSignatureError, match=fragment) as info:
        p.task("t", depends_on=depends_on)(func)
    assert "task 't'" in str(info.value)
    assert isinstance(info.value, TypeError)


def test_a_signature_read_once_per_function_still_checks_each_task() -> None:
    """One function behind many tasks is read once (signatures.py), yet each task's number of
    dependencies is checked, and a changed function is read again."""
    from xlibrary.pipeline.params import parameters_of

    def pair(x, y, *, scale=1):  # type: ignore[no-untyped-def]
        return (x + y) * scale

    p = Pipeline("p")
    p.task("a")(lambda: 1)
    p.task("b")(lambda: 2)
    for i in range(3):
        p.add(Task(f"pair_{i}", pair, ("a", "b")))
    with pytest.raises(TaskSignatureError, match=r"task 'one': .*pair\(x, y, \*, scale=1\)"):
        p.add(Task("one", pair, ("a",)))
    assert parameters_of(pair) == {"scale": 1}
    pair.__kwdefaults__ = {"scale": 3}
    assert parameters_of(pair) == {"scale": 3}
    pair.__code__ = (lambda x, *, scale=1: x).__code__
    p.add(Task("one", pair, ("a",)))  # it takes one result now
    with pytest.raises(TaskSignatureError, match="cannot be called with 2 results"):
        p.add(Task("two", pair, ("a", "b")))


def test_signatures_that_fit() -> None:
    p = Pipeline("p")
    p.task("a")(lambda: 1)
    p.task("b", depends_on=["a"])(lambda *xs: 1)
    p.task("c", depends_on=["a", "b"])(lambda x, y=0, *rest, **kw: 1)
    p.task("d", depends_on=["a"])(print)  # a builtin
    p.task("e", depends_on=["a"])(lambda x, *, key: 1)  # key: a pipeline parameter
    assert len(p) == 5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "non-empty string"),
        ({"name": "t", "depends_on": [len]}, "did you mean 'len'"),
        ({"name": "t", "depends_on": ["a", "a"]}, "lists 'a' twice"),
        ({"name": "t", "timeout": 0}, "timeout must be a number of seconds above 0"),
        ({"name": "t", "resource_requirements": {"cpu_cores": -1}}, "0 or more"),
    ],
)
def test_bad_task_options(kwargs, fragment) -> None:
    p = Pipeline("p")
    with pytest.raises(PipelineDefinitionError, match=fragment):
        p.task(**kwargs)(lambda *a: None)


def test_retry_on_failure_in_either_decorator_order() -> None:
    p = Pipeline("p")

    @p.task("below")
    @p.retry_on_failure(max_retries=2, delay=0.5, retry_on=(ConnectionError,))
    def below() -> None: ...

    @p.retry_on_failure(max_retries=4)
    @p.task("above")
    def above() -> None: ...

    assert p["below"].retry == RetryPolicy(max_retries=2, delay=0.5, retry_on=(ConnectionError,))
    assert p["above"].retry == RetryPolicy(max_retries=4)


def test_retry_policy_checks_its_arguments() -> None:
    with pytest.raises(PipelineDefinitionError, match="exception classes"):
        RetryPolicy(retry_on=("ValueError",))  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match="0 or more"):
        RetryPolicy(max_retries=-1)
    assert RetryPolicy(retry_on=KeyError).retry_on == (KeyError,)  # type: ignore[arg-type]
    policy = RetryPolicy(max_retries=5, delay=1, backoff=2, max_delay=5)
    assert [policy.delay_before(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]


def test_builder_with_module_level_task() -> None:
    pm = PipelineManager()

    @pm.pipeline("resource_optimized")
    def resource_optimized_pipeline() -> None:
        @task("cpu_intensive", resource_requirements={"cpu_cores": 4})
        def cpu_heavy_task() -> dict[str, int]:
            return {"computation_result": 1}

        @task("report", depends_on=["cpu_intensive"])
        def report(result: dict[str, int]) -> int:
            return result["computation_result"]

    assert isinstance(resource_optimized_pipeline, Pipeline)
    assert resource_optimized_pipeline.name == "resource_optimized"
    assert resource_optimized_pipeline["cpu_intensive"].resource_requirements == {"cpu_cores": 4}
    assert pm.pipelines["resource_optimized"] is resource_optimized_pipeline
    assert pm.execute_pipeline(resource_optimized_pipeline).final_result == 1
    pm.close()


def test_builder_name_defaults_to_function_name() -> None:
    pm = PipelineManager()

    @pm.pipeline
    def nightly() -> None:
        task("one")(lambda: 1)

    assert nightly.name == "nightly"
    pm.close()


def test_task_outside_a_builder_says_how_to_fix_it() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"outside a pipeline builder.*@pm.pipeline"):
        task("x")(lambda: 1)


def test_pipeline_needs_a_name() -> None:
    with pytest.raises(PipelineDefinitionError, match="non-empty string"):
        Pipeline("")


def test_options_set_on_a_function_follow_it_into_a_hand_built_task() -> None:
    p = Pipeline("p")

    def fetch() -> int:
        return 1

    p.retry_on_failure(max_retries=2)(fetch)
    p.add(Task("fetch", fetch))
    assert p["fetch"].retry == RetryPolicy(max_retries=2)
    p.add(Task("own", fetch, retry=RetryPolicy(max_retries=5)))
    assert p["own"].retry == RetryPolicy(max_retries=5)  # the spec's own value wins


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.task("t", timeout=float("nan")), "timeout"),
        (lambda p: p.retry_on_failure(delay=float("nan")), "delay"),
        (lambda p: p.retry_on_failure(delay=float("inf")), "delay"),
        (lambda p: p.retry_on_failure(backoff=float("nan")), "backoff"),
        (lambda p: p.retry_on_failure(backoff=float("inf")), "backoff"),
        (lambda p: p.retry_on_failure(max_delay=float("nan")), "max_delay"),
        (lambda p: PipelineManager().cache_result(ttl=float("nan")), "ttl"),
        (lambda p: PipelineManager().cache_result(ttl=float("inf")), "ttl"),
    ],
)
def test_task_options_must_be_finite(make, fragment) -> None:
    p = Pipeline("p")
    with pytest.raises(PipelineDefinitionError, match=fragment) as info:
        make(p)(lambda: None)
    assert "finite" in str(info.value)


def test_an_infinite_task_timeout_means_no_limit() -> None:
    p = Pipeline("p")
    p.task("slow", timeout=math.inf)(lambda: time.sleep(0.05) or "done")
    with PipelineManager({"fault_tolerance": {"task_timeout": 0.01}}) as pm:
        assert pm.plan(p).tasks[0].timeout is None  # inf overrides the manager's default
        result = pm.execute_pipeline(p)
    assert result.success, result.error
    assert result.final_result == "done"


def test_a_long_retry_backoff_is_capped_not_an_overflow() -> None:
    policy = RetryPolicy(max_retries=5000, delay=1.0, backoff=2.0, max_delay=5.0)
    assert policy.delay_before(2000) == 5


BAD_NAMES = {
    "dot": ".",
    "dotdot": "..",
    "long": "x" * 201,
    "long_once_encoded": "é" * 100,  # 100 characters, 600 bytes once percent-encoded
}
BAD_PIPELINE_NAMES = {
    "slash": "a/b",
    "backslash": "a\\b",
    "control": "a\x00b",
    "newline": "a\nb",
}


@pytest.mark.parametrize("name", BAD_PIPELINE_NAMES.values(), ids=BAD_PIPELINE_NAMES.keys())
def test_pipeline_names_are_words_of_urls_and_command_lines(name: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=r"pipeline name .*(path separator|control)"):
        Pipeline(name)
    p = Pipeline("p")
    p.task(name)(lambda: 1)  # a task's name is a label: the store encodes it
    assert p.task_names == (name,)


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_names_the_store_cannot_hold_are_refused_at_declaration(name: str) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"pipeline name .*(1 to 200|'\.' and '\.\.'|path separator|control)",
    ):
        Pipeline(name)
    p = Pipeline("p")
    with pytest.raises(
        PipelineDefinitionError,
        match=r"task name .*(1 to 200|'\.' and '\.\.'|path separator|control)",
    ):
        p.task(name)(lambda: 1)
    with pytest.raises(PipelineDefinitionError, match="task name"):
        Task(name, lambda: 1)


@pytest.mark.parametrize(
    "name", ["load data", "etl-2024.v2", "données", "x" * 200, ".hidden", "latest.json"]
)
def test_names_that_fit(name: str) -> None:
    assert Pipeline(name).name == name
    p = Pipeline("p")
    p.task(name)(lambda: 1)
    assert p.task_names == (name,)

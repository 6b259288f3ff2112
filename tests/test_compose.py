"""Pipelines made of pipelines: include(), +, namespaces, and what is checked before a run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import WHERE, manager_on
from xlibrary.pipeline import (
    DependencyCycleError,
    DuplicateTaskError,
    Pipeline,
    PipelineDefinitionError,
    PipelineManager,
    UnknownDependencyError,
)


@pytest.fixture(params=["threads", "cluster"])
def pm(request: pytest.FixtureRequest) -> Iterator[PipelineManager]:
    """A manager on threads, and one on a real LocalCluster (worker processes)."""
    with manager_on(request.param, threads=2) as manager:
        yield manager


def processing() -> Pipeline:
    p = Pipeline("processing")

    @p.task("companies")
    def companies() -> list[int]:
        return [1, 2, 3]

    @p.task("model_input", depends_on=["companies"])
    def model_input(rows: list[int]) -> list[int]:
        return [r * 10 for r in rows]

    return p


def science() -> Pipeline:
    p = Pipeline("science")

    @p.task("train", depends_on=["model_input"])  # a task of another pipeline
    def train(rows: list[int]) -> int:
        return sum(rows)

    @p.task("evaluate", depends_on=["train"])
    def evaluate(model: int) -> str:
        return f"model {model}"

    return p


def test_plus_runs_both_and_a_task_may_depend_on_the_other_pipeline(pm: PipelineManager) -> None:
    full = processing() + science()
    assert full.name == "processing+science"
    assert full.task_names == ("companies", "model_input", "train", "evaluate")
    result = pm.execute_pipeline(full)
    assert result.success, result.error
    assert result.final_result == "model 60"
    assert list(result.tasks) == ["companies", "model_input", "train", "evaluate"]


def test_include_under_namespaces_twice_renames_tasks_and_their_dependencies(
    pm: PipelineManager,
) -> None:
    sub = Pipeline("sub")

    @sub.task("load")
    def load() -> int:
        return 2

    @sub.task("square", depends_on=["load"])
    def square(x: int) -> int:
        return x * x

    @sub.task("scaled", depends_on=["square", "base"])  # "base" is the including pipeline's
    def scaled(x: int, base: int, *, alpha: int = 2) -> int:
        return x * base * alpha

    both = Pipeline("both")

    @both.task("base")
    def base() -> int:
        return 10

    both.include(sub, namespace="a", params={"alpha": 1}).include(sub, namespace="b")
    assert both["a.square"].depends_on == ("a.load",)
    assert both["b.scaled"].depends_on == ("b.square", "base")
    assert both["a.scaled"].namespace == "a"
    assert both.included_params == {"a.alpha": 1}
    result = pm.execute_pipeline(both)
    assert result.success, result.error
    assert result.final_result == {"a.scaled": 40, "b.scaled": 80}  # b: alpha's default
    assert set(result.tasks) == {"base", "a.load", "a.square", "a.scaled", "b.load"} | {
        "b.square",
        "b.scaled",
    }


def test_nested_namespaces_and_params() -> None:
    inner = Pipeline("inner")
    inner.task("t")(lambda: 1)
    middle = Pipeline("middle").include(inner, namespace="x", params={"p": 1})
    outer = Pipeline("outer").include(middle, namespace="y", params={"q": 2})
    assert outer.task_names == ("y.x.t",)
    assert outer["y.x.t"].namespace == "y.x"
    assert outer.included_params == {"y.x.p": 1, "y.q": 2}


def test_inclusion_is_live() -> None:
    sub = Pipeline("sub")
    sub.task("one")(lambda: 1)
    full = Pipeline("full").include(sub, namespace="s")
    with PipelineManager() as pm:
        assert [t.name for t in pm.plan(full).tasks] == ["s.one"]

        @sub.task("two", depends_on=["one"])
        def two(x: int) -> int:
            return x + 1

        assert full.task_names == ("s.one", "s.two")
        assert [t.name for t in pm.plan(full).tasks] == ["s.one", "s.two"]  # planned again
        assert pm.execute_pipeline(full).final_result == 2


def test_name_clashes_are_errors_that_say_how_to_fix_them() -> None:
    a, b = Pipeline("a"), Pipeline("b")
    a.task("load")(lambda: 1)
    b.task("load")(lambda: 2)
    with pytest.raises(DuplicateTaskError, match=r"two tasks named 'load'.*namespace"):
        a + b
    full = Pipeline("full").include(a, namespace="x")

    @full.task("x.load")  # declared after the inclusion: reported when the pipeline is read
    def clash() -> int:
        return 3

    with PipelineManager() as pm, pytest.raises(DuplicateTaskError, match=r"'x\.load'"):
        pm.execute_pipeline(full)


def test_cycles_across_pipelines_are_reported_before_running() -> None:
    ran: list[str] = []
    a, b = Pipeline("a"), Pipeline("b")

    @a.task("first", depends_on=["second"])
    def first(x: int) -> int:
        ran.append("first")
        return x

    @b.task("second", depends_on=["first"])
    def second(x: int) -> int:
        ran.append("second")
        return x

    with PipelineManager() as pm, pytest.raises(DependencyCycleError, match="first -> second"):
        pm.execute_pipeline(a + b)
    assert ran == []


def test_unknown_dependency_across_pipelines_has_a_did_you_mean() -> None:
    a, b = Pipeline("a"), Pipeline("b")
    a.task("model_input")(lambda: 1)

    @b.task("train", depends_on=["model_inptu"])
    def train(x: int) -> int:
        return x

    with pytest.raises(UnknownDependencyError, match="did you mean 'model_input'"):
        (a + b).validate()


def test_a_pipeline_cannot_contain_itself() -> None:
    a, b = Pipeline("a"), Pipeline("b")
    a.task("t")(lambda: 1)
    with pytest.raises(PipelineDefinitionError, match="cannot include itself"):
        a.include(a)
    b.include(a, namespace="n")
    with pytest.raises(PipelineDefinitionError, match=r"'b' already includes 'a'"):
        a.include(b)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"namespace": ""}, "non-empty name"),
        ({"namespace": "a.b"}, "without '.'"),
        ({"params": [1]}, "dict of parameter values"),
    ],
)
def test_bad_inclusions(kwargs: dict[str, object], fragment: str) -> None:
    other = Pipeline("other")
    with pytest.raises(PipelineDefinitionError, match=fragment):
        Pipeline("p").include(other, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match="takes a Pipeline"):
        Pipeline("p").include("other")  # type: ignore[arg-type]


def test_adding_a_non_pipeline_is_a_type_error_and_sum_works() -> None:
    a, b, c = Pipeline("a"), Pipeline("b"), Pipeline("c")
    a.task("x")(lambda: 1)
    b.task("y")(lambda: 2)
    c.task("z")(lambda: 3)
    with pytest.raises(TypeError):
        a + 1  # type: ignore[operator]
    assert sum([a, b, c]).task_names == ("x", "y", "z")  # type: ignore[attr-defined]


@WHERE
def test_a_sub_pipeline_included_twice_runs_with_its_own_parameters(tmp_path, where) -> None:
    sub = Pipeline("model", params={"k": 1})

    @sub.task("fit")
    def fit(*, k: int) -> int:
        return k

    top = Pipeline("two_models")
    top.include(sub, namespace="a")
    top.include(sub, namespace="b", params={"k": 5})
    with manager_on(where, {"store": {"url": str(tmp_path)}}) as pm:
        assert pm.execute_pipeline(top).final_result == {"a.fit": 1, "b.fit": 5}
        by_namespace = pm.execute_pipeline(top, params={"a.k": 7})
        assert by_namespace.final_result == {"a.fit": 7, "b.fit": 5}
        everywhere = pm.execute_pipeline(top, params={"k": 9})  # a run's value serves all
        assert everywhere.final_result == {"a.fit": 9, "b.fit": 9}
        assert everywhere.tasks["b.fit"].params == {"k": 9}

"""Named outputs: outputs=[...] and depends_on=["split.X_train"]."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WHERE, manager_on
from xlibrary.pipeline import (
    DuplicateTaskError,
    Pipeline,
    PipelineDefinitionError,
    PipelineManager,
    TaskOutputError,
    TaskStatus,
    UnknownDependencyError,
)
from xlibrary.pipeline.pictures import to_dot, to_svg

OUTPUTS = ["X_train", "X_test", "y_train", "y_test"]


@pytest.fixture(params=["threads", "cluster"])
def pm(request: pytest.FixtureRequest) -> Iterator[PipelineManager]:
    """A manager on threads, and one on a real LocalCluster (worker processes)."""
    with manager_on(request.param, threads=2) as manager:
        yield manager


def ml(returned: Any, name: str = "ml") -> Pipeline:
    p = Pipeline(name)

    @p.task("split", outputs=OUTPUTS)
    def split() -> Any:
        return returned

    @p.task("train", depends_on=["split.X_train", "split.y_train"])
    def train(x: list[int], y: list[int]) -> int:
        return sum(x) * 100 + sum(y)

    @p.task("evaluate", depends_on=["train", "split.X_test", "split.y_test"])
    def evaluate(model: int, x: list[int], y: list[int]) -> tuple[int, int, int]:
        return model, sum(x), sum(y)

    return p


PARTS = ([1, 2], [3], [10, 20], [30])


@pytest.mark.parametrize(
    "returned", [PARTS, list(PARTS), dict(zip(OUTPUTS, PARTS, strict=True))], ids=str.__name__
)
def test_each_output_is_a_dependency_of_its_own(pm: PipelineManager, returned: Any) -> None:
    p = ml(returned)
    result = pm.execute_pipeline(p)
    assert result.success, result.error
    assert result.final_result == (330, 3, 30)
    assert result.states["split.X_train"] is TaskStatus.SUCCEEDED


def test_output_tasks_follow_their_task_and_only_the_used_ones_exist() -> None:
    p = Pipeline("p")

    @p.task("split", outputs=["a", "b", "c"])
    def split() -> tuple[int, int, int]:
        return 1, 2, 3

    @p.task("use", depends_on=["split.c", "split.a"])
    def use(c: int, a: int) -> int:
        return c - a

    assert p.task_names == ("split", "split.a", "split.c", "use")
    assert p["split.c"].depends_on == ("split",)
    with PipelineManager() as pm:
        result = pm.execute_pipeline(p)
    assert result.final_result == 2
    assert result.results["split"] == (1, 2, 3)  # the task's own result, as returned
    assert result.results["split.a"] == 1


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        ((1, 2, 3), "declares 4 outputs .* and returned 3 values"),
        ({"X_train": 1, "X_test": 2, "y_train": 3}, "mapping without 'y_test'"),
        (42, "returned a int; return a tuple of 4 values"),
        ("abcd", "returned a str"),
    ],
)
def test_a_result_that_does_not_fit_fails_its_task_once(
    pm: PipelineManager, returned: Any, fragment: str
) -> None:
    p = ml(returned, name="misfit")
    p.retry_on_failure(max_retries=3)(p["split"].func)
    result = pm.execute_pipeline(p)
    assert not result.success
    assert result.failed_task == "split"
    split = result.tasks["split"]
    assert split.error_type == "xlibrary.pipeline.TaskOutputError"
    assert split.attempts == 1  # the same function returns the same: not retried
    assert result.error is not None
    assert isinstance(result.error.exception, TaskOutputError)
    assert re.search(fragment, str(result.error)), str(result.error)
    assert result.states["train"] is TaskStatus.SKIPPED
    assert result.tasks["split.X_train"].skipped_because == "split"


def test_unknown_outputs_are_reported_before_running() -> None:
    p = Pipeline("p")

    @p.task("split", outputs=["X_train", "X_test"])
    def split() -> tuple[int, int]:
        return 1, 2

    @p.task("train", depends_on=["split.X_trian"])
    def train(x: int) -> int:
        return x

    with pytest.raises(UnknownDependencyError, match="no output 'X_trian'; did you mean 'X_train'"):
        p.validate()

    q = Pipeline("q")
    q.task("split")(lambda: (1, 2))

    @q.task("train", depends_on=["split.X_train"])
    def train2(x: int) -> int:
        return x

    with pytest.raises(UnknownDependencyError, match="'split' declares no named outputs"):
        q.validate()


def test_a_task_named_like_an_output_is_a_clash() -> None:
    p = Pipeline("p")
    p.task("split", outputs=["a", "b"])(lambda: (1, 2))
    p.task("split.a")(lambda: 3)
    with pytest.raises(DuplicateTaskError, match="has the name of output 'a' of task 'split'"):
        p.validate()


@pytest.mark.parametrize(
    ("outputs", "fragment"),
    [
        ([], "names no output"),
        (["a.b"], "cannot hold a '.'"),
        (["a", "a"], "twice"),
        ([1], "non-empty strings"),
        ({"a": 1}, "list of names"),
    ],
)
def test_bad_outputs_are_refused_at_declaration(outputs: Any, fragment: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=fragment):
        Pipeline("p").task("t", outputs=outputs)(lambda: 1)


def test_cache_keys_through_outputs_are_known_before_the_run(tmp_path: Any) -> None:
    calls: list[str] = []
    p = Pipeline("cached_outputs")

    @p.task("split", outputs=["a", "b"])
    def split(*, first: int = 1) -> tuple[int, int]:  # a parameter: it reads what keys see
        calls.append("split")
        return first, 2

    @p.task("use_a", depends_on=["split.a"])
    def use_a(a: int) -> int:
        calls.append("use_a")
        return a * 10

    @p.task("use_b", depends_on=["split.b"])
    def use_b(b: int) -> int:
        calls.append("use_b")
        return b * 10

    config = {"caching": {"cache_results": True}, "store": {"url": str(tmp_path)}}
    with PipelineManager(config) as pm:
        first = pm.execute_pipeline(p)
        assert first.final_result == {"use_a": 10, "use_b": 20}
        second = pm.execute_pipeline(p)
        explained = pm.explain_cache(p)
    assert second.final_result == {"use_a": 10, "use_b": 20}
    assert sorted(calls) == ["split", "use_a", "use_b"]  # the second run ran nothing
    assert second.states["use_a"] is TaskStatus.CACHED
    assert explained["use_a"].status == "hit"
    assert explained["split.a"].status == "not cached"  # part of split's entry, not its own


def test_a_task_switched_to_another_output_misses_the_cache(tmp_path: Any) -> None:
    def times_ten(x: int) -> int:
        return x * 10

    def pipeline(output: str) -> Pipeline:
        p = Pipeline("switched")
        p.task("split", outputs=["a", "b"])(lambda *, first=1: (first, 2))
        p.task("use", depends_on=[f"split.{output}"])(times_ten)
        return p

    config = {"caching": {"cache_results": True}, "store": {"url": str(tmp_path)}}
    with PipelineManager(config) as pm:
        assert pm.execute_pipeline(pipeline("a")).final_result == 10
        again = pm.execute_pipeline(pipeline("b"))
    assert again.states["split"] is TaskStatus.CACHED
    assert again.states["use"] is TaskStatus.SUCCEEDED  # same code, other input: it ran
    assert again.final_result == 20


def test_outputs_of_an_included_pipeline_are_namespaced() -> None:
    inner = ml(PARTS, name="inner")
    full = Pipeline("full").include(inner, namespace="m1").include(inner, namespace="m2")
    assert full["m1.train"].depends_on == ("m1.split.X_train", "m1.split.y_train")
    assert "m2.split.X_test" in full.task_names
    with PipelineManager() as pm:
        result = pm.execute_pipeline(full)
    assert result.final_result == {"m1.evaluate": (330, 3, 30), "m2.evaluate": (330, 3, 30)}


def test_pictures_show_the_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    p = ml(PARTS, name="pictured")
    dot = to_dot(p)
    assert '"split" [label="split\\n→ X_train, X_test, y_train, y_test"' in dot
    assert '"split.X_train" [label="X_train"' in dot and "dashed" in dot
    assert '"split.X_train" -> "train";' in dot
    if shutil.which("dot") is not None:  # Graphviz draws the dashed output boxes
        svg = to_svg(p)
        assert "→ X_train, X_test, y_train, y_test" in svg and "stroke-dasharray" in svg
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)  # our own layout
    svg = to_svg(p)
    assert "→ X_train, X_test, y_train, y_test" in svg
    assert svg.count('stroke-dasharray="4 3"') == 4  # one per output used


def test_retry_and_resume_pick_outputs_from_the_saved_result(tmp_path: Any) -> None:
    fixed = tmp_path / "fixed"
    calls: list[str] = []
    p = Pipeline("recover_outputs")

    @p.task("split", outputs=["a", "b"])
    def split(*, first: int = 1) -> tuple[int, int]:  # a parameter: it reads what keys see
        calls.append("split")
        return first, 2

    @p.task("use", depends_on=["split.b"])
    def use(b: int) -> int:
        calls.append("use")
        if not fixed.exists():
            raise RuntimeError("not yet")
        return b * 10

    config = {"save_intermediate_results": True, "store": {"url": str(tmp_path / "store")}}
    with PipelineManager(config) as pm:
        assert pm.execute_pipeline(p).failed_task == "use"
        fixed.touch()
        retried = pm.retry_failed_task("recover_outputs", "use")
        fixed.unlink()
        assert pm.execute_pipeline(p).failed_task == "use"
        fixed.touch()
        resumed = pm.resume(p)
    assert retried.success, retried.error
    assert resumed.success, resumed.error
    assert retried.final_result == resumed.final_result == 20
    assert retried.tasks["split"].source is not None  # restored, not run again
    assert calls.count("split") == 2  # the two full runs only


@WHERE
def test_each_output_can_have_its_own_save_to(tmp_path: Path, where: str) -> None:
    import pandas as pd

    p = Pipeline("split_saved")

    @p.task(
        "split",
        outputs=["train", "test"],
        save_to={"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.csv")},
    )
    def split() -> tuple[pd.DataFrame, pd.DataFrame]:
        frame = pd.DataFrame({"x": range(10)})
        return frame.iloc[:8], frame.iloc[8:]

    @p.task("size", depends_on=["split.train"])
    def size(train: pd.DataFrame) -> int:
        return len(train)

    with manager_on(where, {"store": {"url": str(tmp_path / "store")}}) as pm:
        result = pm.execute_pipeline(p)
    assert result.success, result.error
    assert "split.test" in result.tasks  # saved, so an output task though nothing uses it
    assert pd.read_parquet(tmp_path / "train.parquet")["x"].tolist() == list(range(8))
    assert pd.read_csv(tmp_path / "test.csv")["x"].tolist() == [8, 9]
    with pytest.raises(PipelineDefinitionError, match=r"save_to names 'tset'.*did you mean 'test'"):
        p.task("bad", outputs=["train", "test"], save_to={"tset": "x.csv"})(lambda: (1, 2))
    with pytest.raises(PipelineDefinitionError, match="needs outputs="):
        p.task("bad2", save_to={"train": "x.csv"})(lambda: (1, 2))

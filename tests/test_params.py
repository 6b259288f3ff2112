"""Run-time parameters: a task function's keyword-only parameters, their values from the
function, the pipeline and the run, checked before any task runs, in cache keys and records."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Calls
from xlibrary.pipeline import (
    CachePolicy,
    ConfigError,
    Pipeline,
    PipelineManager,
    RunStatus,
    Task,
    task,
)


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PipelineManager]:
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as manager:
        yield manager


@pytest.fixture
def cached_pm(tmp_path: Path) -> Iterator[PipelineManager]:
    config = {"store": {"url": str(tmp_path / "store")}, "caching": {"cache_results": True}}
    with PipelineManager(config) as manager:
        yield manager


def _split(calls: Calls | None = None, params: dict[str, Any] | None = None) -> Pipeline:
    p = Pipeline("split", params=params)

    @p.task("rows", cache=CachePolicy(key="rows"))
    def rows() -> list[int]:
        if calls:
            calls("rows")
        return list(range(10))

    @p.task("split", depends_on=["rows"])
    def split(data: list[int], *, test_size: float = 0.2, random_state: int = 3) -> dict:
        if calls:
            calls("split")
        cut = int(len(data) * (1 - test_size))
        return {"train": data[:cut], "test": data[cut:], "seed": random_state}

    @p.task("count", depends_on=["rows"])
    def count(data: list[int]) -> int:
        if calls:
            calls("count")
        return len(data)

    @p.task("score", depends_on=["split", "count"])
    def score(parts: dict, n: int, *, scale: float = 1.0) -> float:
        if calls:
            calls("score")
        return len(parts["test"]) / n * scale

    return p


def test_values_come_from_the_default_then_the_pipeline_then_the_run(pm: PipelineManager) -> None:
    assert pm.execute_pipeline(_split()).results["split"]["test"] == [8, 9]
    assert pm.execute_pipeline(_split()).results["split"]["seed"] == 3
    from_pipeline = pm.execute_pipeline(_split(params={"test_size": 0.5}))
    assert from_pipeline.results["split"]["test"] == [5, 6, 7, 8, 9]
    from_run = pm.execute_pipeline(
        _split(params={"test_size": 0.5}), params={"test_size": 0.3, "scale": 10.0}
    )
    assert from_run.results["split"]["test"] == [7, 8, 9]
    assert from_run.final_result == pytest.approx(3.0)


def test_a_required_parameter_is_not_a_signature_error_and_its_value_is_asked_for(
    pm: PipelineManager,
) -> None:
    calls = Calls()
    p = Pipeline("required")
    p.task("a")(lambda: 1)

    @p.task("b", depends_on=["a"])
    def b(x: int, *, threshold: float) -> bool:
        calls("b")
        return x > threshold

    p.add(Task("c", lambda x, *, threshold: x, ("a",)))
    with pytest.raises(ConfigError) as info:
        pm.execute_pipeline(p)
    message = str(info.value)
    assert "'threshold'" in message and "'b'" in message and "'c'" in message
    assert "params=" in message
    assert calls.counts == {}  # checked before any task runs
    assert pm.execute_pipeline(p, params={"threshold": 0.5}).results["b"] is True


def test_an_unknown_parameter_is_a_config_error_naming_the_closest(pm: PipelineManager) -> None:
    calls = Calls()
    p = _split(calls)
    with pytest.raises(ConfigError, match=r"parameter 'test_sise'.*did you mean 'test_size'"):
        pm.execute_pipeline(p, params={"test_sise": 0.3})
    with pytest.raises(ConfigError, match=r"unknown parameter 'random_stat'"):
        pm.execute_pipeline(_split(params={"random_stat": 1}))
    with pytest.raises(ConfigError, match=r"no task of pipeline 'plain' takes parameters"):
        plain = Pipeline("plain")
        plain.task("t")(lambda: 1)
        pm.execute_pipeline(plain, params={"x": 1})
    with pytest.raises(ConfigError, match="params must be a dict"):
        pm.execute_pipeline(p, params=[("test_size", 0.3)])  # type: ignore[arg-type]
    assert calls.counts == {}


def test_submit_checks_parameters_before_it_returns(pm: PipelineManager) -> None:
    calls = Calls()
    with pytest.raises(ConfigError, match="did you mean 'scale'"):
        pm.submit(_split(calls), params={"scal": 2})
    handle = pm.submit(_split(calls), params={"scale": 2.0})
    assert handle.result(timeout=30).final_result == pytest.approx(0.4)
    assert handle.describe().params == {"test_size": 0.2, "random_state": 3, "scale": 2.0}


def test_builders_and_the_module_level_task_take_keyword_only_parameters(
    pm: PipelineManager,
) -> None:
    @pm.pipeline("built")
    def built() -> None:
        @task("greet")
        def greet(*, name: str = "world") -> str:
            return f"hello {name}"

    assert pm.execute_pipeline("built").final_result == "hello world"
    assert pm.execute_pipeline("built", params={"name": "you"}).final_result == "hello you"


def test_a_parameter_change_reruns_the_tasks_using_it_and_their_dependants(
    cached_pm: PipelineManager,
) -> None:
    calls = Calls()
    p = _split(calls)
    first = cached_pm.execute_pipeline(p)
    assert calls.counts == {"rows": 1, "split": 1, "count": 1, "score": 1}
    same = cached_pm.execute_pipeline(p)
    assert calls.counts == {"rows": 1, "split": 1, "count": 1, "score": 1}
    assert same.final_result == first.final_result
    changed = cached_pm.execute_pipeline(p, params={"test_size": 0.3})
    assert calls.counts == {"rows": 1, "split": 2, "count": 1, "score": 2}
    assert changed.states == {
        "rows": "cached",
        "split": "succeeded",
        "count": "cached",
        "score": "succeeded",
    }
    assert changed.final_result == pytest.approx(0.3)
    # the value that gave an entry before gives it again
    back = cached_pm.execute_pipeline(p, params={"test_size": 0.2})
    assert calls.counts["split"] == 2 and back.final_result == first.final_result


def test_explain_names_the_parameter_that_changed(cached_pm: PipelineManager) -> None:
    p = _split()
    cached_pm.execute_pipeline(p)
    explained = cached_pm.explain_cache(p, params={"test_size": 0.3})
    assert explained["split"].status == "miss"
    assert "test_size: 0.2 → 0.3" in explained["split"].reason
    assert explained["count"].status == "hit"
    assert cached_pm.explain_cache(p)["split"].status == "hit"


def test_a_source_with_only_parameters_is_cached_by_them(cached_pm: PipelineManager) -> None:
    calls = Calls()
    p = Pipeline("generated")

    @p.task("make")
    def make(*, n: int = 3) -> list[int]:
        calls("make")
        return list(range(n))

    assert cached_pm.execute_pipeline(p).final_result == [0, 1, 2]
    assert cached_pm.execute_pipeline(p).states == {"make": "cached"}
    assert cached_pm.execute_pipeline(p, params={"n": 2}).final_result == [0, 1]
    assert calls.counts == {"make": 2}


def test_a_value_that_cannot_be_hashed_leaves_the_task_uncached(
    cached_pm: PipelineManager,
) -> None:
    p = Pipeline("lock")
    p.task("a")(lambda: 1)

    @p.task("b", depends_on=["a"])
    def b(x: int, *, lock: Any = None) -> int:
        return x

    explained = cached_pm.explain_cache(p, params={"lock": threading.Lock()})
    assert explained["b"].status == "not cached"
    assert "parameter 'lock'" in explained["b"].reason
    result = cached_pm.execute_pipeline(p, params={"lock": threading.Lock()})
    assert result.final_result == 1


def test_params_are_in_the_record_status_and_the_tables(pm: PipelineManager) -> None:
    p = _split()
    result = pm.execute_pipeline(p, params={"test_size": 0.3})
    assert result.record.params == {"test_size": 0.3, "random_state": 3, "scale": 1.0}
    assert result.tasks["split"].params == {"test_size": 0.3, "random_state": 3}
    assert result.tasks["count"].params is None
    stored = pm.store.read_record("split", result.run_id)
    assert stored.params == result.record.params
    assert stored.tasks["score"].params == {"scale": 1.0}
    status = pm.get_pipeline_status(result.run_id)
    assert isinstance(status, RunStatus)
    assert status.params == result.record.params
    assert status["params"]["test_size"] == 0.3
    assert status["tasks"]["split"]["params"] == {"test_size": 0.3, "random_state": 3}
    assert "params" not in status["tasks"]["count"]
    from xlibrary.pipeline.present import result_html, text_table

    assert "test_size=0.3" in text_table(result)
    assert "test_size=0.3" in result_html(result)


def test_a_record_without_params_keeps_none_in_its_json(pm: PipelineManager) -> None:
    p = Pipeline("none")
    p.task("t")(lambda: 1)
    result = pm.execute_pipeline(p)
    data = result.record.to_json()
    assert "params" not in data and "params" not in data["tasks"]["t"]
    assert "params" not in pm.get_pipeline_status(result.run_id).to_json()


def test_a_value_json_cannot_hold_is_recorded_as_its_repr(pm: PipelineManager) -> None:
    p = Pipeline("objects")

    @p.task("t")
    def t(*, when: object = None) -> str:
        return str(when)

    result = pm.execute_pipeline(p, params={"when": {1, 2}})
    stored = pm.store.read_record("objects", result.run_id)
    assert stored.params == {"when": "{1, 2}"}


def test_a_retry_uses_the_values_of_the_run_it_retries(tmp_path: Path) -> None:
    config = {"store": {"url": str(tmp_path / "store")}, "save_intermediate_results": True}
    fail = [True]
    p = Pipeline("retried")
    p.task("a")(lambda: 2)

    @p.task("b", depends_on=["a"])
    def b(x: int, *, times: int = 1) -> int:
        if fail[0]:
            raise RuntimeError("flaky")
        return x * times

    with PipelineManager(config) as pm:
        failed = pm.execute_pipeline(p, params={"times": 5})
        assert not failed.success
        fail[0] = False
        assert pm.retry_failed_task(pipeline=p, task_name="b").final_result == 10
    with PipelineManager(config) as other:  # another process: the record's values
        fail[0] = True
        failed = other.execute_pipeline(p, params={"times": 7})
        fail[0] = False
    with PipelineManager(config) as other:
        assert other.resume(p, run_id=failed.run_id).final_result == 14


def test_params_reach_tasks_on_a_local_cluster(tmp_path: Path) -> None:
    config = {
        "distributed_mode": True,
        "worker_nodes": 1,
        "store": {"url": str(tmp_path / "store")},
    }
    with PipelineManager(config) as pm:
        result = pm.execute_pipeline(_split(), params={"test_size": 0.5, "scale": 2.0})
        assert result.success, result.error
        assert result.final_result == pytest.approx(1.0)
        assert result.tasks["split"].params == {"test_size": 0.5, "random_state": 3}


# -- the command line and the web API ----------------------------------------------------------

JOB = """
from xlibrary.pipeline import Pipeline

job = Pipeline("job")
job.task("rows")(lambda *, n=10: list(range(n)))

@job.task("split", depends_on=["rows"])
def split(rows, *, test_size=0.2, label="default", tags=()):
    cut = int(len(rows) * (1 - test_size))
    return {"test": len(rows) - cut, "label": label, "tags": list(tags)}
"""


def test_the_command_line_takes_params_a_params_file_and_refresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from xlibrary.pipeline.cli import main

    job = tmp_path / "job.py"
    job.write_text(JOB)
    params_file = tmp_path / "parameters.yml"
    params_file.write_text("test_size: 0.5\nlabel: from the file\n")
    config = tmp_path / "config.json"
    store = str(tmp_path / "store")
    config.write_text(json.dumps({"store": {"url": store}, "caching": {"cache_results": True}}))
    args = ["run", str(job), "--config", str(config), "--params", str(params_file)]
    args += ["--param", "test_size=0.3", "--param", "tags=[a, b]"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert json.loads(out.split("final result:\n")[1]) == {
        "test": 3,
        "label": "from the file",
        "tags": ["a", "b"],
    }
    assert "params: n=10, test_size=0.3, label='from the file', tags=['a', 'b']" in out
    run_id = out.split("(run ")[1].split(")")[0]
    assert main(["runs", "show", run_id, "--store", store]) == 0
    shown = capsys.readouterr().out
    assert "params    n=10, test_size=0.3" in shown
    assert "test_size=0.3" in shown.split("tasks:")[1]  # the split task's row
    assert main(args) == 0
    assert "split  cached" in capsys.readouterr().out.replace("   ", " ")
    assert main([*args, "--refresh"]) == 0
    assert "split  succeeded" in capsys.readouterr().out.replace("   ", " ")
    assert main([*args, "--refresh", "split"]) == 0
    assert "rows   cached" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--param", "test_sise=0.3"], "did you mean 'test_size'"),
        (["--param", "novalue"], "--param takes NAME=VALUE"),
        (["--params", "missing.yml"], "cannot read the parameters file"),
        (["--refresh", "splt"], "did you mean 'split'"),
    ],
)
def test_bad_params_on_the_command_line_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    from xlibrary.pipeline.cli import main

    job = tmp_path / "job.py"
    job.write_text(JOB)
    assert main(["run", str(job), "--store", str(tmp_path / "s"), *extra]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_a_params_file_must_map_names_to_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xlibrary.pipeline.cli import main

    job = tmp_path / "job.py"
    job.write_text(JOB)
    listed = tmp_path / "list.yml"
    listed.write_text("- 1\n- 2\n")
    assert main(["run", str(job), "--params", str(listed)]) == 2
    assert "must map parameter names to values" in capsys.readouterr().err


def test_the_web_api_takes_params_in_the_run_body(tmp_path: Path) -> None:
    import httpx
    from fastapi import FastAPI

    from tests.test_fastapi import Server, wait_done
    from xlibrary.pipeline.integrations.fastapi import create_router

    pm = PipelineManager({"store": {"url": str(tmp_path / "store")}})
    app = FastAPI()
    app.include_router(create_router(pm, pipelines=[_split()]), prefix="/api")
    with Server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        started = client.post("/api/pipelines/split/runs", json={"params": {"test_size": 0.5}})
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        status = wait_done(client, run_id)
        assert status["params"] == {"test_size": 0.5, "random_state": 3, "scale": 1.0}
        assert status["tasks"]["split"]["params"] == {"test_size": 0.5, "random_state": 3}
        assert client.get(f"/api/runs/{run_id}/result").json()["final_result"] == 0.5
        bad = client.post("/api/pipelines/split/runs", json={"params": {"test_sise": 0.5}})
        assert bad.status_code == 422
        assert "did you mean 'test_size'" in bad.json()["detail"]
        listed = client.get("/api/pipelines").json()
        assert listed[0]["last_run"]["params"]["test_size"] == 0.5
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert "params" in schema["RunRequest"]["properties"]
    pm.close()


def test_a_namespaced_task_looks_its_parameter_up_namespaced_first() -> None:
    from xlibrary.pipeline.params import TaskParams, bind

    tasks = [
        TaskParams(task="ds.train", declared={"alpha": 1.0}, namespace="ds"),
        TaskParams(task="other.train", declared={"alpha": 1.0}, namespace="other"),
        TaskParams(task="train", declared={"alpha": 1.0}),
    ]
    bound = bind(tasks, {"ds.alpha": 2.0}, {"alpha": 3.0}, pipeline="p")
    # the run's "alpha" (a later source) wins over the pipeline's "ds.alpha"
    assert bound.tasks == {
        "ds.train": {"alpha": 3.0},
        "other.train": {"alpha": 3.0},
        "train": {"alpha": 3.0},
    }
    bound = bind(tasks, {"alpha": 3.0, "ds.alpha": 2.0}, pipeline="p")
    assert bound.tasks["ds.train"] == {"alpha": 2.0} and bound.tasks["other.train"] == {
        "alpha": 3.0
    }
    assert bound.values == {"ds.alpha": 2.0, "alpha": 3.0}
    with pytest.raises(ConfigError, match=r"did you mean 'ds\.alpha'"):
        bind(tasks, {"ds.alhpa": 1}, pipeline="p")

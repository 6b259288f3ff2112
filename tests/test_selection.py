"""Running part of a pipeline: targets=, from_tasks=, tags=, on threads and a LocalCluster;
the not selected tasks in results, status, records, tables and pictures; the command line's
--target/--from/--tag, the web API's body, and the spaceflights example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import WHERE, manager_on
from tests.test_fastapi import Server
from xlibrary.pipeline import (
    Pipeline,
    PipelineManager,
    RunRecord,
    SelectionError,
    TaskStatus,
)
from xlibrary.pipeline.cli import main
from xlibrary.pipeline.integrations.fastapi import create_router
from xlibrary.pipeline.pictures import to_dot
from xlibrary.pipeline.present import text_table

ROOT = Path(__file__).resolve().parent.parent
NOT_SELECTED = TaskStatus.NOT_SELECTED


def flights(log: Path, name: str = "flights") -> Pipeline:
    """Three sub-pipelines, as in spaceflights: each task appends its name to ``log``."""

    def mark(task: str) -> None:
        with log.open("a") as handle:
            handle.write(task + "\n")

    processing = Pipeline("processing")

    @processing.task("raw", tags=["processing"])
    def raw(*, size: int = 4) -> list[int]:  # a parameter: what it reads is visible to keys
        mark("raw")
        return list(range(1, size + 1))

    @processing.task("model_input", depends_on=["raw"], tags=["processing"])
    def model_input(rows: list[int]) -> list[int]:
        mark("model_input")
        return [r * 10 for r in rows]

    science = Pipeline("science")

    @science.task("split", depends_on=["model_input"], outputs=["train", "test"], tags="ds")
    def split(rows: list[int]) -> tuple[list[int], list[int]]:
        mark("split")
        return rows[:3], rows[3:]

    @science.task("train_model", depends_on=["split.train"], tags="ds")
    def train_model(rows: list[int]) -> int:
        mark("train_model")
        return sum(rows)

    @science.task("evaluate_model", depends_on=["train_model", "split.test"], tags="ds")
    def evaluate_model(model: int, test: list[int]) -> str:
        mark("evaluate_model")
        return f"{model}/{sum(test)}"

    reporting = Pipeline("reporting")

    @reporting.task("report", depends_on=["model_input"], tags=["reporting"])
    def report(rows: list[int]) -> int:
        mark("report")
        return len(rows)

    return Pipeline(name).include(processing).include(science).include(reporting)


def calls(log: Path) -> list[str]:
    return sorted(log.read_text().split()) if log.exists() else []


@pytest.fixture(params=["threads", "cluster"])
def pm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PipelineManager]:
    """Managers that save their results in a store of the test's own: on threads, and on a
    real LocalCluster (worker processes)."""
    config = {"save_intermediate_results": True, "store": {"url": str(tmp_path / "store")}}
    with manager_on(request.param, config, threads=2) as manager:
        yield manager


def test_targets_run_only_what_they_need(pm: PipelineManager, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    result = pm.execute_pipeline(flights(log), targets=["train_model"])
    assert result.success, result.error
    assert result.final_result == 60
    assert calls(log) == ["model_input", "raw", "split", "train_model"]
    assert result.states["evaluate_model"] is NOT_SELECTED
    assert result.states["report"] is NOT_SELECTED
    assert result.states["split.test"] is NOT_SELECTED
    assert result.tasks["report"].reason == "not selected"
    assert result.sinks == ("train_model",)
    both = pm.execute_pipeline(flights(log), targets=["report", "train_model"])
    assert both.final_result == {"report": 4, "train_model": 60}


def test_from_tasks_takes_its_inputs_from_the_latest_run(
    pm: PipelineManager, tmp_path: Path
) -> None:
    log = tmp_path / "calls"
    first = pm.execute_pipeline(flights(log))
    assert first.success, first.error
    log.unlink()
    result = pm.execute_pipeline(flights(log), from_tasks=["train_model"])
    assert result.success, result.error
    assert calls(log) == ["evaluate_model", "train_model"]
    assert result.final_result == "60/40"
    split = result.tasks["split"]
    assert split.status is TaskStatus.CACHED
    assert split.source == f"run:{first.run_id}"  # where the input came from
    assert result.states["split.train"] is TaskStatus.SUCCEEDED  # picked from it
    for name in ("raw", "model_input", "report"):
        assert result.states[name] is NOT_SELECTED, name


@WHERE
def test_from_tasks_runs_them_even_when_cached_and_takes_inputs_from_the_cache(
    tmp_path: Path, where: str
) -> None:
    log = tmp_path / "calls"
    config = {"caching": {"cache_results": True}, "store": {"url": str(tmp_path / "store")}}
    with manager_on(where, config) as pm:
        pm.execute_pipeline(flights(log))  # caches every task; saves nothing
        log.unlink()
        result = pm.execute_pipeline(flights(log), from_tasks=["split"])
    assert result.success, result.error
    assert calls(log) == ["evaluate_model", "split", "train_model"]  # forced to run
    assert result.tasks["model_input"].source.startswith("cache:")
    assert result.states["raw"] is NOT_SELECTED


def test_an_input_without_a_source_fails_before_anything_runs(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as pm:
        with pytest.raises(SelectionError, match=r"need the result of 'model_input'") as caught:
            pm.execute_pipeline(flights(log), from_tasks=["split"])
        with pytest.raises(SelectionError, match="'model_input'"):
            pm.submit(flights(log), tags=["reporting"])
        pm.execute_pipeline(flights(log))  # a run that saves nothing does not help
        log.unlink()
        with pytest.raises(SelectionError, match="save_intermediate_results"):
            pm.execute_pipeline(flights(log), from_tasks=["split"])
    assert "save_intermediate_results: True" in str(caught.value)
    assert calls(log) == []


def test_tags_select_the_tasks_declared_with_them(pm: PipelineManager, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    pm.execute_pipeline(flights(log))
    log.unlink()
    result = pm.execute_pipeline(flights(log), tags=["reporting"])
    assert result.success, result.error
    assert calls(log) == ["report"]
    assert result.final_result == 4
    assert result.tasks["model_input"].source is not None
    assert result.states["train_model"] is NOT_SELECTED


def test_options_combine_as_kedro_from_to_and_tags(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    with PipelineManager({"save_intermediate_results": True}) as pm:
        pm.execute_pipeline(flights(log, "combined"))
        log.unlink()
        result = pm.execute_pipeline(
            flights(log, "combined"), from_tasks=["model_input"], targets=["train_model"]
        )
        assert calls(log) == ["model_input", "split", "train_model"]
        assert result.states["report"] is NOT_SELECTED
        log.unlink()
        tagged = pm.execute_pipeline(flights(log, "combined"), tags=["ds", "reporting"])
        assert calls(log) == ["evaluate_model", "report", "split", "train_model"]
        assert tagged.final_result == {"evaluate_model": "60/40", "report": 4}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"targets": ["train_mdoel"]}, "no task 'train_mdoel'; did you mean 'train_model'"),
        ({"from_tasks": "nope"}, "from_tasks: pipeline 'flights' has no task 'nope'"),
        ({"tags": ["reportng"]}, "no task .* has the tag 'reportng'; did you mean 'reporting'"),
        ({"targets": ["raw"], "from_tasks": ["report"]}, "select no task"),
        ({"targets": ["raw", "report"], "tags": ["reporting"]}, r"targets \['raw'\] are not"),
        ({"targets": {"a": 1}}, "must be a list of task names"),
    ],
)
def test_bad_selections_are_clear_errors(
    tmp_path: Path, kwargs: dict[str, Any], fragment: str
) -> None:
    with PipelineManager() as pm, pytest.raises(SelectionError, match=fragment):
        pm.execute_pipeline(flights(tmp_path / "calls"), **kwargs)
    assert calls(tmp_path / "calls") == []


def test_status_records_tables_and_pictures_say_not_selected(tmp_path: Path) -> None:
    p = Pipeline("slow_target")
    p.task("first")(lambda: time.sleep(0.5) or 1)
    p.task("other")(lambda: 2)
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as pm:
        handle = pm.submit(p, targets=["first"])
        going = handle.describe()  # said from the start
        assert going.tasks["other"].status is NOT_SELECTED
        result = handle.result(timeout=30)
        status = pm.get_pipeline_status(result.run_id)
        record = pm.store.read_record("slow_target", result.run_id)
        assert status["tasks"]["other"]["status"] == "not_selected"
        assert record is not None and record.tasks["other"].status is NOT_SELECTED
        assert RunRecord.from_json(record.to_json()).tasks["other"].status is NOT_SELECTED
    assert ">not selected</span>" in result._repr_html_()
    assert "other  not selected  -" in text_table(result)
    dot = to_dot(p, result)
    assert '"other" [label="other\\nnot selected", fillcolor="#fafafa"' in dot


def test_command_line_target_from_and_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.py"
    job.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from tests.test_selection import flights
            from xlibrary.pipeline import PipelineManager

            pm = PipelineManager(
                {{"save_intermediate_results": True, "store": {{"url": {str(tmp_path / "s")!r}}}}}
            )
            pipeline = flights(Path({str(tmp_path / "calls")!r}), "cli_flights")
            """
        )
    )
    assert main(["run", str(job), "--target", "train_model", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "report          not selected" in out
    assert out.rstrip().endswith("final result:\n60")
    assert main(["run", str(job), "--from", "evaluate_model", "--tag", "ds"]) == 0
    assert '"60/40"' in capsys.readouterr().out
    assert main(["run", str(job), "--target", "trian_model"]) == 2
    assert "did you mean 'train_model'" in capsys.readouterr().err


def test_web_api_body_selects(tmp_path: Path) -> None:
    pm = PipelineManager({"save_intermediate_results": True, "store": {"url": str(tmp_path)}})
    app = FastAPI()
    app.include_router(create_router(pm, pipelines=[flights(tmp_path / "calls")]), prefix="/api")
    try:
        with Server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            started = client.post("/api/pipelines/flights/runs", json={"targets": ["report"]})
            assert started.status_code == 202, started.text
            run_id = started.json()["run_id"]
            pm.handle(run_id).result(timeout=30)  # type: ignore[union-attr]
            status = client.get(f"/api/runs/{run_id}").json()
            assert status["tasks"]["train_model"]["status"] == "not_selected"
            assert client.get(f"/api/runs/{run_id}/result").json()["final_result"] == 4
            body = {"from_tasks": ["train_model"], "tags": ["ds"]}
            again = client.post("/api/pipelines/flights/runs", json=body)
            assert again.status_code == 400  # split was not selected, so not saved
            assert "'split'" in again.json()["detail"]
            bad = client.post("/api/pipelines/flights/runs", json={"tags": ["nope"]})
            assert bad.status_code == 400 and "no task" in bad.json()["detail"]
    finally:
        pm.close()


def test_spaceflights_example() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "spaceflights.py")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Full run: succeeded, 14 tasks, R2 0.9")
    assert lines[2] == "  not selected: passenger_capacity_report, price_report"
    assert lines[3] == "Run from train_model: ran train_model, evaluate_model"
    assert lines[4] == "  input split_data: the result saved by the targeted run"
    assert lines[5].startswith("Reporting run: {'passenger_capacity_report': {")


def test_readme_composing_and_selecting_example(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Composing and selecting", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shown = re.findall(r"^(pm\.execute_pipeline\(.*\)\.final_result)  # (.*)$", code, re.M)
    assert len(shown) == 4
    for line, comment in shown:  # each line's comment starts with the value it shows
        code = code.replace(f"{line}  # {comment}", f"print(repr({line}))")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "XLIBRARY_STORE": str(tmp_path / "store")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.splitlines()
    for (_, comment), value in zip(shown, printed, strict=True):
        assert comment.startswith(value), (comment, value)


@WHERE
def test_from_tasks_reads_its_inputs_from_declared_datasets_and_save_to_outputs(
    tmp_path: Path, where: str
) -> None:
    import pandas as pd

    (tmp_path / "raw.csv").write_text("x\n1\n2\n3\n")
    log = tmp_path / "calls"
    p = Pipeline("from_datasets")
    p.dataset("raw", str(tmp_path / "raw.csv"))

    @p.task("clean", depends_on=["raw"], save_to=str(tmp_path / "clean.parquet"))
    def clean(raw: pd.DataFrame) -> pd.DataFrame:
        with log.open("a") as handle:
            handle.write("clean\n")
        return raw * 10

    @p.task("total", depends_on=["clean", "raw"])
    def total(clean: pd.DataFrame, raw: pd.DataFrame) -> int:
        with log.open("a") as handle:
            handle.write("total\n")
        return int(clean["x"].sum() + raw["x"].sum())

    # no intermediate results saved, no cache: the datasets are the only sources
    config = {"store": {"url": str(tmp_path / "store")}, "caching": {"enabled": False}}
    with manager_on(where, config) as pm:
        assert pm.execute_pipeline(p).final_result == 66
        (tmp_path / "raw.csv").write_text("x\n1\n2\n4\n")  # the file is the truth
        log.unlink()
        again = pm.execute_pipeline(p, from_tasks=["total"])
    assert calls(log) == ["total"]  # clean came from its save_to output, raw from its file
    assert again.final_result == 60 + 7
    assert again.states["clean"] == "cached" and again.states["raw"] == "cached"
    assert again.tasks["clean"].source.startswith("dataset:")
    assert again.tasks["raw"].source == f"dataset:{tmp_path / 'raw.csv'}"

"""Saved intermediates, error details, and retry/resume from the store, also in a new process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from xlibrary.pipeline import Pipeline, PipelineError, PipelineExecutionError, PipelineManager

JOBS = textwrap.dedent(
    """
    import os
    import pathlib

    from xlibrary.pipeline import Pipeline, PipelineManager

    LOG = pathlib.Path(os.environ["CALLS_LOG"])
    FIXED = pathlib.Path(os.environ["FIXED_FLAG"])


    def mark(name):
        with LOG.open("a") as handle:
            handle.write(name + "\\n")


    pm = PipelineManager({"save_intermediate_results": True, "store": {"url": os.environ["STORE"]}})
    p = Pipeline("flaky_etl")


    @p.task("extract")
    def extract():
        mark("extract")
        return [1, 2, 3]


    @p.task("transform", depends_on=["extract"])
    def transform(rows):
        mark("transform")
        if not FIXED.exists():
            raise RuntimeError("the mapping file is missing")
        return [r * 10 for r in rows]


    @p.task("load", depends_on=["transform"])
    def load(rows):
        mark("load")
        return sum(rows)


    @p.task("audit", depends_on=["extract"])
    def audit(rows):
        mark("audit")
        return len(rows)
    """
)


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "jobs.py").write_text(JOBS)
    env = {
        **os.environ,
        "CALLS_LOG": str(tmp_path / "calls.log"),
        "FIXED_FLAG": str(tmp_path / "fixed"),
        "STORE": str(tmp_path / "store"),
        "PYTHONPATH": str(tmp_path),
    }
    yield env


def python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["CALLS_LOG"])
    lines = path.read_text().split() if path.exists() else []
    path.write_text("")
    return sorted(lines)


def test_retry_failed_task_from_a_new_process(jobs: dict[str, str]) -> None:
    out = python(
        """
        import jobs
        result = jobs.pm.execute_pipeline(jobs.p)
        print(result.success, result.failed_task, result.run_id)
        """,
        jobs,
    )
    success, failed_task, first_run = out.split()
    assert (success, failed_task) == ("False", "transform")
    assert calls(jobs) == ["audit", "extract", "transform"]

    Path(jobs["FIXED_FLAG"]).touch()  # the user fixes the cause
    out = python(
        """
        import jobs
        from xlibrary.pipeline import PipelineManager
        import os
        config = {"save_intermediate_results": True, "store": {"url": os.environ["STORE"]}}
        pm = PipelineManager(config)
        result = pm.retry_failed_task(pipeline=jobs.p, task_name="transform")
        print(result.success, result.final_result, result.states["extract"], result.run_id)
        record = pm.store.read_record("flaky_etl")
        print(record.resumed_from, record.tasks["extract"].source)
        print(sorted(pm.get_intermediate_results("flaky_etl")))
        """,
        jobs,
    )
    lines = out.splitlines()
    assert lines[0].startswith("True {'load': 60} cached")
    assert lines[1] == f"{first_run} run:{first_run}"
    assert lines[2] == "['audit', 'extract', 'load', 'transform']"
    assert calls(jobs) == ["load", "transform"]  # extract and audit were not run again


def test_resume_runs_only_what_did_not_finish(jobs: dict[str, str]) -> None:
    python("import jobs; jobs.pm.execute_pipeline(jobs.p)", jobs)
    calls(jobs)
    Path(jobs["FIXED_FLAG"]).touch()
    out = python(
        """
        import jobs
        result = jobs.pm.resume(jobs.p)
        print(result.success, sorted(result.final_result.items()))
        """,
        jobs,
    )
    assert out.strip() == "True [('audit', 3), ('load', 60)]"
    assert calls(jobs) == ["load", "transform"]


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PipelineManager]:
    config = {"save_intermediate_results": True, "store": {"url": str(tmp_path / "store")}}
    with PipelineManager(config) as manager:
        yield manager


def failing() -> Pipeline:
    p = Pipeline("broken")
    p.task("extract")(lambda: {"rows": [1, 2]})

    @p.task("parse", depends_on=["extract"])
    def parse(data: dict) -> list:
        return [int("x") for _ in data["rows"]]

    p.task("report", depends_on=["parse"])(lambda rows: len(rows))
    return p


def test_intermediate_results_of_the_latest_run(pm: PipelineManager) -> None:
    ok = Pipeline("fine")
    ok.task("a")(lambda: 1)
    ok.task("b", depends_on=["a"])(lambda x: x + 1)
    pm.execute_pipeline(ok)
    assert pm.get_intermediate_results("fine") == {"a": 1, "b": 2}
    result = pm.execute_pipeline(failing())
    assert pm.get_intermediate_results("broken") == {"extract": {"rows": [1, 2]}}
    assert pm.get_intermediate_results("broken", run_id=result.run_id) == {
        "extract": {"rows": [1, 2]}
    }
    assert result.tasks["extract"].saved and not result.tasks["parse"].saved


def test_intermediates_are_not_saved_unless_asked(tmp_path: Path) -> None:
    with PipelineManager({"store": {"url": str(tmp_path)}}) as pm:
        pm.execute_pipeline(failing())
        assert pm.get_intermediate_results("broken") == {}
        with pytest.raises(PipelineError, match=r"'extract'.*not saved.*save_intermediate_results"):
            pm.retry_failed_task(pipeline_name="broken", task_name="parse")


def test_error_details_from_every_kind_of_source(pm: PipelineManager) -> None:
    result = pm.execute_pipeline(failing())
    for source in (result.error, result, result.run_id, "broken"):
        details = pm.get_error_details(source)
        assert details.failed_task == "parse"
        assert details.run_id == result.run_id
        assert "invalid literal for int()" in details.error_message
        assert "in parse" in details.stack_trace and "runner.py" not in details.stack_trace
    with pytest.raises(PipelineError, match="no run or pipeline 'nope'"):
        pm.get_error_details("nope")


def test_guide_debugging_flow(tmp_path: Path) -> None:
    attempts = {"n": 0}
    problematic_pipeline = Pipeline("problematic")
    problematic_pipeline.task("extract")(lambda: [1, 2, 3])

    @problematic_pipeline.task("transform", depends_on=["extract"])
    def transform(rows: list[int]) -> list[int]:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise ConnectionError("the warehouse dropped the connection")
        return [r * 2 for r in rows]

    debug_pm = PipelineManager(
        {
            "debug_mode": True,
            "detailed_logging": True,
            "save_intermediate_results": True,
            "store": {"url": str(tmp_path)},
        }
    )
    with pytest.raises(PipelineExecutionError) as info:
        debug_pm.execute_pipeline(problematic_pipeline)
    error_details = debug_pm.get_error_details(info.value)
    assert error_details.failed_task == "transform"
    assert error_details.error_message == "the warehouse dropped the connection"
    assert list(debug_pm.get_intermediate_results(problematic_pipeline.name)) == ["extract"]
    retried = debug_pm.retry_failed_task(
        pipeline_name=problematic_pipeline.name, task_name=error_details.failed_task
    )
    assert retried.success and retried.final_result == [2, 4, 6]
    assert retried.states == {"extract": "cached", "transform": "succeeded"}
    debug_pm.close()


def test_retry_unknown_task_and_unknown_pipeline(pm: PipelineManager) -> None:
    pm.execute_pipeline(failing())
    with pytest.raises(PipelineError, match="no task 'pars'; did you mean 'parse'"):
        pm.retry_failed_task(pipeline_name="broken", task_name="pars")
    with pytest.raises(PipelineError, match="no pipeline named 'nowhere'"):
        pm.retry_failed_task(pipeline_name="nowhere", task_name="x")


def test_resume_of_a_successful_run_says_so(pm: PipelineManager) -> None:
    ok = Pipeline("all_good")
    ok.task("a")(lambda: 1)
    pm.execute_pipeline(ok)
    with pytest.raises(PipelineError, match="succeeded: nothing to resume"):
        pm.resume(ok)


def test_saved_result_gone_before_retry_reruns_it(pm: PipelineManager, tmp_path: Path) -> None:
    calls_made: list[str] = []
    p = Pipeline("gone")
    p.task("a")(lambda: calls_made.append("a") or 5)
    state = {"fail": True}

    @p.task("b", depends_on=["a"])
    def b(x: int) -> int:
        if state["fail"]:
            raise ValueError("not yet")
        return x * 2

    pm.execute_pipeline(p)
    for path in (tmp_path / "store").rglob("a.entry"):
        path.unlink()
    state["fail"] = False
    result = pm.retry_failed_task(pipeline_name="gone", task_name="b")
    assert result.success and result.final_result == 10
    assert calls_made == ["a", "a"]  # its saved result was gone, so it ran again


# -- run ids from outside ------------------------------------------------------------------------
EVIL_RUN = "../../../outside/evil"


class _Touch:
    """Unpickling it creates a file: proof that a planted pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.path),))


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A record and an unsigned pickled result outside the store, where ``runs/p/<EVIL_RUN>``
    leads; returns the file the pickle creates when it is loaded."""
    import json

    from xlibrary.pipeline.store import codec

    marker = tmp_path / "pwned"
    outside = tmp_path / "outside" / "evil"
    (outside / "results").mkdir(parents=True)
    record = {
        "pipeline": "p",
        "run_id": EVIL_RUN,
        "status": "failed",
        "started": 1.0,
        "finished": 2.0,
        "duration": 1.0,
        "order": ["a", "b"],
        "tasks": {
            "a": {"status": "succeeded", "saved": True, "attempts": 1},
            "b": {"status": "failed", "attempts": 1},
        },
        "error": {"failed_task": "b", "message": "boom", "stack_trace": ""},
    }
    (outside / "record.json").write_text(json.dumps(record))
    _, header, payload = codec.encode_entry(
        f"p/{EVIL_RUN}/a", _Touch(marker), task="a", pipeline="p"
    )
    (outside / "results" / "a.entry").write_bytes(codec.frame(header, payload))
    marker.unlink(missing_ok=True)
    return marker


def _evil_pipeline() -> Pipeline:
    p = Pipeline("p")
    p.task("a")(lambda: 1)
    p.task("b", depends_on=["a"])(lambda x: x + 1)
    return p


@pytest.mark.parametrize(
    "entry_point",
    [
        lambda pm: pm.get_intermediate_results("p", run_id=EVIL_RUN),
        lambda pm: pm.get_performance_report("p", run_id=EVIL_RUN),
        lambda pm: pm.resume(_evil_pipeline(), run_id=EVIL_RUN),
        lambda pm: pm.retry_failed_task(pipeline=_evil_pipeline(), task_name="b", run_id=EVIL_RUN),
    ],
    ids=["get_intermediate_results", "get_performance_report", "resume", "retry_failed_task"],
)
def test_a_run_id_that_leaves_the_store_is_refused(
    tmp_path: Path, planted: Path, entry_point
) -> None:
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as pm:
        pm.execute_pipeline(_evil_pipeline())  # the store and runs/p exist
        with pytest.raises(
            ValueError, match=r"'\.\./\.\./\.\./outside/evil' is not a run id"
        ) as info:
            entry_point(pm)
    assert isinstance(info.value, PipelineError)
    assert "20261128T082121.123456-3fa2c1d0" in str(info.value)  # the form a run id has
    assert not planted.exists()


def test_the_store_refuses_paths_out_of_its_root(tmp_path: Path, planted: Path) -> None:
    from xlibrary.pipeline.store import FsStore, RunStore

    store = FsStore(str(tmp_path / "store"))
    for relative in ("../outside/evil/record.json", "runs/../../x", "/etc/passwd", "a//b", "./a"):
        with pytest.raises(ValueError, match=r"outside|not a path"):
            store.read(relative)
    runs = RunStore(store)
    with pytest.raises(ValueError, match="not a run id"):
        runs.load_result("p", EVIL_RUN, "a")
    with pytest.raises(ValueError, match="not a run id"):
        runs.read_record("p", EVIL_RUN)
    assert runs.find_record(EVIL_RUN) is None  # a run id or a name: no such run
    assert not planted.exists()

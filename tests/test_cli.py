"""The xlibrary-pipeline command: run FILE[:PIPELINE], exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xlibrary.pipeline.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_run_the_etl_example(capsys) -> None:
    assert main(["run", str(ROOT / "examples" / "etl.py")]) == 0
    out = capsys.readouterr().out
    assert "Loading: [2, 4, 6, 8, 10]" in out
    assert "pipeline 'data_processing' succeeded" in out
    assert out.rstrip().endswith('{\n  "status": "loaded",\n  "count": 5\n}')


def test_console_script_runs_the_main_job() -> None:
    script = shutil.which("xlibrary-pipeline") or str(
        Path(sys.executable).with_name("xlibrary-pipeline")
    )
    proc = subprocess.run(
        [script, "run", "examples/etl.py"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert '"count": 5' in proc.stdout


@pytest.fixture
def two_pipelines(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.py"
    path.write_text(
        textwrap.dedent(
            """
            from xlibrary.pipeline import Pipeline

            good = Pipeline("good_job")
            good.task("answer")(lambda: {"answer": 42})

            bad = Pipeline("bad_job")
            bad.task("boom")(lambda: 1 / 0)
            bad.task("after", depends_on=["boom"])(lambda x: x)
            """
        )
    )
    return path


def test_pick_a_pipeline_by_name_or_variable(two_pipelines: Path, capsys) -> None:
    assert main(["run", f"{two_pipelines}:good_job"]) == 0
    assert json.loads(capsys.readouterr().out.split("final result:\n")[1]) == {"answer": 42}
    assert main(["run", f"{two_pipelines}:good", "--sequential"]) == 0


def test_failed_pipeline_exits_1_with_the_error(two_pipelines: Path, capsys) -> None:
    assert main(["run", f"{two_pipelines}:bad_job"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "after" in captured.out and "skipped" in captured.out
    assert "ZeroDivisionError: division by zero" in captured.err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "no/such/file.py"], "no such file: no/such/file.py"),
        (["run", "{jobs}"], "declares several pipelines (good_job, bad_job); pick one"),
        (["run", "{jobs}:god_job"], "has no pipeline 'god_job'; did you mean 'good_job'?"),
        (["run", "{jobs}:good", "--config", "{missing}"], "cannot read config file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    args, fragment, two_pipelines: Path, tmp_path, capsys
) -> None:
    filled = [a.format(jobs=two_pipelines, missing=tmp_path / "nope.json") for a in args]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_config_file_is_a_usage_error(two_pipelines: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"fault_tolerance": {"max_retrys": 2}}))
    assert main(["run", f"{two_pipelines}:good", "--config", str(config)]) == 2
    assert "did you mean 'fault_tolerance.max_retries'?" in capsys.readouterr().err


def test_run_on_a_scheduler(dask_scheduler_cli: str, two_pipelines: Path, capsys) -> None:
    assert main(["run", f"{two_pipelines}:good", "--scheduler", dask_scheduler_cli]) == 0
    assert '"answer": 42' in capsys.readouterr().out


def test_usage_without_command_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "command", "extra"),
    [
        (["runs", "list", "--limit=3"], "runs list", "--limit=3"),
        (["cache", "prune", "--older-than", "1d"], "cache prune", "--older-than 1d"),
        (["run", "examples/etl.py", "--bogus"], "run", "--bogus"),
    ],
)
def test_unknown_option_names_its_command(
    argv: list[str], command: str, extra: str, capsys
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: xlibrary-pipeline {command} " in err
    assert f"xlibrary-pipeline {command}: error: unrecognized arguments: {extra}" in err


def _run_cli(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The console script in its own process group, all of it killed if it outlives timeout."""
    import os
    import signal

    script = shutil.which("xlibrary-pipeline") or str(
        Path(sys.executable).with_name("xlibrary-pipeline")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=env, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"xlibrary-pipeline {' '.join(args)} hung for {timeout}s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_readme_command_runs_the_distributed_example() -> None:
    # README: each example runs with `xlibrary-pipeline run examples/NAME.py`; this one starts
    # a LocalCluster of worker processes, which cannot import the file as a module
    proc = _run_cli(["run", "examples/distributed_etl.py", "--no-progress"], timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pipeline 'large_scale_etl' succeeded" in proc.stdout
    assert '"total_records_processed": 10000000' in proc.stdout


def test_def_tasks_of_a_run_file_travel_to_a_scheduler(tmp_path: Path, capsys) -> None:
    from tests.conftest import dask_processes

    path = tmp_path / "defs.py"
    path.write_text(
        textwrap.dedent(
            """
            from xlibrary.pipeline import Pipeline

            jobs = Pipeline("defs_job")


            class Rows:
                def __init__(self, n):
                    self.n = n


            def helper(n):
                return Rows(n)


            @jobs.task("make")
            @jobs.retry_on_failure(max_retries=1, retry_on=(LookupError,))
            def make():
                return helper(3)


            @jobs.task("count", depends_on=["make"])
            def count(rows):
                return {"rows": rows.n}
            """
        )
    )
    with dask_processes(workers=1) as (address, _):
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        code = main(["run", str(path), "--scheduler", address, "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert json.loads(captured.out.split("final result:\n")[1]) == {"rows": 3}

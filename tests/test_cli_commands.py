"""The xlibrary-pipeline commands that inspect the store and the cluster: runs, cache,
dashboard, visualize; YAML configs, --store, and run's progress bar. Each test has its own store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from xlibrary.pipeline.cli import main

ROOT = Path(__file__).resolve().parent.parent
JOBS = """
from xlibrary.pipeline import Pipeline, PipelineManager

pm = PipelineManager({{"store": {{"url": {store!r}}}}})

good = Pipeline("good_job")


@good.task("load")
@pm.cache_result(key="daily_load", ttl=3600)
def load():
    return [1, 2, 3]


@good.task("quick")
@pm.cache_result(key="quick_rates", ttl=0.01)
def quick():
    return 2


@good.task("total", depends_on=["load", "quick"])
def total(rows, factor):
    return sum(rows) * factor


bad = Pipeline("bad_job")
bad.task("boom")(lambda: 1 / 0)
bad.task("after", depends_on=["boom"])(lambda x: x)
"""
PLAIN = """
from xlibrary.pipeline import Pipeline

plain = Pipeline("plain")
plain.task("one")(lambda: 1)
"""
RUN_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}-[0-9a-f]{8}$")
LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def jobs(tmp_path: Path, store: str) -> Path:
    """A pipeline file whose own manager records runs (and caches) in the test's store."""
    path = tmp_path / "jobs.py"
    path.write_text(JOBS.format(store=store))
    return path


@pytest.fixture
def two_runs(jobs: Path, store: str, capsys) -> dict[str, str]:
    """A succeeded run of good_job, then a failed run of bad_job: their run ids."""
    assert main(["run", f"{jobs}:good_job"]) == 0
    assert main(["run", f"{jobs}:bad_job"]) == 1
    out = capsys.readouterr().out
    good, bad = re.findall(r"\(run (\S+)\)", out)
    return {"good": good, "bad": bad}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def rows(out: str) -> list[list[str]]:
    """A printed table's rows (header first), cells split on two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]


# -- runs ----------------------------------------------------------------------------------------
def test_runs_list_newest_first(two_runs: dict[str, str], store: str, capsys) -> None:
    assert main(["runs", "list", "--store", store]) == 0
    header, newest, older = rows(capsys.readouterr().out)
    assert header == ["RUN ID", "PIPELINE", "STATUS", "STARTED", "DURATION", "TASKS"]
    assert newest[:3] == [two_runs["bad"], "bad_job", "failed"]
    assert older[:3] == [two_runs["good"], "good_job", "succeeded"]
    assert LOCAL_TIME.match(older[3]) and older[4].endswith("s")
    assert (newest[5], older[5]) == ("0/2", "3/3")


def test_runs_list_of_one_pipeline_and_last(two_runs, jobs: Path, store: str, capsys) -> None:
    assert main(["run", f"{jobs}:good_job"]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "good_job", "--store", store]) == 0
    table = rows(capsys.readouterr().out)
    assert [row[1] for row in table[1:]] == ["good_job", "good_job"]
    assert table[2][0] == two_runs["good"]  # the first run, below the second
    assert main(["runs", "list", "--last", "1", "--store", store]) == 0
    assert len(rows(capsys.readouterr().out)) == 2  # header and the newest run


def test_runs_list_of_an_unknown_pipeline_exits_2(two_runs, store: str, capsys) -> None:
    assert main(["runs", "list", "god_job", "--store", store]) == 2
    err = one_error_line(capsys)
    assert "no runs of pipeline 'god_job'" in err and "did you mean 'good_job'?" in err


def test_runs_list_of_an_empty_store(store: str, capsys) -> None:
    assert main(["runs", "list", "--store", store]) == 0
    assert "no runs recorded" in capsys.readouterr().out


def test_runs_show_a_failed_run(two_runs: dict[str, str], store: str, capsys) -> None:
    assert main(["runs", "show", two_runs["bad"], "--store", store]) == 0
    out = capsys.readouterr().out
    assert f"run {two_runs['bad']} of pipeline 'bad_job': failed" in out
    assert re.search(r"started\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out)
    table = {row[0]: row for row in rows(out.split("tasks:\n")[1].split("error:")[0])}
    assert list(table) == ["TASK", "boom", "after"]  # one line per task, in order
    assert table["boom"][1:3] == ["failed", "1"]
    assert "ZeroDivisionError: division by zero" in table["boom"][4]
    assert table["after"][1] == "skipped" and "boom" in table["after"][-1]
    assert "error: task 'boom' of pipeline 'bad_job' failed" in out
    assert "Traceback (most recent call last)" in out and "1 / 0" in out


def test_runs_show_a_cached_task(jobs: Path, store: str, capsys) -> None:
    assert main(["run", f"{jobs}:good_job"]) == 0
    assert main(["run", f"{jobs}:good_job"]) == 0
    second = re.findall(r"\(run (\S+)\)", capsys.readouterr().out)[1]
    assert main(["runs", "show", second, "--store", store]) == 0
    out = capsys.readouterr().out
    assert ": succeeded" in out and "error:" not in out
    table = {row[0]: row for row in rows(out.split("tasks:\n")[1])}
    assert table["load"][1] == "cached" and "from cache:daily_load" in table["load"][-1]
    assert table["total"][1:3] == ["succeeded", "1"]


def test_runs_show_json(two_runs: dict[str, str], store: str, capsys) -> None:
    assert main(["runs", "show", two_runs["good"], "--json", "--store", store]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["run_id"] == two_runs["good"] and RUN_ID.match(record["run_id"])
    assert record["pipeline"] == "good_job" and record["status"] == "succeeded"
    assert set(record["tasks"]) == {"load", "quick", "total"}
    assert record["tasks"]["total"]["attempts"] == 1
    assert main(["runs", "show", two_runs["bad"], "--json", "--store", store]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["error"]["failed_task"] == "boom"


def test_runs_show_an_unknown_run_exits_2(two_runs, store: str, capsys) -> None:
    assert main(["runs", "show", "20200101T000000.000000-deadbeef", "--store", store]) == 2
    assert "no run '20200101T000000.000000-deadbeef'" in one_error_line(capsys)


# -- config files --------------------------------------------------------------------------------
def test_yaml_config(two_runs: dict[str, str], store: str, tmp_path: Path, capsys) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"store:\n  url: {store}\ncaching:\n  ttl: 60\n")
    assert main(["runs", "list", "--config", str(config)]) == 0
    assert two_runs["good"] in capsys.readouterr().out
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("fault_tolerance:\n  max_retrys: 2\n")
    assert main(["runs", "list", "--config", str(wrong)]) == 2
    assert "did you mean 'fault_tolerance.max_retries'?" in one_error_line(capsys)


def test_run_with_a_yaml_config(tmp_path: Path, capsys) -> None:
    other = tmp_path / "other-store"
    job = tmp_path / "plain.py"
    job.write_text(PLAIN)
    config = tmp_path / "config.yml"
    config.write_text(f"store: {{url: '{other}'}}\n")
    assert main(["run", str(job), "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "plain", "--store", str(other)]) == 0
    assert "succeeded" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("store: [1, 2\n", "is not valid YAML: "),
        ("- just\n- a list\n", "must hold a mapping of settings"),
    ],
)
def test_bad_yaml_is_one_line(text: str, fragment: str, tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert main(["runs", "list", "--config", str(config)]) == 2
    assert fragment in one_error_line(capsys)


def test_yaml_without_pyyaml_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("store:\n  url: memory://x\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    assert main(["runs", "list", "--config", str(config)]) == 2
    assert "pip install pyyaml" in one_error_line(capsys)


# -- cache ---------------------------------------------------------------------------------------
def test_cache_list_clear_and_prune(jobs: Path, store: str, capsys) -> None:
    assert main(["run", f"{jobs}:good_job"]) == 0
    time.sleep(0.05)  # quick_rates (ttl 0.01 s) has expired
    capsys.readouterr()
    assert main(["cache", "list", "--store", store]) == 0
    header, *entries = rows(capsys.readouterr().out)
    assert header == ["KEY", "TASK", "PIPELINE", "FORMAT", "SIZE", "CREATED", "EXPIRES"]
    by_key = {row[0]: row for row in entries}
    assert set(by_key) == {"daily_load", "quick_rates"}
    assert by_key["daily_load"][1:3] == ["load", "good_job"]
    assert by_key["daily_load"][4].endswith(" B") and LOCAL_TIME.match(by_key["daily_load"][5])
    assert len(by_key["daily_load"]) == 7  # not expired
    assert by_key["quick_rates"][-1] == "expired"

    assert main(["cache", "list", "--pipeline", "bad_job", "--store", store]) == 0
    assert "no cache entries" in capsys.readouterr().out
    assert main(["cache", "prune", "--store", store]) == 0
    assert "removed 1 expired cache entry" in capsys.readouterr().out
    assert main(["cache", "clear", "--pipeline", "bad_job", "--store", store]) == 0
    assert "removed 0 cache entries" in capsys.readouterr().out
    assert main(["cache", "list", "--store", store]) == 0
    assert [row[0] for row in rows(capsys.readouterr().out)[1:]] == ["daily_load"]
    clear = ["cache", "clear", "--pipeline", "good_job", "--task", "load", "--store", store]
    assert main(clear) == 0
    assert "removed 1 cache entry" in capsys.readouterr().out
    assert main(["cache", "list", "--store", store]) == 0
    assert "no cache entries" in capsys.readouterr().out


def test_cache_commands_when_caching_is_off(store: str, tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": {"url": store}, "caching": {"enabled": False}}))
    for action in ("list", "clear", "prune"):
        assert main(["cache", action, "--config", str(config)]) == 2
        assert "caching is disabled" in one_error_line(capsys)


# -- dashboard -----------------------------------------------------------------------------------
def test_dashboard_prints_its_links(store: str, capsys) -> None:
    started = time.monotonic()
    assert main(["dashboard", "--seconds", "1", "--store", store]) == 0
    assert time.monotonic() - started >= 1
    out = capsys.readouterr().out
    status = re.search(r"Dask dashboard: (http://\S+)/status$", out, re.M)
    assert status is not None, out
    assert f"pipelines:      {status[1]}/pipelines" in out


def test_dashboard_serves_while_it_runs(store: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xlibrary.pipeline",
            "dashboard",
            "--seconds",
            "3",
            "--store",
            store,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        status = proc.stdout.readline().split()[-1]
        pipelines = proc.stdout.readline().split()[-1]
        assert status.startswith("http://") and status.endswith("/status")
        with urllib.request.urlopen(status, timeout=10) as response:
            assert response.status == 200 and "Dask" in response.read().decode()
        with urllib.request.urlopen(pipelines, timeout=10) as response:
            assert response.status == 200
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- visualize, run --------------------------------------------------------------------------------
def test_visualize_writes_an_svg(jobs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "good.svg"
    assert main(["visualize", f"{jobs}:good_job", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    svg = out.read_text()
    assert "<svg" in svg
    for name in ("load", "quick", "total"):
        assert name in svg


def test_visualize_a_recorded_run(two_runs: dict[str, str], jobs: Path, tmp_path: Path, capsys):
    """--run colours each task by a run in the file's store: ids from `runs list`, or latest."""
    out = tmp_path / "bad.svg"
    assert main(["visualize", f"{jobs}:bad_job", "-o", str(out), "--run", two_runs["bad"]]) == 0
    svg = out.read_text()
    assert "#ffcdd2" in svg and "failed" in svg  # boom: red
    assert "#eeeeee" in svg and "skipped" in svg  # after: grey
    latest = tmp_path / "good.svg"
    assert main(["visualize", f"{jobs}:good_job", "-o", str(latest), "--run", "latest"]) == 0
    assert latest.read_text().count("#c8e6c9") >= 3  # load, quick, total: green
    capsys.readouterr()
    # a run of another pipeline, an unknown run, an empty store: one line each, exit 2
    args = ["visualize", f"{jobs}:good_job", "-o", str(out), "--run", two_runs["bad"]]
    assert main(args) == 2
    assert "run of pipeline 'bad_job'" in one_error_line(capsys)
    assert main([*args[:-1], "nope"]) == 2
    assert "no run 'nope' in the store" in one_error_line(capsys)
    empty = ["--store", str(tmp_path / "empty"), "--run", "latest"]
    assert main(["visualize", f"{jobs}:good_job", "-o", str(out), *empty]) == 2
    assert "no run of pipeline 'good_job'" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["visualize", "{jobs}:good_job", "-o", "{tmp}/good.gif"], "must end in .svg or .png"),
        (["visualize", "{jobs}", "-o", "{tmp}/x.svg"], "declares several pipelines"),
        (["visualize", "{jobs}:god_job", "-o", "{tmp}/x.svg"], "did you mean 'good_job'?"),
        (["visualize", "{jobs}:good_job", "-o", "{tmp}/no/such/dir/x.svg"], "cannot write"),
    ],
)
def test_visualize_errors_are_one_line(args, fragment, jobs: Path, tmp_path: Path, capsys) -> None:
    assert main([a.format(jobs=jobs, tmp=tmp_path) for a in args]) == 2
    assert fragment in one_error_line(capsys)


def test_run_progress_bar(jobs: Path, capsys) -> None:
    assert main(["run", f"{jobs}:good_job", "--progress"]) == 0
    assert "3/3" in capsys.readouterr().err  # tqdm's bar: 3 of 3 tasks
    assert main(["run", f"{jobs}:good_job", "--no-progress"]) == 0
    assert "3/3" not in capsys.readouterr().err
    assert main(["run", f"{jobs}:good_job"]) == 0  # stderr is not a terminal here: no bar
    assert "3/3" not in capsys.readouterr().err


def test_run_with_store_records_there(tmp_path: Path, capsys) -> None:
    job = tmp_path / "plain.py"
    job.write_text(PLAIN)
    other = str(tmp_path / "elsewhere")
    assert main(["run", str(job), "--store", other]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--store", other]) == 0
    assert "plain" in capsys.readouterr().out
    assert main(["runs", "list", "plain", "--store", str(tmp_path / "empty")]) == 2
    assert "no runs of pipeline 'plain'" in one_error_line(capsys)

"""Runs that go wrong in ways a task's exception does not: tasks that exit, results and
functions that cannot travel to or from a cluster, runs interrupted with Ctrl-C or cut off
by their client, and the run records they leave."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, Nanny, Scheduler, SpecCluster

from xlibrary.pipeline import ClusterError, Pipeline, PipelineManager, TaskStatus
from xlibrary.pipeline.store import SerializationError

ROOT = Path(__file__).resolve().parent.parent


def exiting(name: str, *, interrupts: bool = True, **options: Any) -> Pipeline:
    """Tasks that leave by SystemExit, GeneratorExit and (``interrupts``) KeyboardInterrupt,
    beside one that does its work; ``options`` go to every task (a timeout takes the
    wrapper's other path)."""
    p = Pipeline(name)

    @p.task("exits", **options)
    def exits() -> None:
        sys.exit(3)

    @p.task("closes", **options)
    def closes() -> None:
        raise GeneratorExit("closed")

    if interrupts:

        @p.task("interrupts", **options)
        def interrupts() -> None:
            raise KeyboardInterrupt  # raised by the task itself, not a Ctrl-C of this process

    @p.task("after", depends_on=["exits"], **options)
    def after(x: None) -> None:
        return x

    @p.task("independent", **options)
    def independent() -> int:
        time.sleep(0.2)
        return 42

    return p


def check_exits(result: Any) -> None:
    assert result.states == {
        "exits": "failed",
        "closes": "failed",
        "interrupts": "failed",
        "after": "skipped",
        "independent": "succeeded",
    }
    assert result.results == {"independent": 42}
    assert isinstance(result.tasks["exits"].error, SystemExit)
    assert isinstance(result.tasks["closes"].error, GeneratorExit)
    assert isinstance(result.tasks["interrupts"].error, KeyboardInterrupt)
    assert result.tasks["after"].skipped_because == "exits"


@pytest.mark.parametrize("options", [{}, {"timeout": 30}], ids=["plain", "with-timeout"])
def test_a_task_that_exits_fails_on_threads(tmp_path: Path, options: dict[str, Any]) -> None:
    with PipelineManager({"store": {"url": str(tmp_path)}}) as pm:
        result = pm.execute_pipeline(exiting("exits_threads", **options))
        check_exits(result)
        assert pm.store.read_record("exits_threads").status == "failed"


def test_a_task_that_exits_fails_in_a_sequential_run(tmp_path: Path) -> None:
    # no KeyboardInterrupt: in the calling thread it is a Ctrl-C (the next test)
    p = exiting("exits_sequential", interrupts=False)
    with PipelineManager({"store": {"url": str(tmp_path)}}) as pm:
        result = pm.execute_pipeline(p, parallel=False)
    assert result.states["exits"] == "failed" and result.states["closes"] == "failed"
    assert result.states["independent"] == "succeeded" and result.results == {"independent": 42}


def test_a_keyboard_interrupt_in_the_calling_thread_cancels_the_run(tmp_path: Path) -> None:
    """parallel=False runs tasks in this thread: a KeyboardInterrupt there is a Ctrl-C. The
    record keeps what finished, so resume continues from there."""
    ran, interrupt = [], [True]
    p = Pipeline("ctrl_c_here")
    p.task("first")(lambda: 1)

    @p.task("second", depends_on=["first"])
    def second(x: int) -> int:
        if interrupt:
            interrupt.pop()
            raise KeyboardInterrupt
        return x + 1

    @p.task("third", depends_on=["second"])
    def third(x: int) -> int:
        ran.append("third")
        return x + 1

    config = {"store": {"url": str(tmp_path)}, "save_intermediate_results": True}
    with PipelineManager(config) as pm:
        with pytest.raises(KeyboardInterrupt):
            pm.execute_pipeline(p, parallel=False)
        record = pm.store.read_record("ctrl_c_here")
        assert ran == []
        assert record.status == "cancelled" and record.finished is not None
        assert {t: e.status for t, e in record.tasks.items()} == {
            "first": "succeeded",
            "second": "cancelled",
            "third": "cancelled",
        }
        resumed = pm.resume(p)
    assert resumed.final_result == 3 and ran == ["third"]
    assert resumed.states == {"first": "cached", "second": "succeeded", "third": "succeeded"}


CTRL_C_SCRIPT = """
import sys, time
from pathlib import Path
from xlibrary.pipeline import Pipeline, PipelineManager

here = Path(sys.argv[1])
p = Pipeline("interrupted")

@p.task("first")
def first():
    return 1

@p.task("second", depends_on=["first"])
def second(x):
    (here / "second-started").write_text("")
    time.sleep(1.0)
    return x

@p.task("third", depends_on=["second"])
def third(x):
    (here / "third-ran").write_text("")
    return x

with PipelineManager({"store": {"url": str(here / "store")}}) as pm:
    pm.execute_pipeline(p)
print("not reached")
"""


def test_ctrl_c_cancels_a_run_on_threads_and_raises_keyboard_interrupt(tmp_path: Path) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(CTRL_C_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "second-started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started its second task"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (-signal.SIGINT, 130), err.decode()
    assert b"KeyboardInterrupt" in err and b"not reached" not in out
    assert not (tmp_path / "third-ran").exists()
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as other:
        record = other.store.read_record("interrupted")
        status = other.get_pipeline_status("interrupted")
    assert record.status == "cancelled"
    assert record.finished is not None and record.duration is not None
    assert record.tasks["first"].status == "succeeded"
    assert record.tasks["third"].status == "cancelled"
    assert record.tasks["second"].status == "cancelled"
    assert status["status"] == "cancelled"
    assert {t: s["status"] for t, s in status["tasks"].items()} == {
        "first": "succeeded",
        "second": "cancelled",
        "third": "cancelled",
    }


# -- on a cluster of worker processes -------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[SpecCluster]:
    """Two worker processes, one offering resource ``left`` and one ``right``, so a test can
    place a task and its dependent on different workers."""

    def worker(side: str) -> dict[str, Any]:
        return {
            "cls": Nanny,
            "options": {"nthreads": 2, "resources": {side: 1}, "dashboard": False},
        }

    with SpecCluster(
        scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
        workers={"left": worker("left"), "right": worker("right")},
    ) as spec:
        yield spec


@pytest.fixture
def client(cluster: SpecCluster) -> Iterator[Client]:
    with Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def test_a_task_that_exits_fails_on_a_cluster_and_kills_no_worker(
    client: Client, tmp_path: Path
) -> None:
    workers = set(client.scheduler_info()["workers"])
    with PipelineManager({"store": {"url": str(tmp_path)}}, client=client) as pm:
        result = pm.execute_pipeline(exiting("exits_cluster"))
        check_exits(result)
        assert pm.store.read_record("exits_cluster").status == "failed"
    assert set(client.scheduler_info()["workers"]) == workers  # none died, none restarted


def unsendable(name: str) -> Pipeline:
    """A final task returning a lock, one returning a generator that a task on the other
    worker needs, a task whose function closes over a lock, and tasks that are fine."""
    lock = threading.Lock()
    p = Pipeline(name)
    p.task("lock")(lambda: threading.Lock())

    @p.task("numbers", resource_requirements={"left": 1})
    def numbers() -> Any:
        return (i for i in range(3))

    @p.task("total", depends_on=["numbers"], resource_requirements={"right": 1})
    def total(xs: Any) -> int:
        return sum(xs)

    @p.task("holds_lock")
    def holds_lock() -> int:
        with lock:
            return 1

    p.task("after_lock", depends_on=["holds_lock"])(lambda x: x)
    p.task("fine")(lambda: 7)
    p.task("also_fine", depends_on=["fine"])(lambda x: x + 1)
    return p


@pytest.mark.parametrize("keep", ["final", "all"])
def test_results_and_functions_that_cannot_travel_fail_their_tasks(
    client: Client, tmp_path: Path, keep: str
) -> None:
    config = {"store": {"url": str(tmp_path)}, "keep_results": keep}
    with PipelineManager(config, client=client) as pm:
        result = pm.execute_pipeline(unsendable("unsendable"))
        record = pm.store.read_record("unsendable")
    assert result.states == {
        "lock": "failed",
        "numbers": "failed",
        "total": "skipped",
        "holds_lock": "failed",
        "after_lock": "skipped",
        "fine": "succeeded",
        "also_fine": "succeeded",
    }
    assert result.results["also_fine"] == 8
    for name, kind in [("lock", "lock"), ("numbers", "generator"), ("holds_lock", "lock")]:
        error = result.tasks[name].error
        assert isinstance(error, SerializationError), (name, error)
        assert f"task {name!r}" in str(error) and kind in str(error)
    assert "cannot be sent to the Dask workers" in str(result.tasks["holds_lock"].error)
    assert result.tasks["total"].skipped_because == "numbers"
    assert record.status == "failed"
    assert record.tasks["fine"].status == "succeeded"


def test_a_run_whose_client_closes_ends_its_record(cluster: SpecCluster, tmp_path: Path) -> None:
    p = Pipeline("client_closes")

    @p.task("slow")
    def slow() -> int:
        time.sleep(2)
        return 1

    p.task("after", depends_on=["slow"])(lambda x: x)
    client = Client(cluster, set_as_default=False)
    try:
        with PipelineManager({"store": {"url": str(tmp_path)}}, client=client) as pm:
            threading.Timer(0.7, client.close).start()
            with pytest.raises(ClusterError, match="client was closed while run"):
                pm.execute_pipeline(p)
            record = pm.store.read_record("client_closes")
            status = pm.get_pipeline_status("client_closes")
    finally:
        client.close()
    assert record.status == "failed" and record.finished is not None
    assert record.error.message
    assert {t: e.status for t, e in record.tasks.items()} == {
        "slow": TaskStatus.CANCELLED,
        "after": TaskStatus.CANCELLED,
    }
    assert status["status"] == "failed" and status["error"]

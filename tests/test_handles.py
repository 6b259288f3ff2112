"""Runs in the background: pm.submit, RunHandle, get_pipeline_status and cancelling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from xlibrary.pipeline import Pipeline, PipelineManager
from xlibrary.pipeline.errors import PipelineDefinitionError, PipelineError, RunCancelled
from xlibrary.pipeline.pictures import to_dot


def gated(name: str, gate: threading.Event, ran: list[str]) -> Pipeline:
    """first waits for ``gate``; second runs after it and notes that it ran."""
    pipeline = Pipeline(name)

    @pipeline.task("first")
    def first() -> int:
        assert gate.wait(30), "the test never opened the gate"
        return 1

    @pipeline.task("second", depends_on=["first"])
    def second(x: int) -> int:
        ran.append("second")
        return x + 1

    return pipeline


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def pm(tmp_path: Path):
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as manager:
        yield manager


def test_submit_returns_at_once_and_the_status_follows_the_run(pm, tmp_path) -> None:
    gate, ran = threading.Event(), []
    started = time.perf_counter()
    handle = pm.submit(gated("gated", gate, ran))
    assert time.perf_counter() - started < 1.0
    wait_for(lambda: handle.status() == "running")
    status = pm.get_pipeline_status(handle.run_id)
    assert status["status"] == "running" and status["pipeline"] == "gated"
    wait_for(lambda: pm.get_pipeline_status(handle.run_id)["tasks"]["first"]["status"] == "running")
    assert pm.get_pipeline_status(handle.run_id)["tasks"]["second"]["status"] == "pending"
    # another process (here: another manager on the same store) sees the run going
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as other:
        wait_for(lambda: other.get_pipeline_status("gated")["status"] == "running")
    with pytest.raises(TimeoutError, match=r"still running after 0\.1s"):
        handle.result(timeout=0.1)
    gate.set()
    result = handle.result(timeout=30)
    assert result.success and result.final_result == 2 and result.run_id == handle.run_id
    assert handle.status() == "succeeded" and handle.done()
    status = pm.get_pipeline_status("gated")  # by name: the latest run
    assert status["run_id"] == handle.run_id and status["status"] == "succeeded"
    assert {t: s["status"] for t, s in status["tasks"].items()} == {
        "first": "succeeded",
        "second": "succeeded",
    }
    pm.store.flush()
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as other:
        assert other.get_pipeline_status(handle.run_id)["status"] == "succeeded"


def test_a_bad_pipeline_raises_in_the_caller(pm) -> None:
    pipeline = Pipeline("broken")

    @pipeline.task("a", depends_on=["missing"])
    def a(x: int) -> int:
        return x

    with pytest.raises(PipelineDefinitionError, match="missing"):
        pm.submit(pipeline)


def test_a_failed_run_is_failed_not_raised(pm) -> None:
    pipeline = Pipeline("fails")

    @pipeline.task("boom")
    def boom() -> None:
        raise ValueError("no")

    handle = pm.submit(pipeline)
    result = handle.result(timeout=30)
    assert not result.success and handle.status() == "failed"
    status = pm.get_pipeline_status(handle.run_id)
    assert status["failed_task"] == "boom" and "ValueError: no" in status["error"]


def test_cancel_a_running_run_starts_no_further_task(pm, tmp_path) -> None:
    gate, ran = threading.Event(), []
    handle = pm.submit(gated("cancelled", gate, ran))
    wait_for(lambda: handle.tracker.states["first"] == "running")
    assert handle.cancel()
    gate.set()  # the running task finishes; the next one must not start
    with pytest.raises(RunCancelled):
        handle.result(timeout=30)
    assert handle.status() == "cancelled" and ran == []
    assert not handle.cancel()  # already over
    pm.store.flush()
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as other:
        assert other.get_pipeline_status("cancelled")["status"] == "cancelled"


def test_cancel_a_run_that_has_not_started(pm, monkeypatch) -> None:
    import xlibrary.pipeline.handles as handles_module

    monkeypatch.setattr(handles_module, "SUBMIT_THREADS", 1)
    gate, ran = threading.Event(), []
    blocker = pm.submit(gated("blocker", gate, ran))
    waiting = pm.submit(gated("waiting", threading.Event(), ran))
    assert waiting.status() == "pending"
    assert waiting.cancel() and waiting.status() == "cancelled"
    gate.set()
    assert blocker.result(timeout=30).success
    with pytest.raises(RunCancelled, match="was cancelled"):
        waiting.result(timeout=1)
    assert ran == ["second"]  # only the blocker's


def test_many_runs_of_one_pipeline_at_once_keep_apart(pm) -> None:
    pipeline = Pipeline("square")

    @pipeline.task("value")
    def value() -> float:
        time.sleep(0.05)
        return threading.get_ident()

    handles = [pm.submit(pipeline) for _ in range(20)]
    assert len({h.run_id for h in handles}) == 20
    results = [h.result(timeout=60) for h in handles]
    assert all(r.success for r in results)
    assert [r.run_id for r in results] == [h.run_id for h in handles]


def test_unknown_run_or_pipeline(pm) -> None:
    with pytest.raises(PipelineError, match="no run or pipeline 'nope'"):
        pm.get_pipeline_status("nope")


def test_a_declared_pipeline_that_has_not_run_is_pending(pm) -> None:
    gate, ran = threading.Event(), []
    pipeline = gated("not_yet", gate, ran)
    status = pm.get_pipeline_status("not_yet")
    assert status["status"] == "pending" and status["run_id"] is None
    assert {name: t["status"] for name, t in status["tasks"].items()} == {
        "first": "pending",
        "second": "pending",
    }
    gate.set()
    result = pm.execute_pipeline(pipeline)
    assert pm.get_pipeline_status("not_yet")["run_id"] == result.run_id


def test_close_cancels_runs_still_going_and_does_not_hang(tmp_path) -> None:
    gate, ran = threading.Event(), []
    pm = PipelineManager({"store": {"url": str(tmp_path / "store")}})
    handle = pm.submit(gated("closing", gate, ran))
    wait_for(lambda: handle.tracker.states["first"] == "running")
    closer = threading.Thread(target=pm.close)
    closer.start()
    time.sleep(0.2)
    gate.set()  # the running task ends; close() returns
    closer.join(30)
    assert not closer.is_alive()
    assert handle.status() == "cancelled" and ran == []
    with pytest.raises(PipelineError, match="closed"):
        pm.submit(gated("after", gate, ran))


def test_cancel_on_a_cluster_cancels_the_rest_of_the_graph(tmp_path) -> None:
    marker = tmp_path / "second-ran"
    pipeline = Pipeline("cluster_cancel")

    @pipeline.task("first")
    def first() -> int:
        time.sleep(1.5)
        return 1

    @pipeline.task("second", depends_on=["first"])
    def second(x: int) -> int:
        marker.write_text("ran")
        return x

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster:
        with Client(cluster) as client, PipelineManager(client=client) as pm:
            handle = pm.submit(pipeline)
            wait_for(lambda: handle.status() == "running")
            time.sleep(0.5)  # first is on the worker (a cluster reports tasks as they end)
            assert handle.tracker.states["first"] != "succeeded"
            handle.cancel()
            with pytest.raises(RunCancelled):
                handle.result(timeout=30)
            time.sleep(2.0)  # first would be done by now; second must not have started
            assert not marker.exists()
            assert handle.status() == "cancelled"
            # the cluster is free for the next run
            marker.unlink(missing_ok=True)
            again = pm.submit(pipeline).result(timeout=60)
            assert again.success and marker.exists()


def test_status_on_a_cluster_shows_running_tasks(tmp_path) -> None:
    """A cluster reports tasks as they end; the status asks the scheduler which are running."""
    gate = tmp_path / "open"
    pipeline = Pipeline("cluster_status")

    @pipeline.task("first")
    def first() -> int:
        deadline = time.monotonic() + 30
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return 1

    @pipeline.task("second", depends_on=["first"])
    def second(x: int) -> int:
        return x + 1

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster:
        with Client(cluster) as client, PipelineManager(client=client) as pm:
            handle = pm.submit(pipeline)

            def tasks() -> dict[str, str]:
                status = pm.get_pipeline_status(handle.run_id)
                return {name: t["status"] for name, t in status["tasks"].items()}

            wait_for(lambda: tasks()["first"] == "running")
            assert tasks() == {"first": "running", "second": "pending"}
            assert pm.get_pipeline_status("cluster_status")["status"] == "running"
            gate.write_text("go")
            assert handle.result(timeout=60).final_result == 2
            assert tasks() == {"first": "succeeded", "second": "succeeded"}


def test_old_handles_let_go_of_their_values(pm, monkeypatch, capsys) -> None:
    """Only the newest KEEP_VALUES finished runs keep their data in memory."""
    from xlibrary.pipeline import handles

    monkeypatch.setattr(handles, "KEEP_VALUES", 2)
    pipeline = Pipeline("big_values")
    pipeline.task("make")(lambda: list(range(100_000)))
    pipeline.task("count", depends_on=["make"])(len)
    broken = Pipeline("broken_values")
    broken.task("boom")(lambda: 1 / 0)

    first = pm.submit(broken)
    first.result(timeout=60)
    runs = []
    for _ in range(3):  # one after another: the window is by the order runs finish in
        runs.append(pm.submit(pipeline))
        runs[-1].result(timeout=60)
    pm.submit(pipeline).result(timeout=60)  # each run that ends lets go of the oldest ones

    assert first.released and runs[0].released and runs[1].released
    assert not runs[2].released
    light = runs[0].result()
    assert light.success and light.results == {} and light.final_result is None
    assert runs[2].result().final_result == 100_000
    assert pm.get_pipeline_status(runs[0].run_id)["tasks"]["make"]["status"] == "succeeded"
    failed = pm.get_pipeline_status(first.run_id)
    assert failed["status"] == "failed" and failed["failed_task"] == "boom"
    assert "ZeroDivisionError" in failed["error"]
    assert first.result().error is not None and first.result().error.exception is None
    first.result().display_results()  # the error's text stays, from the traceback
    assert "ZeroDivisionError: division by zero" in capsys.readouterr().out


def test_status_of_a_blocking_run_in_another_thread(pm) -> None:
    """The guide's FastAPI pattern: execute_pipeline in a background thread, status by name."""
    gate, ran = threading.Event(), []
    pipeline = gated("blocking", gate, ran)
    results = []
    worker = threading.Thread(target=lambda: results.append(pm.execute_pipeline(pipeline)))
    worker.start()
    try:
        wait_for(lambda: pm.get_pipeline_status("blocking")["status"] == "running")
        wait_for(
            lambda: pm.get_pipeline_status("blocking")["tasks"]["first"]["status"] == "running"
        )
        status = pm.get_pipeline_status("blocking")
        assert status["tasks"]["second"]["status"] == "pending"
        assert pm.get_pipeline_status(status["run_id"])["status"] == "running"  # by run id too
    finally:
        gate.set()
        worker.join(30)
    (result,) = results
    done = pm.get_pipeline_status("blocking")  # from the store's record now
    assert done["run_id"] == result.run_id and done["status"] == "succeeded"
    assert done["tasks"]["second"]["status"] == "succeeded"
    handle = pm.handle(result.run_id)  # followed like a submitted run, values its caller's
    assert handle is not None and handle.result_with_values() is None


def test_tasks_that_ended_read_as_they_will_in_the_result(pm) -> None:
    gate = threading.Event()
    pipeline = Pipeline("ended_states")
    pipeline.task("quick")(lambda: 1)
    pipeline.task("broken")(lambda: 1 / 0)

    @pipeline.task("waits", depends_on=["quick"])
    def waits(x: int) -> int:
        assert gate.wait(30)
        return x

    handle = pm.submit(pipeline)
    try:
        wait_for(lambda: handle.tracker.states["waits"] == "running")
        wait_for(lambda: handle.tracker.states["broken"] != "running")
        tasks = pm.get_pipeline_status(handle.run_id)["tasks"]
        assert {name: t["status"] for name, t in tasks.items()} == {
            "quick": "succeeded",
            "broken": "failed",
            "waits": "running",
        }
    finally:
        gate.set()
    assert handle.result(timeout=30).states["waits"] == "succeeded"


def three_steps(name: str, gate: Path) -> Pipeline:
    """first; second waits for the file ``gate``; third after it (no lock in the closures:
    they go to a cluster too)."""
    pipeline = Pipeline(name)
    pipeline.task("first")(lambda: 1)

    @pipeline.task("second", depends_on=["first"])
    def second(x: int) -> int:
        deadline = time.monotonic() + 30
        while not gate.exists():
            assert time.monotonic() < deadline, "the test never opened the gate"
            time.sleep(0.02)
        return x + 1

    @pipeline.task("third", depends_on=["second"])
    def third(x: int) -> int:
        return x + 1

    return pipeline


def check_cancelled(status: dict, expected: dict[str, str]) -> None:
    assert status["status"] == "cancelled"
    assert status["started"] is not None and status["finished"] is not None
    assert status["duration"] is not None and status["duration"] >= 0
    assert {name: t["status"] for name, t in status["tasks"].items()} == expected


def test_a_cancelled_run_keeps_its_finished_tasks(pm, tmp_path) -> None:
    gate = tmp_path / "gate"
    pipeline = three_steps("kept", gate)
    handle = pm.submit(pipeline)
    try:
        wait_for(lambda: handle.tracker.states["second"] == "running")
        running = pm.get_pipeline_status(handle.run_id)
        assert running["status"] == "running" and running["started"] is not None
        assert handle.cancel()
    finally:
        gate.write_text("go")  # second finishes; third never starts
    with pytest.raises(RunCancelled) as info:
        handle.result(timeout=30)
    expected = {"first": "succeeded", "second": "succeeded", "third": "cancelled"}
    partial = info.value.result
    assert partial is not None and partial.states == expected and partial.results == {}
    assert "cancelled in" in repr(partial)  # the notebook table and pictures show the state
    assert "cancelled" in partial._repr_html_() and "#ffe0b2" in partial._repr_html_()
    assert '"third" [label="third\\ncancelled' in to_dot(pipeline, partial)
    check_cancelled(pm.get_pipeline_status(handle.run_id), expected)
    pm.store.flush()
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as other:
        check_cancelled(other.get_pipeline_status(handle.run_id), expected)
        check_cancelled(other.get_pipeline_status("kept"), expected)
        record = other.store.read_record("kept")
    assert record.tasks["first"].attempts == 1


def test_a_run_cancelled_before_it_started_has_every_task_cancelled(pm, monkeypatch) -> None:
    import xlibrary.pipeline.handles as handles_module

    monkeypatch.setattr(handles_module, "SUBMIT_THREADS", 1)
    gate, ran = threading.Event(), []
    blocker = pm.submit(gated("blocks", gate, ran))
    waiting = pm.submit(gated("never_started", threading.Event(), ran))
    assert waiting.cancel()
    gate.set()
    blocker.result(timeout=30)
    status = pm.get_pipeline_status(waiting.run_id)
    assert status["status"] == "cancelled" and status["started"] is None
    assert {name: t["status"] for name, t in status["tasks"].items()} == {
        "first": "cancelled",
        "second": "cancelled",
    }


def test_a_cancelled_run_on_a_cluster_keeps_its_finished_tasks(tmp_path) -> None:
    gate = tmp_path / "gate"
    store = {"store": {"url": str(tmp_path / "store")}}
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster:
        with Client(cluster) as client, PipelineManager(store, client=client) as pm:
            handle = pm.submit(three_steps("kept_on_cluster", gate))
            try:
                wait_for(lambda: handle.tracker.states["first"] == "finished")
                running = pm.get_pipeline_status(handle.run_id)
                assert running["status"] == "running" and running["started"] is not None
                wait_for(
                    lambda: (
                        pm.get_pipeline_status(handle.run_id)["tasks"]["second"]["status"]
                        == "running"
                    )
                )
                handle.cancel()
                with pytest.raises(RunCancelled):
                    handle.result(timeout=30)
            finally:
                gate.write_text("go")
            expected = {"first": "succeeded", "second": "cancelled", "third": "cancelled"}
            check_cancelled(pm.get_pipeline_status(handle.run_id), expected)
            pm.store.flush()
    with PipelineManager(store) as other:
        check_cancelled(other.get_pipeline_status(handle.run_id), expected)

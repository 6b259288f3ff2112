"""Monitoring: metrics from inside tasks, real peak memory, reports, trends, alerts, progress,
detailed logging; on the embedded backend and on a LocalCluster."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import free_port
from xlibrary.pipeline import ConfigError, Pipeline, PipelineError, PipelineManager

MB = 2**20


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def holds_memory(megabytes: int, seconds: float = 0.3) -> int:
    block = b"\x01" * (megabytes * MB)  # touched pages: resident memory
    time.sleep(seconds)
    return len(block)


def monitored_pipeline(pm: PipelineManager) -> Pipeline:
    p = Pipeline("monitored")

    @p.task("extract")
    @pm.track_performance
    def extract() -> list[int]:
        pm.log_metric("records_extracted", 3)
        return [1, 2, 3]

    @p.monitor_performance
    @p.task("big", depends_on=["extract"])
    def big(rows: list[int]) -> int:
        pm.log_metric("megabytes", 150)
        return holds_memory(150)

    @p.task("report", depends_on=["big"])
    def report(size: int) -> int:
        return size // MB

    return p


def test_metrics_and_peak_memory_on_the_embedded_backend(store: str) -> None:
    with PipelineManager({"store": {"url": store}, "monitoring_enabled": True}) as pm:
        result = pm.execute_pipeline(monitored_pipeline(pm))
        assert result.success and result.final_result == 150
        report = pm.get_performance_report("monitored")
    assert report["tasks"]["big"]["peak_memory"] >= 150
    assert report["peak_memory"] >= 150
    assert report["total_time"] == pytest.approx(result.duration)
    big = report["tasks"]["big"]
    assert big["status"] == "succeeded" and big["attempts"] == 1 and big["duration"] >= 0.3
    assert big["metrics"]["megabytes"] == 150 and big["metrics"]["cpu_seconds"] >= 0
    assert report["tasks"]["extract"]["metrics"]["records_extracted"] == 3
    assert result.tasks["big"].worker == "local"


def test_metrics_and_peak_memory_on_a_local_cluster(store: str) -> None:
    config = {"store": {"url": store}, "distributed_mode": True, "monitoring_enabled": True}
    with PipelineManager(config) as pm:
        result = pm.execute_pipeline(monitored_pipeline(pm))
        report = pm.get_performance_report("monitored")
        assert result.success, result.error
        assert result.tasks["big"].worker.startswith("tcp://")
        assert report["tasks"]["big"]["peak_memory"] >= 150
        assert report["tasks"]["extract"]["metrics"]["records_extracted"] == 3
        current = pm.get_monitoring_dashboard().get_current_metrics()
        assert current["metrics"]["records_extracted"] == 3
        assert current["by_task"]["big"]["megabytes"] == 150
        cluster = current["cluster"]
        assert cluster["workers"] >= 1 and cluster["memory_mb"] > 0
        assert {"cpu", "tasks_processing", "tasks_queued"} <= set(cluster)


def test_real_time_metrics_arrive_through_dask_events(store: str) -> None:
    config = {
        "store": {"url": store},
        "distributed_mode": True,
        "monitoring": {"real_time": True},
    }
    with PipelineManager(config) as pm:
        seen = threading.Event()
        p = Pipeline("live")

        @p.task("slow")
        def slow() -> int:
            pm.log_metric("progress", 0.5)
            time.sleep(2)  # the metric must reach the client before the task ends
            return 1

        runner = threading.Thread(target=lambda: pm.execute_pipeline(p))
        runner.start()
        dashboard = pm.get_monitoring_dashboard()
        deadline = time.time() + 30
        while time.time() < deadline and not seen.is_set():
            if dashboard.get_current_metrics()["metrics"].get("progress") == 0.5:
                seen.set()
            time.sleep(0.05)
        running = runner.is_alive()
        runner.join(60)
    assert seen.is_set() and running, "the metric arrived only with the result"


def test_report_is_read_from_the_store_by_another_process(store: str) -> None:
    with PipelineManager({"store": {"url": store}, "monitoring_enabled": True}) as pm:
        run = pm.execute_pipeline(monitored_pipeline(pm))
    code = (
        "import sys, json; from xlibrary.pipeline import PipelineManager\n"
        f"pm = PipelineManager({{'store': {{'url': {store!r}}}}})\n"
        "r = pm.get_performance_report('monitored')\n"
        "print(json.dumps([r['run_id'], r['tasks']['big']['peak_memory']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    run_id, peak = json.loads(out.stdout)
    assert run_id == run.run_id and peak >= 150


def test_report_without_a_run_and_save_html(store: str, tmp_path: Path) -> None:
    with PipelineManager({"store": {"url": store}}) as pm:
        with pytest.raises(PipelineError, match="no finished run of pipeline 'nope'"):
            pm.get_performance_report("nope")
        p = Pipeline("plain")
        p.task("a")(lambda: 1)
        pm.execute_pipeline(p)
        page = pm.get_performance_report(p).save_html(tmp_path / "report.html")
    text = page.read_text()
    assert "plain run" in text and "<td>a</td>" in text


def test_dask_performance_report_on_a_cluster(store: str, tmp_path: Path) -> None:
    target = tmp_path / "dask-report.html"
    with PipelineManager({"store": {"url": store}, "distributed_mode": True}) as pm:
        p = Pipeline("reported")
        p.task("a")(lambda: time.sleep(0.1) or 1)
        with pm.performance_report(str(target)):
            pm.execute_pipeline(p)
    text = target.read_text()
    assert "Dask Performance Report" in text
    assert "cdn.bokeh.org" not in text  # inline resources: opens offline


def test_trends_across_runs(store: str) -> None:
    with PipelineManager({"store": {"url": store}}) as pm:
        p = Pipeline("trending")
        delays = iter([0.0, 0.0, 0.0, 0.2, 0.2, 0.2])
        p.task("work")(lambda: time.sleep(next(delays)))
        for _ in range(6):
            pm.execute_pipeline(p)
        trends = pm.get_monitoring_dashboard().get_performance_trends()
    work = trends["trending"]["tasks"]["work"]
    assert work["runs"] == 6 and len(work["durations"]) == 6
    assert work["direction"] == "up" and work["p95"] >= 0.2
    assert trends["trending"]["total"]["mean"] > 0


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hook.received = []
    yield f"http://127.0.0.1:{server.server_port}/alerts"
    server.shutdown()


def test_alerts_go_to_the_log_the_callbacks_the_webhook_and_the_record(
    store: str, webhook: str, caplog
) -> None:
    config = {
        "store": {"url": store},
        "monitoring": {
            "alerts": {
                "task_timeout": 0.2,
                "memory_threshold": 0.0001,
                "error_rate_threshold": 0.3,
                "webhook_url": webhook,
            }
        },
    }
    with PipelineManager(config) as pm:
        pm.enable_monitoring(alerts=["task_failure"])
        received = []
        pm.on_alert(received.append)
        pm.on_alert(lambda alert: 1 / 0)  # a broken callback is logged, never raised
        p = Pipeline("alerting")
        p.task("slow")(lambda: time.sleep(0.3) or 1)
        p.task("broken")(lambda: 1 / 0)
        with caplog.at_level(logging.WARNING):
            result = pm.execute_pipeline(p)
        record = pm.store.read_record("alerting")
        report = pm.get_performance_report("alerting")
    kinds = {alert.kind for alert in result.alerts}
    assert kinds == {"task_failure", "long_execution", "memory_threshold", "error_rate_threshold"}
    assert {a.kind for a in received} == kinds
    assert "ALERT task_failure: task 'broken'" in caplog.text
    assert "alert callback" in caplog.text
    assert {a["kind"] for a in Hook.received[0]["alerts"]} == kinds
    assert {a.kind for a in record.alerts} == kinds
    assert len(report["alerts"]) == 4


def test_long_execution_against_a_tasks_own_history(store: str) -> None:
    with PipelineManager({"store": {"url": store}, "monitoring_enabled": True}) as pm:
        pm.enable_monitoring(alerts=["long_execution"])
        p = Pipeline("usually_quick")
        delays = iter([0.01, 0.01, 0.01, 0.01, 1.5])
        p.task("step")(lambda: time.sleep(next(delays)))
        results = [pm.execute_pipeline(p) for _ in range(5)]
    assert [len(r.alerts) for r in results] == [0, 0, 0, 0, 1]
    assert "far over its usual" in results[-1].alerts[0].message


def test_enable_monitoring_rejects_unknown_names() -> None:
    with PipelineManager() as pm:
        with pytest.raises(ConfigError, match="unknown alert 'task_failur'; did you mean"):
            pm.enable_monitoring(alerts=["task_failur"])
        with pytest.raises(ConfigError, match="unknown metric 'memroy'"):
            pm.enable_monitoring(metrics=["memroy"])


def test_unwatched_runs_cost_nothing_extra(store: str) -> None:
    with PipelineManager({"store": {"url": store}}) as pm:
        p = Pipeline("plain")
        p.task("a")(lambda: 1)
        result = pm.execute_pipeline(p)
    assert result.alerts == () and result.peak_memory is None
    assert result.tasks["a"].metrics is None and result.tasks["a"].worker is None


def test_log_metric_needs_a_number() -> None:
    with PipelineManager() as pm, pytest.raises(TypeError, match="must be a number"):
        pm.log_metric("rows", "many")  # type: ignore[arg-type]


def test_progress_bar_when_asked(store: str, capsys) -> None:
    with PipelineManager({"store": {"url": store}}) as pm:
        p = Pipeline("progressing")
        p.task("a")(lambda: 1)
        p.task("b", depends_on=["a"])(lambda x: x)
        p.task("c", depends_on=["b"])(lambda x: x)
        pm.execute_pipeline(p, display_progress=True)
        err = capsys.readouterr().err
        assert "progressing" in err and "3/3" in err
        pm.execute_pipeline(p)  # not asked, config off: nothing
        assert "3/3" not in capsys.readouterr().err
    with PipelineManager({"store": {"url": store}, "display_progress": True}) as pm:
        pm.execute_pipeline(p)  # config on, but stderr is not a terminal here
        assert "3/3" not in capsys.readouterr().err


def test_progress_bar_on_a_cluster(store: str, capsys) -> None:
    with PipelineManager({"store": {"url": store}, "distributed_mode": True}) as pm:
        p = Pipeline("progressing_cluster")
        p.task("a")(lambda: 1)
        p.task("b", depends_on=["a"])(lambda x: x)
        pm.execute_pipeline(p, display_progress=True)
    assert "2/2" in capsys.readouterr().err


def test_detailed_logging_one_line_per_task_start_and_end(store: str, caplog) -> None:
    with PipelineManager({"store": {"url": store}, "detailed_logging": True}) as pm:
        p = Pipeline("logged")
        p.task("extract")(lambda: {"a": 1, "b": 2})
        p.task("count", depends_on=["extract"])(lambda d: list(d))
        with caplog.at_level(logging.INFO, logger="xlibrary.pipeline.tasks"):
            pm.execute_pipeline(p)
    lines = [r.getMessage() for r in caplog.records if r.name == "xlibrary.pipeline.tasks"]
    assert lines[0] == "task 'extract' started with no inputs"
    assert lines[1].startswith("task 'extract' succeeded in ") and "-> dict(2 keys)" in lines[1]
    assert lines[2] == "task 'count' started with dict(2 keys)"
    assert "-> list[2]" in lines[3] and len(lines) == 4


class HeldHook:
    """A real HTTP server whose POSTs arrive and get no answer until ``release`` is set."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        held = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                held.bodies.append(json.loads(body))
                held.auth.append(self.headers.get("Authorization"))
                held.arrived.set()
                held.release.wait(60)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held_hook() -> Iterator[HeldHook]:
    hook = HeldHook()
    yield hook
    hook.close()


def failing_pipeline() -> Pipeline:
    p = Pipeline("alerting_webhook")
    p.task("broken")(lambda: 1 / 0)
    return p


def test_a_webhook_that_does_not_answer_does_not_hold_up_the_run(
    store: str, held_hook: HeldHook
) -> None:
    url = held_hook.url.replace("://", "://bot:s3cret@")  # credentials: HTTP Basic auth
    config = {"store": {"url": store}, "monitoring": {"alerts": {"webhook_url": url}}}
    pm = PipelineManager(config)
    try:
        pm.enable_monitoring(alerts=["task_failure"])
        asked = time.monotonic()
        result = pm.execute_pipeline(failing_pipeline())
        took = time.monotonic() - asked
        assert [a.kind for a in result.alerts] == ["task_failure"]
        assert held_hook.arrived.wait(10), "the alert was never POSTed"
        # the POST is still held by the server: the run did not wait for it (it waited the
        # whole 5 s timeout before)
        assert took < 2.5 and not held_hook.release.is_set()
        held_hook.release.set()
    finally:
        pm.close()  # sends what is queued, within the webhook timeout
    assert held_hook.bodies[0]["alerts"][0]["kind"] == "task_failure"
    assert held_hook.auth == ["Basic " + base64.b64encode(b"bot:s3cret").decode()]


def test_a_full_webhook_queue_drops_with_one_warning_and_never_blocks(
    held_hook: HeldHook, caplog
) -> None:
    from xlibrary.pipeline.monitoring.alerts import WebhookSender

    sender = WebhookSender(held_hook.url, timeout=30, maxsize=2)
    with caplog.at_level(logging.WARNING, logger="xlibrary.pipeline.alerts"):
        sender.send([{"n": 0}])
        assert held_hook.arrived.wait(10)  # the first POST is held by the server
        sending = threading.Thread(target=lambda: [sender.send([{"n": i}]) for i in range(1, 10)])
        sending.start()
        sending.join(10)
        assert not sending.is_alive(), "send blocked on a full queue"
        held_hook.release.set()
        assert sender.close(timeout=10)  # everything queued went out
    full = [r for r in caplog.records if "queue" in r.getMessage()]
    assert len(full) == 1 and "dropped" in full[0].getMessage()
    assert [body["alerts"] for body in held_hook.bodies] == [[{"n": n}] for n in range(3)]


def test_a_webhook_that_never_answers_times_out_and_close_does_not_hang(
    store: str, held_hook: HeldHook, caplog
) -> None:
    config = {
        "store": {"url": store},
        "monitoring": {
            "alerts": {"webhook_url": f"{held_hook.url}/hooks/T0/SECRET", "webhook_timeout": 0.5}
        },
    }
    with caplog.at_level(logging.WARNING, logger="xlibrary.pipeline.alerts"):
        with PipelineManager(config) as pm:
            pm.enable_monitoring(alerts=["task_failure"])
            pm.execute_pipeline(failing_pipeline())
            closing = threading.Thread(target=pm.close)
            closing.start()
            closing.join(10)
            assert not closing.is_alive(), "close waited on a webhook that never answers"
    assert held_hook.arrived.is_set()
    assert f"could not POST 1 alert(s) to {held_hook.url}/***" in caplog.text
    assert "SECRET" not in caplog.text


def test_webhook_urls_are_redacted_in_logs_and_settings(store: str, caplog) -> None:
    secret_url = (
        f"http://bot:hunter2@127.0.0.1:{free_port()}/services/T000/B000/SECRETTOKEN?sig=abc123"
    )
    config = {"store": {"url": store}, "monitoring": {"alerts": {"webhook_url": secret_url}}}
    with caplog.at_level(logging.WARNING, logger="xlibrary.pipeline.alerts"):
        with PipelineManager(config) as pm:  # nothing listens there: the POST fails
            pm.enable_monitoring(alerts=["task_failure"])
            pm.execute_pipeline(failing_pipeline())
            shown = repr(pm.settings)
    assert "could not POST 1 alert(s) to http://bot:***@127.0.0.1:" in caplog.text
    for secret in ("hunter2", "SECRETTOKEN", "T000", "abc123"):
        assert secret not in caplog.text
        assert secret not in shown
    assert "webhook_url='http://bot:***@127.0.0.1:" in shown


# -- what each monitoring key does ----------------------------------------------------------------
def test_listing_only_always_recorded_metrics_keeps_memory_on(store: str) -> None:
    p = Pipeline("plain")
    p.task("big")(lambda: holds_memory(150))  # not tracked: measured as the config says
    config = {"store": {"url": store}, "monitoring": {"metrics": ["task_duration"]}}
    with PipelineManager(config) as pm:
        result = pm.execute_pipeline(p)
        report = pm.get_performance_report("plain")
    assert result.success, result.error
    assert report["tasks"]["big"]["peak_memory_mb"] >= 150
    assert report["tasks"]["big"]["duration"] >= 0.3


def test_a_memory_threshold_alert_measures_memory_whatever_the_metrics(store: str) -> None:
    p = Pipeline("thresholded")
    p.task("big")(lambda: holds_memory(50))
    alerts = {"memory_threshold": 0.0001}  # of this machine's memory: any process is over it
    config = {"store": {"url": store}, "monitoring": {"metrics": ["cpu"], "alerts": alerts}}
    with PipelineManager(config) as pm:
        result = pm.execute_pipeline(p)
    assert "memory_threshold" in {alert.kind for alert in result.alerts}


def test_peak_memory_is_in_mb_wherever_it_is_shown(store: str) -> None:
    with PipelineManager({"store": {"url": store}, "monitoring_enabled": True}) as pm:
        pm.execute_pipeline(monitored_pipeline(pm))
        report = pm.get_performance_report("monitored")
        last = pm.get_monitoring_dashboard().get_current_metrics()["last_runs"]["monitored"]
    assert 150 <= report["peak_memory_mb"] < 10_000
    assert report["peak_memory"] == report["peak_memory_mb"]  # the guide's key, the same MB
    assert last["peak_memory_mb"] == report["peak_memory_mb"]
    assert "peak_memory" not in last  # no key left in bytes
    assert 150 <= report["tasks"]["big"]["peak_memory_mb"] <= report["peak_memory_mb"]


_RELEASE = threading.Event()


def _wait_for_release() -> bool:
    return _RELEASE.wait(30)  # by reference to this module: the workers are threads here


def test_tasks_waiting_for_a_thread_are_the_queue_depth(store: str) -> None:
    from distributed import Client, LocalCluster

    _RELEASE.clear()
    p = Pipeline("crowded")
    for i in range(4):
        p.task(f"wait_{i}")(_wait_for_release)
    seen: list[dict] = []
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        config = {"store": {"url": store}, "monitoring": {"metrics": ["queue_depth"]}}
        with PipelineManager(config, client=client) as pm:
            handle = pm.submit(p)
            dashboard = pm.get_monitoring_dashboard()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                seen.append(dashboard.get_current_metrics().get("cluster") or {})
                if seen[-1].get("tasks_processing") == 1 and seen[-1].get("tasks_queued") == 3:
                    break
                time.sleep(0.05)
            _RELEASE.set()
            assert handle.result(timeout=30).success
        without = {"store": {"url": store}, "monitoring": {"metrics": ["memory"]}}
        with PipelineManager(without, client=client) as pm:
            assert pm.client is client
            cluster_metrics = pm.get_monitoring_dashboard().get_current_metrics()["cluster"]
    # one task on the worker's only thread, three waiting for it
    assert (seen[-1]["tasks_processing"], seen[-1]["tasks_queued"]) == (1, 3), seen[-3:]
    assert "tasks_queued" not in cluster_metrics  # queue_depth not asked for
    assert cluster_metrics["memory_mb"] > 0 and cluster_metrics["memory_limit_mb"] > 0

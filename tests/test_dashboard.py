"""Dask's dashboard with the Pipelines page: over HTTP, and rendered in headless Chromium.

The page is a Bokeh document of Dask's own dashboard (live through its data sources, in Dask's
navigation): runs newest first, one line each; the newest run (or the one clicked) expanded
with its tasks in the pipeline's words, failed tasks with their error, a mapped task as one
row with counts. ``/pipelines.json`` is the same for machines.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, dask_command, free_port, stop, wait_for_port
from xlibrary.pipeline import Pipeline, PipelineManager

TASKS = ("extract_orders", "price_orders", "summarise_orders")
WORDS = {"pending", "running", "succeeded", "failed", "skipped", "cached", "cancelled"}
"""The states the page shows: the pipeline's words, never Dask's."""


def orders(name: str = "orders_dashboard") -> Pipeline:
    p = Pipeline(name)
    p.task(TASKS[0])(lambda: time.sleep(0.2) or list(range(100)))
    p.task(TASKS[1], depends_on=[TASKS[0]])(lambda rows: [r * 1.2 for r in rows])
    p.task(TASKS[2], depends_on=[TASKS[1]])(lambda rows: sum(rows))
    return p


def failing() -> Pipeline:
    p = Pipeline("orders_failing")
    p.task("load_rows")(lambda: [1, 2, 3])

    @p.task("check_rows", depends_on=["load_rows"])
    def check_rows(rows: list[int]) -> None:
        raise ValueError(
            "row 17 has no price (source postgresql://app:s3cret@db.example/shop)\n"
            "second line of the message"
        )

    p.task("report_rows", depends_on=["check_rows"])(lambda rows: rows)
    p.task("count_rows", depends_on=["load_rows"])(len)
    return p


def wide(name: str, n: int = 50) -> Pipeline:
    """``n`` independent tiny tasks with long names, as in the issue's screenshots."""
    p = Pipeline(name)
    for i in range(n):
        p.task(f"transform_customers_{i:02d}")(lambda i=i: i)
    return p


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PipelineManager, str]]:
    store = str(tmp_path_factory.mktemp("dashboard-store"))
    with PipelineManager({"store": {"url": store}, "dashboard_address": "127.0.0.1:0"}) as pm:
        pm.enable_monitoring(dashboard=True)
        link = pm.dashboard_link
        assert link is not None and link.endswith("/status")
        result = pm.execute_pipeline(orders())
        assert result.success, result.error
        yield pm, link.removesuffix("/status")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return str(response.read().decode())


def runs_of(base: str, pipeline: str) -> list[dict[str, Any]]:
    """The runs of ``pipeline`` on /pipelines.json, newest first."""
    runs = json.loads(get(f"{base}/pipelines.json"))["runs"]
    return [run for run in runs if run["pipeline"] == pipeline]


def test_status_page_and_task_stream_carry_task_names(dashboard) -> None:
    pm, base = dashboard
    assert "Dask Diagnostic UI" in get(f"{base}/status")
    stream = pm.client.get_task_stream()  # the dashboard's own task stream data
    assert {record["key"][0] for record in stream} >= set(TASKS)


def test_a_large_runs_tasks_share_prefixes_and_keep_their_names(dashboard, monkeypatch) -> None:
    """Above GROUP_ABOVE tasks a run keys them (group, run_id, task): the scheduler keeps one
    prefix for ``transform_customers_00`` ... ``_29``, while the dashboard's task stream, the
    Pipelines page and the result still name each task."""
    from dask.utils import key_split

    from xlibrary.pipeline import keys

    monkeypatch.setattr(keys, "GROUP_ABOVE", 10)
    pm, base = dashboard
    client = pm.client
    result = pm.execute_pipeline(wide("wide_grouped", 30))
    assert result.success, result.error
    names = [f"transform_customers_{i:02d}" for i in range(30)]
    assert sorted(result.tasks) == names
    assert {str(task.status) for task in result.tasks.values()} == {"succeeded"}
    run_keys = [r["key"] for r in client.get_task_stream() if r["key"][1] == result.run_id]
    assert {key_split(key) for key in run_keys} == {"transform_customers"}
    assert sorted(keys.task_of(key) for key in run_keys) == names
    prefixes = client.run_on_scheduler(lambda dask_scheduler: set(dask_scheduler.task_prefixes))
    assert "transform_customers" in prefixes and not prefixes & set(names)
    deadline = time.time() + 10
    while (
        time.time() < deadline
        and (runs_of(base, "wide_grouped") or [{}])[0].get("status") != "succeeded"
    ):
        time.sleep(0.1)
    run = runs_of(base, "wide_grouped")[0]
    assert list(run["tasks"]) == names and run["counts"] == {"succeeded": 30}


def test_pipelines_json_over_http(dashboard) -> None:
    _, base = dashboard
    latest = runs_of(base, "orders_dashboard")[0]
    assert latest["status"] == "succeeded" and latest["duration"] > 0
    assert list(latest["tasks"]) == list(TASKS)  # in the pipeline's order
    assert latest["counts"] == {"succeeded": 3}
    for task in latest["tasks"].values():
        assert task["state"] == "succeeded" and task["duration"] >= 0
        assert task["error"] is None
    assert "://" in latest["tasks"][TASKS[0]]["worker"]  # the Dask worker that ran it


def test_a_run_shows_live_in_the_pipelines_words(dashboard) -> None:
    pm, base = dashboard
    p = Pipeline("slow_dashboard")
    p.task("waiting_step")(lambda: time.sleep(3) or 1)
    p.task("after_step", depends_on=["waiting_step"])(lambda x: x)
    runner = threading.Thread(target=lambda: pm.execute_pipeline(p))
    runner.start()
    seen: set[str] = set()
    live = None
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            runs = runs_of(base, "slow_dashboard")
            if runs:
                seen.update(t["state"] for t in runs[0]["tasks"].values())
                if runs[0]["tasks"]["waiting_step"]["state"] == "running":
                    live = runs[0]
                    break
            time.sleep(0.1)
    finally:
        runner.join(30)
    assert live is not None, seen
    assert live["status"] == "running"
    assert live["tasks"]["after_step"]["state"] == "pending"
    assert live["counts"] == {"running": 1, "pending": 1}
    done = runs_of(base, "slow_dashboard")[0]
    seen.update(t["state"] for t in done["tasks"].values())
    assert done["status"] == "succeeded" and seen <= WORDS, seen  # never Dask's words


def test_a_failed_run_shows_its_tasks_and_the_error(dashboard) -> None:
    pm, base = dashboard
    result = pm.execute_pipeline(failing())
    assert not result.success
    run = runs_of(base, "orders_failing")[0]
    assert run["status"] == "failed"
    assert run["counts"] == {"succeeded": 2, "failed": 1, "skipped": 1}
    tasks = run["tasks"]
    assert {name: t["state"] for name, t in tasks.items()} == {
        "load_rows": "succeeded",
        "check_rows": "failed",
        "report_rows": "skipped",
        "count_rows": "succeeded",
    }
    error = tasks["check_rows"]["error"]
    assert error["type"] == "ValueError"
    # one line, no traceback, and no password of a URL in it
    assert error["message"] == "row 17 has no price (source postgresql://app:***@db.example/shop)"
    assert tasks["report_rows"]["skipped_because"] == "check_rows"
    assert run["failed_task"] == "check_rows"
    assert run["error"].startswith("check_rows: ValueError: row 17 has no price")
    assert "s3cret" not in get(f"{base}/pipelines.json")


def test_the_end_of_run_event_is_a_small_json_dict(dashboard) -> None:
    """What DashboardPublisher sends on the ``xlibrary-runs`` topic when a run ends: each
    task's status, duration and, when it failed, its error's type and message."""
    from xlibrary.pipeline.monitoring.dashboard import RUNS_TOPIC

    pm, _ = dashboard
    result = pm.execute_pipeline(failing())
    events = [msg for _, msg in pm.client.get_events(RUNS_TOPIC)]
    started, ended = [m for m in events if m.get("run_id") == result.run_id]
    assert started["status"] == "running" and started["tasks"] == list(result.tasks)
    assert ended["status"] == "failed" and ended["duration"] > 0
    failed = ended["tasks"]["check_rows"]
    assert failed["status"] == "failed" and failed["duration"] >= 0
    assert failed["error"] == {
        "type": "ValueError",
        "message": "row 17 has no price (source postgresql://app:***@db.example/shop)",
    }
    assert ended["tasks"]["load_rows"] == {
        "status": "succeeded",
        "duration": result.tasks["load_rows"].duration,
    }
    assert ended["tasks"]["report_rows"]["skipped_because"] == "check_rows"
    text = json.dumps(ended)  # plain JSON, no traceback, no secret
    assert "Traceback" not in text and "s3cret" not in text and len(text) < 2000


def test_a_mapped_task_is_one_row_with_counts(dashboard) -> None:
    """Keys ``(task, run_id, i)`` (one pipeline task fanned out over many elements) add up
    into their task's row."""
    from xlibrary.pipeline.monitoring.dashboard import RUNS_TOPIC

    pm, base = dashboard
    client = pm.client
    run_id = "20261130T120000.000000-0000abcd"
    client.log_event(
        RUNS_TOPIC,
        {
            "run_id": run_id,
            "pipeline": "mapped_by_hand",
            "status": "running",
            "started": time.time(),
            "tasks": ["square_rows", "sum_rows"],
        },
    )

    def square(i: int) -> int:
        if i in (3, 7):
            raise ValueError(f"bad element {i}")
        return i * i

    futures = [client.submit(square, i, key=("square_rows", run_id, i)) for i in range(40)]
    assert len(client.gather(futures, errors="skip")) == 38
    run = runs_of(base, "mapped_by_hand")[0]
    assert list(run["tasks"]) == ["square_rows", "sum_rows"]  # one row, not 40
    row = run["tasks"]["square_rows"]
    assert row["elements"] == {"succeeded": 38, "failed": 2}
    assert row["state"] == "failed"
    assert row["error"]["type"] == "ValueError" and "bad element" in row["error"]["message"]
    assert run["tasks"]["sum_rows"]["state"] == "pending"
    del futures  # released, then forgotten: the counts stay
    deadline = time.time() + 10
    while time.time() < deadline and client.run_on_scheduler(
        lambda dask_scheduler: any(k[1:2] == (run_id,) for k in dask_scheduler.tasks)
    ):
        time.sleep(0.1)
    row = runs_of(base, "mapped_by_hand")[0]["tasks"]["square_rows"]
    assert row["elements"] == {"succeeded": 38, "failed": 2}


def fails_at_three(x: int) -> int:
    if x == 3:
        raise ValueError("bad element 3")
    return x


def test_a_mapped_pipeline_task_is_one_row_with_its_element_counts(dashboard) -> None:
    from xlibrary.pipeline import Pipeline

    pm, base = dashboard
    p = Pipeline("mapped_for_real")
    p.task("items")(lambda: list(range(10)))
    p.task("checked", depends_on=["items"], map_over="items", on_error="skip")(fails_at_three)
    result = pm.execute_pipeline(p)
    assert result.success, result.error
    deadline = time.time() + 10
    row: dict[str, Any] = {}
    while time.time() < deadline and row.get("elements") != {"succeeded": 9, "failed": 1}:
        time.sleep(0.1)
        runs = runs_of(base, "mapped_for_real")
        row = runs[0]["tasks"]["checked"] if runs else {}
    assert list(runs_of(base, "mapped_for_real")[0]["tasks"]) == ["items", "checked"]
    assert row["elements"] == {"succeeded": 9, "failed": 1} and row["state"] == "succeeded"


def test_the_page_is_a_bokeh_document_in_dasks_navigation(dashboard) -> None:
    _, base = dashboard
    page = get(f"{base}/pipelines")
    assert "bokeh" in page.lower() and "Dask" in page  # served by Dask's Bokeh server
    assert 'http-equiv="refresh"' not in page and "http-equiv='refresh'" not in page
    assert 'href="pipelines"' in page  # the navigation bar links it...
    assert 'href="pipelines"' in get(f"{base}/status")  # ...on Dask's own pages too


# -- where the servers of a cluster the manager starts listen ------------------------------
def listening() -> set[tuple[str, int]]:
    """The TCP sockets this process and its children listen on, as (address, port)."""
    import psutil

    found = set()
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port))
    return found


@pytest.mark.parametrize("kind", ["dashboard", "distributed_mode"])
def test_a_cluster_the_manager_starts_listens_on_this_machine_only(tmp_path, kind: str) -> None:
    """Scheduler, dashboard and the workers' /health and /metrics: 127.0.0.1, not 0.0.0.0/::."""
    config: dict = {"store": {"url": str(tmp_path / "store")}}
    if kind == "distributed_mode":
        config.update(distributed_mode=True, worker_nodes=1)
    before = listening()
    with PipelineManager(config) as pm:
        if kind == "dashboard":
            pm.enable_monitoring(dashboard=True)  # the embedded default, on an in-process cluster
        link = pm.dashboard_link
        opened = listening() - before
        assert link is not None and link.startswith("http://127.0.0.1:")
        assert "Dask Diagnostic UI" in get(link)  # the printed link works
        workers = pm.client.scheduler_info()["workers"].values()
        worker_http = {w["services"]["dashboard"] for w in workers}
    ports = {port for _, port in opened}
    assert int(link.split(":")[2].split("/")[0]) in ports and worker_http <= ports
    assert {address for address, _ in opened} == {"127.0.0.1"}, sorted(opened)


def test_dashboard_address_opens_the_dashboard(tmp_path) -> None:
    config = {"store": {"url": str(tmp_path / "store")}, "dashboard_address": "0.0.0.0:0"}
    before = listening()
    with PipelineManager(config) as pm:
        pm.enable_monitoring(dashboard=True)
        link = pm.dashboard_link
        opened = listening() - before
    port = int(link.split(":")[2].split("/")[0])
    assert ("0.0.0.0", port) in opened  # asked for: every interface
    assert {address for address, p in opened if p != port} == {"127.0.0.1"}  # the rest stays


def test_without_dasks_bokeh_page_api_the_page_is_plain_html(tmp_path, monkeypatch, caplog):
    """The Bokeh page rests on distributed's private dashboard API: when it is gone, the
    plugin serves a plain HTML page instead, and says so."""
    import distributed.dashboard.core

    monkeypatch.delattr(distributed.dashboard.core, "BokehApplication")
    config = {"store": {"url": str(tmp_path / "store")}, "dashboard_address": "127.0.0.1:0"}
    with caplog.at_level("WARNING", logger="xlibrary.pipeline.monitoring.dashboard"):
        with PipelineManager(config) as pm:
            pm.enable_monitoring(dashboard=True)
            assert pm.execute_pipeline(failing()).failed_task == "check_rows"
            base = pm.dashboard_link.removesuffix("/status")
            page = get(f"{base}/pipelines")
            assert runs_of(base, "orders_failing")[0]["status"] == "failed"
    assert "orders_failing" in page and "check_rows" in page and "ValueError" in page
    assert "bokeh" not in page.lower()
    assert any("plain HTML" in r.getMessage() for r in caplog.records), caplog.text


# -- headless Chromium, driven over the DevTools protocol ------------------------------------
BOKEH_STRINGS = """
(() => {
  const out = new Set();
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    for (const model of doc.all_models) {
      const data = model.data;
      if (!data || typeof data !== "object") continue;
      for (const column of Object.values(data)) {
        if (column && column.length !== undefined && typeof column !== "string") {
          for (const item of Array.from(column)) if (typeof item === "string") out.add(item);
        }
      }
    }
  }
  return JSON.stringify([...out]);
})()
"""


def source_data(name: str) -> str:
    """A JavaScript expression: the columns of the Bokeh data source ``name``, as JSON."""
    return f"""
(() => {{
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {{
    const model = doc.get_model_by_name({json.dumps(name)});
    if (model) {{
      const out = {{}};
      for (const [k, v] of Object.entries(model.data)) out[k] = Array.from(v);
      return JSON.stringify(out);
    }}
  }}
  return "";
}})()
"""


class Chromium:
    def __init__(self, profile: Path) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.fail(
                "Debian's chromium is not installed: `apt-get install chromium` (.ci/run does)"
            )
        self.proc = subprocess.Popen(
            [
                exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                "--remote-debugging-port=0", "--window-size=1280,900", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                pytest.fail("headless Chromium did not start")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.loads(get(f"http://127.0.0.1:{port}/json/list"))
        self.ws_url = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]

    def open(self, url: str) -> None:
        """Load ``url`` in the page (and wait for its load event)."""
        self._send(("Page.enable", {}), ("Page.navigate", {"url": url}), wait_event="load")

    def evaluate(self, expression: str) -> str:
        reply = self._send(("Runtime.evaluate", {"expression": expression, "returnByValue": True}))
        return str(reply.get("result", {}).get("result", {}).get("value") or "")

    def wait_for(
        self, expression: str, until: str | Callable[[str], bool], timeout: float = 30
    ) -> str:
        """Evaluate ``expression`` in the open page until its text holds ``until`` (or, for a
        function, until it says yes to the text)."""
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = self.evaluate(expression)
            if until(text) if callable(until) else until in text:
                break
            time.sleep(0.25)
        return text

    def text_of(self, url: str, expression: str, until: str, timeout: float = 30) -> str:
        self.open(url)
        return self.wait_for(expression, until, timeout)

    def screenshot(self, path: Path) -> bytes:
        reply = self._send(("Page.captureScreenshot", {"format": "png"}))
        data = base64.b64decode(reply["result"]["data"])
        path.write_bytes(data)
        return data

    def _send(self, *calls: tuple[str, dict], wait_event: str | None = None) -> dict:
        return asyncio.run(self._calls(calls, wait_event))

    async def _calls(self, calls: tuple[tuple[str, dict], ...], wait_event: str | None) -> dict:
        from tornado.websocket import websocket_connect

        conn = await websocket_connect(self.ws_url, max_message_size=64 * 2**20)
        reply: dict = {}
        try:
            for counter, (method, params) in enumerate(calls, start=1):
                await conn.write_message(
                    json.dumps({"id": counter, "method": method, "params": params})
                )
                while True:
                    reply = json.loads(await conn.read_message())
                    if reply.get("id") == counter:
                        break
            if wait_event is not None:
                deadline = time.time() + 30
                while time.time() < deadline:
                    message = await asyncio.wait_for(conn.read_message(), 30)
                    if json.loads(message).get("method") == f"Page.{wait_event}EventFired":
                        break
        finally:
            conn.close()
        return reply

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def test_chromium_renders_task_names_on_the_status_page(dashboard, chromium: Chromium) -> None:
    _, base = dashboard
    strings = chromium.text_of(f"{base}/status", BOKEH_STRINGS, until=TASKS[2])
    for name in TASKS:
        assert name in strings, strings[:500]


def test_chromium_renders_the_pipelines_page(dashboard, chromium: Chromium) -> None:
    pm, base = dashboard
    pm.execute_pipeline(failing())
    pm.execute_pipeline(orders())  # the newest run: expanded
    chromium.open(f"{base}/pipelines")
    tasks = json.loads(chromium.wait_for(source_data("pipelines-tasks"), until=TASKS[2]))
    assert tasks["task"] == list(TASKS) and set(tasks["state"]) == {"succeeded"}
    runs = json.loads(chromium.evaluate(source_data("pipelines-runs")))
    assert runs["pipeline"][:2] == ["orders_dashboard", "orders_failing"]  # newest first
    failed = runs["pipeline"].index("orders_failing")
    assert runs["status"][failed] == "failed"
    assert "check_rows: ValueError: row 17 has no price" in runs["error"][failed]
    assert "1 failed" in runs["summary"][failed] and "1 skipped" in runs["summary"][failed]
    strings = chromium.evaluate(BOKEH_STRINGS)
    assert not {"memory", "processing", "released", "forgotten", "erred"} & set(json.loads(strings))
    nav = chromium.evaluate("document.querySelector('.navbar').innerText")
    assert "Pipelines" in nav and "Status" in nav


def test_chromium_sees_a_run_arrive_without_a_reload(dashboard, chromium: Chromium) -> None:
    pm, base = dashboard
    chromium.open(f"{base}/pipelines")
    chromium.wait_for(source_data("pipelines-runs"), until="orders_dashboard")
    chromium.evaluate("window.__not_reloaded = 'still the same page'")
    result = pm.execute_pipeline(orders("orders_arriving"))
    runs = json.loads(chromium.wait_for(source_data("pipelines-runs"), until="orders_arriving"))
    assert runs["pipeline"][0] == "orders_arriving" and runs["run_id"][0] == result.run_id
    assert chromium.evaluate("window.__not_reloaded") == "still the same page"


def pick_run(index: int) -> str:
    """A JavaScript statement: select row ``index`` of the runs table, as a click does."""
    return f"""
(() => {{
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {{
    const model = doc.get_model_by_name("pipelines-runs");
    if (model) {{ model.selected.indices = [{index}]; return "picked"; }}
  }}
  return "";
}})()
"""


def test_chromium_a_click_expands_an_older_run(dashboard, chromium: Chromium) -> None:
    pm, base = dashboard
    older = pm.execute_pipeline(failing())
    pm.execute_pipeline(orders())
    chromium.open(f"{base}/pipelines")
    runs = json.loads(chromium.wait_for(source_data("pipelines-runs"), until=older.run_id))
    assert chromium.evaluate(pick_run(runs["run_id"].index(older.run_id))) == "picked"
    tasks = json.loads(chromium.wait_for(source_data("pipelines-tasks"), until="check_rows"))
    assert tasks["task"] == list(older.tasks)
    pm.execute_pipeline(orders("orders_after_the_click"))  # the picked run stays expanded
    chromium.wait_for(source_data("pipelines-runs"), until="orders_after_the_click")
    time.sleep(1)
    assert json.loads(chromium.evaluate(source_data("pipelines-tasks")))["task"] == list(
        older.tasks
    )
    chromium.evaluate(pick_run(0))  # the newest: the page follows new runs again
    tasks = json.loads(chromium.wait_for(source_data("pipelines-tasks"), until=TASKS[2]))
    assert tasks["task"] == list(TASKS)


def test_chromium_page_stays_short_as_runs_add_up(dashboard, chromium: Chromium, tmp_path):
    """11 runs of 50 tasks: only the newest is expanded; the older ones are a line each, and
    the page is as tall as with one run."""
    pm, base = dashboard
    pm.execute_pipeline(wide("wide_dashboard"))
    chromium.open(f"{base}/pipelines")
    chromium.wait_for(source_data("pipelines-runs"), until="wide_dashboard")
    height = "String(document.documentElement.scrollHeight)"
    time.sleep(0.5)
    one_run = int(chromium.evaluate(height))
    for _ in range(10):
        pm.execute_pipeline(wide("wide_dashboard"))
    newest = runs_of(base, "wide_dashboard")[0]["run_id"]
    runs = json.loads(chromium.wait_for(source_data("pipelines-runs"), until=newest))
    assert runs["pipeline"].count("wide_dashboard") == 11

    def newest_done(text: str) -> bool:  # the page follows the scheduler's events: it may lag
        return "customers_49" in text and set(json.loads(text)["state"]) == {"succeeded"}

    tasks = json.loads(chromium.wait_for(source_data("pipelines-tasks"), until=newest_done))
    assert len(tasks["task"]) == 50 and set(tasks["state"]) == {"succeeded"}
    time.sleep(0.5)
    assert int(chromium.evaluate(height)) <= one_run + 10  # the page does not grow


RENDERED_TEXT = """
(() => {
  const walk = (node) => {
    let text = "";
    if (node.shadowRoot) text += walk(node.shadowRoot);
    for (const child of node.childNodes) {
      text += child.nodeType === Node.TEXT_NODE ? child.textContent + "\\n" : walk(child);
    }
    return text;
  };
  return walk(document.body);
})()
"""
"""The text on the screen, Bokeh's shadow DOM included."""

COLORS_OF_FAILED = """
(() => {
  const found = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.children || []) {
      if (child.children.length === 0 && child.textContent === "failed") {
        found.push(getComputedStyle(child).color);
      }
      walk(child);
    }
  };
  walk(document.body);
  return JSON.stringify(found);
})()
"""
"""The colour of each "failed" on the screen."""


def test_chromium_shows_a_failed_run_in_red_with_its_error(dashboard, chromium, tmp_path):
    pm, base = dashboard
    chromium.open(f"{base}/pipelines")
    pm.execute_pipeline(failing())  # arrives while the page is open, and is expanded
    text = chromium.wait_for(RENDERED_TEXT, until="skipped: 'check_rows' failed")
    assert "ValueError: row 17 has no price" in text and "s3cret" not in text
    assert "rgb(198, 40, 40)" in json.loads(chromium.evaluate(COLORS_OF_FAILED))  # in red
    png = chromium.screenshot(tmp_path / "pipelines-page.png")
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    if os.environ.get("XLIBRARY_DOCS_SCREENSHOT"):  # refresh the README's picture
        (ROOT / "docs" / "pipelines-page.png").write_bytes(png)


# -- a cluster others submit to: `xlibrary-pipeline dashboard`, `dask scheduler --preload` ---
def where_it_ran() -> Pipeline:
    p = Pipeline("submitted_from_elsewhere")
    p.task("find_process")(lambda: os.getpid())
    p.task("report_process", depends_on=["find_process"])(lambda pid: {"pid": pid})
    return p


def test_dashboard_command_serves_a_cluster_others_submit_to(tmp_path, chromium: Chromium):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dashboard_address": "127.0.0.1:0", "worker_nodes": 1}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "xlibrary.pipeline", "dashboard", "--config", str(config),
         "--scheduler-address", "127.0.0.1:0", "--seconds", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # a process group of its own, as in a terminal
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: dict[str, str] = {}
        for line in proc.stdout:
            label, _, value = line.partition(":")
            lines[label.strip()] = value.strip()
            if line.startswith("serving until"):
                break
        scheduler = lines["scheduler"].split()[0]
        assert scheduler.startswith("tcp://127.0.0.1:"), lines  # this machine only
        base = lines["pipelines"].removesuffix("/pipelines")
        assert base.startswith("http://127.0.0.1:")
        config = {"scheduler_address": scheduler, "store": {"url": str(tmp_path / "store")}}
        with PipelineManager(config) as pm:  # another process, no monitoring asked for
            result = pm.execute_pipeline(where_it_ran())
        assert result.success, result.error
        assert result.results["report_process"]["pid"] not in (os.getpid(), proc.pid)
        run = runs_of(base, "submitted_from_elsewhere")[0]
        assert run["run_id"] == result.run_id and run["status"] == "succeeded"
        chromium.open(f"{base}/pipelines")
        text = chromium.wait_for(BOKEH_STRINGS, until="report_process")
        assert "submitted_from_elsewhere" in text and "report_process" in text
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: to every process of the group
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopping the cluster" in out
        assert "Traceback" not in err, err  # the workers leave Ctrl-C to the command
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dask_scheduler_with_the_preload_serves_the_page() -> None:
    port, http = free_port(), free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    scheduler = subprocess.Popen(
        [*dask_command(), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", f"127.0.0.1:{http}",
         "--preload", "xlibrary.pipeline.monitoring.dashboard"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = None
    try:
        wait_for_port(port, scheduler)
        worker = subprocess.Popen(
            [*dask_command(), "worker", address, "--nthreads", "1", "--no-dashboard",
             "--host", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with PipelineManager({"scheduler_address": address}) as pm:  # no monitoring asked for
            pm.client.wait_for_workers(1, timeout=60)
            result = pm.execute_pipeline(where_it_ran())
        assert result.success, result.error
        base = f"http://127.0.0.1:{http}"
        run = runs_of(base, "submitted_from_elsewhere")[0]
        assert run["status"] == "succeeded" and set(run["tasks"]) == {
            "find_process",
            "report_process",
        }
        page = get(f"{base}/pipelines")
        assert "bokeh" in page.lower() and 'href="pipelines"' in get(f"{base}/status")
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                stop(proc)

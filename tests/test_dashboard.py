"""Dask's dashboard with the Pipelines page: over HTTP, and rendered in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from xlibrary.pipeline import Pipeline, PipelineManager

TASKS = ("extract_orders", "price_orders", "summarise_orders")


def orders() -> Pipeline:
    p = Pipeline("orders_dashboard")
    p.task(TASKS[0])(lambda: time.sleep(0.2) or list(range(100)))
    p.task(TASKS[1], depends_on=[TASKS[0]])(lambda rows: [r * 1.2 for r in rows])
    p.task(TASKS[2], depends_on=[TASKS[1]])(lambda rows: sum(rows))
    return p


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PipelineManager, str]]:
    store = str(tmp_path_factory.mktemp("dashboard-store"))
    with PipelineManager({"store": {"url": store}}) as pm:
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


def test_status_page_and_task_stream_carry_task_names(dashboard) -> None:
    pm, base = dashboard
    assert "Dask Diagnostic UI" in get(f"{base}/status")
    stream = pm.client.get_task_stream()  # the dashboard's own task stream data
    assert {record["key"][0] for record in stream} >= set(TASKS)


def test_pipelines_page_over_http(dashboard) -> None:
    _, base = dashboard
    page = get(f"{base}/pipelines")
    assert "orders_dashboard" in page
    for name in TASKS:
        assert name in page
    runs = json.loads(get(f"{base}/pipelines.json"))["runs"]
    latest = runs[0]
    assert latest["pipeline"] == "orders_dashboard" and latest["status"] == "succeeded"
    assert set(latest["tasks"]) == set(TASKS)
    assert all(t["status"] == "succeeded" and t["duration"] >= 0 for t in latest["tasks"].values())
    assert "://" in latest["tasks"][TASKS[0]]["worker"]  # the Dask worker that ran it


def test_pipelines_page_shows_a_run_while_it_runs(dashboard) -> None:
    import threading

    pm, base = dashboard
    p = Pipeline("slow_dashboard")
    p.task("waiting_step")(lambda: time.sleep(3) or 1)
    runner = threading.Thread(target=lambda: pm.execute_pipeline(p))
    runner.start()
    try:
        deadline = time.time() + 20
        seen = None
        while time.time() < deadline:
            runs = json.loads(get(f"{base}/pipelines.json"))["runs"]
            live = [r for r in runs if r["pipeline"] == "slow_dashboard"]
            if live and live[0]["tasks"].get("waiting_step", {}).get("state") == "processing":
                seen = live[0]
                break
            time.sleep(0.1)
        assert seen is not None and seen["status"] == "running"
    finally:
        runner.join(30)


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
                "--remote-debugging-port=0", "about:blank",
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

    def text_of(self, url: str, expression: str, until: str, timeout: float = 30) -> str:
        return asyncio.run(self._text_of(url, expression, until, timeout))

    async def _text_of(self, url: str, expression: str, until: str, timeout: float) -> str:
        from tornado.websocket import websocket_connect

        conn = await websocket_connect(self.ws_url, max_message_size=64 * 2**20)
        counter = 0

        async def call(method: str, **params: object) -> dict:
            nonlocal counter
            counter += 1
            await conn.write_message(
                json.dumps({"id": counter, "method": method, "params": params})
            )
            while True:
                reply = json.loads(await conn.read_message())
                if reply.get("id") == counter:
                    return reply

        await call("Page.navigate", url=url)
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            reply = await call("Runtime.evaluate", expression=expression, returnByValue=True)
            text = str(reply.get("result", {}).get("result", {}).get("value") or "")
            if until in text:
                break
            await asyncio.sleep(0.25)
        conn.close()
        return text

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
    _, base = dashboard
    text = chromium.text_of(f"{base}/pipelines", "document.body.innerText", until=TASKS[2])
    assert "Pipelines" in text and "orders_dashboard" in text
    for name in TASKS:
        assert name in text

"""The FastAPI router and the guide's FastAPI example, on a real uvicorn server, driven by httpx."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import BackgroundTasks, FastAPI

from tests.conftest import free_port
from xlibrary.pipeline import Pipeline, PipelineManager
from xlibrary.pipeline.integrations.fastapi import create_router


class Server:
    """A real uvicorn server on 127.0.0.1, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def numbers() -> Pipeline:
    p = Pipeline("numbers")
    p.task("load")(lambda: list(range(10)))
    p.task("square", depends_on=["load"])(lambda xs: [x * x for x in xs])
    p.task("total", depends_on=["square"])(lambda xs: {"total": sum(xs), "count": len(xs)})
    return p


def slow() -> Pipeline:
    p = Pipeline("slow")
    p.task("wait")(lambda: time.sleep(1.5) or "waited")
    p.task("after", depends_on=["wait"])(lambda x: x)
    return p


def broken() -> Pipeline:
    p = Pipeline("broken")
    p.task("fail")(lambda: 1 / 0)
    return p


@pytest.fixture
def api(tmp_path) -> Iterator[tuple[str, PipelineManager]]:
    pm = PipelineManager({"store": {"url": str(tmp_path / "store")}})
    app = FastAPI()
    app.include_router(create_router(pm, pipelines=[numbers(), slow(), broken()]), prefix="/api")
    with Server(app) as url:
        yield url, pm
    pm.close()


def wait_done(
    client: httpx.Client, run_id: str, timeout: float = 30, api: str = "/api"
) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = client.get(f"{api}/runs/{run_id}").json()
        if body["status"] not in ("pending", "running"):
            return body
        time.sleep(0.05)
    pytest.fail(f"run {run_id} did not finish")


def test_start_a_run_follow_it_and_get_its_result(api) -> None:
    url, _ = api
    with httpx.Client(base_url=url, timeout=30) as client:
        started = client.post("/api/pipelines/numbers/runs", json={"parallel": True})
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        status = wait_done(client, run_id)
        assert status["status"] == "succeeded"
        assert set(status["tasks"]) == {"load", "square", "total"}
        assert all(
            t["status"] == "succeeded" and t["duration"] >= 0 for t in status["tasks"].values()
        )
        result = client.get(f"/api/runs/{run_id}/result")
        assert result.status_code == 200
        assert result.json()["final_result"] == {"total": 285, "count": 10}
        listed = {p["name"]: p for p in client.get("/api/pipelines").json()}
        assert listed["numbers"]["last_run"]["run_id"] == run_id
        assert listed["numbers"]["tasks"] == ["load", "square", "total"]
        assert listed["slow"]["last_run"] is None


def test_result_while_running_failed_and_cancelled(api) -> None:
    url, _ = api
    with httpx.Client(base_url=url, timeout=30) as client:
        run_id = client.post("/api/pipelines/slow/runs").json()["run_id"]
        early = client.get(f"/api/runs/{run_id}/result")
        assert early.status_code == 409 and "still" in early.json()["detail"]
        assert client.get(f"/api/runs/{run_id}").json()["tasks"]["wait"]["status"] == "running"
        cancelled = client.post(f"/api/runs/{run_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert client.get(f"/api/runs/{run_id}/result").status_code == 410

        # wait=0: the answer comes at once; the run stops when its running task ends
        other = client.post("/api/pipelines/slow/runs").json()["run_id"]
        before = client.get(f"/api/runs/{other}")
        assert before.json()["status"] in ("pending", "running")
        asked = time.monotonic()
        at_once = client.post(f"/api/runs/{other}/cancel", params={"wait": 0})
        assert time.monotonic() - asked < 1.0
        assert at_once.status_code == 200 and at_once.json()["status"] in (
            "pending",
            "running",
            "cancelled",
        )
        assert wait_done(client, other)["status"] == "cancelled"
        assert wait_done(client, other)["tasks"]["after"]["status"] == "cancelled"

        failed_id = client.post("/api/pipelines/broken/runs").json()["run_id"]
        assert wait_done(client, failed_id)["status"] == "failed"
        failed = client.get(f"/api/runs/{failed_id}/result")
        assert failed.status_code == 424
        assert failed.json()["failed_task"] == "fail"
        assert "ZeroDivisionError" in failed.json()["error"]
        assert failed.json()["detail"] == f"run {failed_id} failed in task 'fail'"


def test_unknown_names_are_404_and_bad_bodies_422(api) -> None:
    url, _ = api
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/api/pipelines/nope/runs").status_code == 404
        assert client.get("/api/runs/nope").status_code == 404
        assert client.get("/api/runs/nope/result").status_code == 404
        assert client.post("/api/runs/nope/cancel").status_code == 404
        # run routes take run ids only, not the pipeline names get_pipeline_status also knows
        assert client.get("/api/runs/slow").status_code == 404  # declared, never run
        assert client.get("/api/runs/slow/result").status_code == 404
        assert client.post("/api/runs/nope/cancel?wait=-1").status_code == 422
        bad = client.post("/api/pipelines/numbers/runs", json={"parallel": "sometimes"})
        assert bad.status_code == 422
        typo = client.post("/api/pipelines/numbers/runs", json={"paralel": False})
        assert typo.status_code == 422
        assert typo.json()["detail"][0]["loc"][-1] == "paralel"
        schema = client.get("/openapi.json").json()
        paths = schema["paths"]
        assert "404" in paths["/api/pipelines/{name}/runs"]["post"]["responses"]
        assert {"409", "410", "424"} <= set(paths["/api/runs/{run_id}/result"]["get"]["responses"])


def test_results_of_runs_another_process_made(api, tmp_path) -> None:
    """A run made elsewhere on the same store: its status, and its result if it saved it."""
    url, _ = api
    store = str(tmp_path / "store")
    with PipelineManager({"store": {"url": store}, "save_intermediate_results": True}) as other:
        saved = other.execute_pipeline(numbers()).run_id
    with PipelineManager({"store": {"url": store}}) as other:
        unsaved = other.execute_pipeline(numbers()).run_id
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get(f"/api/runs/{saved}").json()["status"] == "succeeded"
        got = client.get(f"/api/runs/{saved}/result")
        assert got.status_code == 200, got.text
        assert got.json() == {
            "run_id": saved,
            "pipeline": "numbers",
            "encoding": "json",
            "final_result": {"total": 285, "count": 10},
        }
        missing = client.get(f"/api/runs/{unsaved}/result")
        assert missing.status_code == 404
        assert "save_intermediate_results" in missing.json()["detail"]


def test_results_let_go_of_come_from_the_store(tmp_path, monkeypatch) -> None:
    from xlibrary.pipeline import handles

    monkeypatch.setattr(handles, "KEEP_VALUES", 1)
    config = {"store": {"url": str(tmp_path / "store")}, "save_intermediate_results": True}
    with PipelineManager(config) as pm, PipelineManager({"store": config["store"]}) as plain:
        app = FastAPI()
        app.include_router(create_router(pm, pipelines=[numbers()]), prefix="/saved")
        app.include_router(create_router(plain, pipelines=[numbers()]), prefix="/plain")
        with Server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            for api in ("/saved", "/plain"):
                ids = [client.post(f"{api}/pipelines/numbers/runs").json()["run_id"] for _ in "ab"]
                for run_id in ids:
                    assert wait_done(client, run_id, api=api)["status"] == "succeeded"
                client.post(f"{api}/pipelines/numbers/runs")  # the first run's values go
                got = client.get(f"{api}/runs/{ids[0]}/result")
                if api == "/saved":  # read back from the store
                    assert got.status_code == 200
                    assert got.json()["final_result"] == {"total": 285, "count": 10}
                else:
                    assert got.status_code == 404
                    assert "let go" in got.json()["detail"]


def test_twenty_runs_at_once(api) -> None:
    url, _ = api

    async def go() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            started = await asyncio.gather(
                *(client.post("/api/pipelines/numbers/runs") for _ in range(20))
            )
            ids = [r.json()["run_id"] for r in started]
            assert len(set(ids)) == 20

            async def result(run_id: str) -> dict[str, Any]:
                while True:
                    response = await client.get(f"/api/runs/{run_id}/result")
                    if response.status_code != 409:
                        assert response.status_code == 200, response.text
                        return response.json()
                    await asyncio.sleep(0.05)

            return await asyncio.gather(*(result(i) for i in ids))

    results = asyncio.run(go())
    assert [r["final_result"] for r in results] == [{"total": 285, "count": 10}] * 20


def test_guide_fastapi_example_as_written(tmp_path, monkeypatch) -> None:
    """The guide's two endpoints, with only their imports added."""
    monkeypatch.setenv("XLIBRARY_STORE", str(tmp_path / "guide-store"))
    namespace: dict[str, Any] = {}
    from tests.test_guide import PRELUDE, guide_blocks

    code = PRELUDE + "from fastapi import FastAPI, BackgroundTasks\n"
    code += guide_blocks()["FastAPI Integration"]
    exec(compile(code, "guide-fastapi", "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, FastAPI) and BackgroundTasks is namespace["BackgroundTasks"]
    with Server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        answer = client.post("/process-data", json={"sensor": "t1", "value": 21.5})
        assert answer.json() == {
            "message": "Processing started",
            "pipeline_id": "api_data_processing",
        }
        deadline = time.time() + 30
        status: dict[str, Any] = {}
        while time.time() < deadline:
            # from the first request on: pending until the background task starts the run
            response = client.get("/pipeline-status/api_data_processing")
            assert response.status_code == 200, response.text
            status = response.json()
            assert status["status"]["status"] in ("pending", "running", "succeeded")
            if status["status"]["status"] == "succeeded":
                break
            time.sleep(0.05)
        assert status["pipeline_id"] == "api_data_processing"
        assert status["status"]["status"] == "succeeded"
        assert status["status"]["tasks"]["process_request"]["status"] == "succeeded"
    namespace["pm"].close()


class Slotted:
    """A value with no ``__dict__`` and no JSON form."""

    __slots__ = ("x",)

    def __init__(self, x: int) -> None:
        self.x = x

    def __repr__(self) -> str:
        return f"Slotted({self.x})"


def returning(name: str, value: Any) -> Pipeline:
    p = Pipeline(name)
    p.task("make")(lambda: value)
    return p


def test_results_without_a_json_form_answer_a_documented_fallback(tmp_path) -> None:
    values = {
        "raw_bytes": b"\xff\xfe\x00binary",
        "text_bytes": "café".encode(),
        "slotted": Slotted(3),
        "nested_slotted": {"rows": [1, Slotted(4)]},
        "not_finite": {"mean": float("nan"), "max": float("inf"), "n": 2},
    }
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as pm:
        app = FastAPI()
        pipelines = [returning(name, value) for name, value in values.items()]
        app.include_router(create_router(pm, pipelines=pipelines))
        with Server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            bodies = {}
            for name in values:
                run_id = client.post(f"/pipelines/{name}/runs").json()["run_id"]
                assert wait_done(client, run_id, api="")["status"] == "succeeded"
                answer = client.get(f"/runs/{run_id}/result")
                assert answer.status_code == 200, (name, answer.status_code, answer.text)
                bodies[name] = answer.json()
    assert bodies["raw_bytes"]["encoding"] == "base64"
    assert base64.b64decode(bodies["raw_bytes"]["final_result"]) == values["raw_bytes"]
    assert bodies["text_bytes"] == {
        **bodies["text_bytes"],
        "encoding": "json",
        "final_result": "café",
    }
    assert bodies["slotted"]["encoding"] == "repr"
    assert bodies["slotted"]["final_result"] == "Slotted(3)"
    assert bodies["nested_slotted"]["encoding"] == "repr"
    assert bodies["nested_slotted"]["final_result"] == "{'rows': [1, Slotted(4)]}"
    assert bodies["not_finite"]["encoding"] == "json"
    assert bodies["not_finite"]["final_result"] == {"mean": None, "max": None, "n": 2}


def traceback_in_message() -> None:
    try:
        {}["missing"]
    except KeyError:
        raise RuntimeError("the remote step failed:\n" + traceback.format_exc()) from None


def test_a_failed_run_answers_424_without_stack_traces(tmp_path) -> None:
    p = Pipeline("noisy")
    p.task("remote_step")(traceback_in_message)
    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as pm:
        app = FastAPI()
        app.include_router(create_router(pm, pipelines=[p]))
        with Server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            run_id = client.post("/pipelines/noisy/runs").json()["run_id"]
            status = wait_done(client, run_id, api="")
            answer = client.get(f"/runs/{run_id}/result")
    assert status["status"] == "failed"
    assert answer.status_code == 424
    body = answer.json()
    assert isinstance(body["detail"], str) and "remote_step" in body["detail"]
    assert body["failed_task"] == "remote_step"
    assert "RuntimeError: the remote step failed:" in body["error"]
    for shown in (answer.text, str(status["error"])):
        assert "Traceback" not in shown and 'File "' not in shown


def test_openapi_has_status_enums_one_problem_type_and_readable_operation_ids(api) -> None:
    url, _ = api
    with httpx.Client(base_url=url, timeout=30) as client:
        schema = client.get("/openapi.json").json()
    models = schema["components"]["schemas"]
    run_states = ["pending", "running", "succeeded", "failed", "cancelled"]
    task_states = [
        "pending", "running", "finished", "succeeded", "failed", "skipped", "cached", "cancelled",
        "not_selected",
    ]  # fmt: skip

    def enum(model: str) -> list[str]:
        field = models[model]["properties"]["status"]
        if "$ref" in field:  # the enum of the states, shared by the models
            field = models[field["$ref"].rpartition("/")[2]]
        return list(field["enum"])

    assert enum("RunStatus") == run_states
    assert enum("RunStarted") == run_states
    assert enum("TaskState") == task_states
    assert models["Problem"]["properties"]["detail"]["type"] == "string"
    assert models["RunResult"]["properties"]["encoding"]["enum"] == ["json", "base64", "repr"]
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert operations == {"list_pipelines", "start_run", "get_run", "get_run_result", "cancel_run"}


def test_dependencies_guard_every_route(tmp_path) -> None:
    """The router has no authentication of its own: FastAPI dependencies add it."""
    from fastapi import Depends, HTTPException, Security
    from fastapi.security import APIKeyHeader

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def require_key(key: str | None = Security(key_header)) -> None:
        if key != "let-me-in":
            raise HTTPException(401, "a valid X-API-Key header is required")

    with PipelineManager({"store": {"url": str(tmp_path / "store")}}) as pm:
        app = FastAPI()
        router = create_router(pm, pipelines=[numbers()], dependencies=[Depends(require_key)])
        app.include_router(router, prefix="/api")
        with Server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            for method, path in [
                ("GET", "/api/pipelines"),
                ("POST", "/api/pipelines/numbers/runs"),
                ("GET", "/api/runs/x"),
                ("GET", "/api/runs/x/result"),
                ("POST", "/api/runs/x/cancel"),
            ]:
                assert client.request(method, path).status_code == 401, path
            keyed = {"X-API-Key": "let-me-in"}
            started = client.post("/api/pipelines/numbers/runs", headers=keyed)
            assert started.status_code == 202
            schema = client.get("/openapi.json").json()
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]

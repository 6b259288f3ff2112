"""A FastAPI router that starts runs and reports on them.

::

    from fastapi import FastAPI
    from xlibrary.pipeline.integrations.fastapi import create_router

    app = FastAPI()
    app.include_router(create_router(pm, pipelines=[etl, reports]), prefix="/pipelines-api")

Routes (all described in the app's OpenAPI schema):

* ``GET  /pipelines``: the pipelines, each with its last run;
* ``POST /pipelines/{name}/runs``: start a run (``{"parallel": true, "params": {...}}``;
  ``targets``, ``from_tasks`` and ``tags`` run part of it), 202 with its run id; a parameter no
  task takes, or one with no value, is a 422 naming it; 400 when the selection names no task
  or an input of it has no source;
* ``GET  /runs/{run_id}``: the run's status and each task's state and timings;
* ``GET  /runs/{run_id}/result``: the final result; 409 while the run goes, 424 when it
  failed (with the failed task and its error), 410 when it was cancelled; a run another process
  made answers from the results it saved in the store (``save_intermediate_results``);
* ``POST /runs/{run_id}/cancel?wait=30``: cancel the run, waiting up to ``wait`` seconds for it
  to stop.

An unknown pipeline or run is 404; a bad body is 422. Every error but a 422 is a ``Problem``:
``{"detail": "..."}`` (a 424 adds ``failed_task`` and ``error``). Error texts are one line: a
task's traceback stays in the run record (``pm.get_error_details``), never in an answer.

A result is sent as ``final_result`` with its ``encoding``: ``json`` (the value as JSON:
DataFrames as lists of records, arrays as lists, NaN and infinities as null), ``base64`` (bytes
that are not UTF-8 text) or ``repr`` (a value with no JSON form: its ``repr()`` text).

Runs go through ``pm.submit``: the request returns at once and the run goes on in the manager's
threads (or its cluster), so the server stays responsive.

The router has no authentication of its own. Add it with FastAPI dependencies, which guard
every route::

    from fastapi import Depends, HTTPException, Security
    from fastapi.security import APIKeyHeader

    api_key = APIKeyHeader(name="X-API-Key", auto_error=False)

    def require_key(key: str | None = Security(api_key)) -> None:
        if not secrets.compare_digest(key or "", os.environ["PIPELINES_API_KEY"]):
            raise HTTPException(401, "a valid X-API-Key header is required")

    app.include_router(create_router(pm, dependencies=[Depends(require_key)]), prefix="/api")
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from .. import records
from ..errors import ConfigError, PipelineError, SelectionError, missing_extra
from ..handles import KEEP_VALUES
from ..manager import PipelineManager
from ..pipeline import Pipeline
from ..states import RunState, TaskStatus

__all__ = ["create_router", "jsonable"]

try:
    from fastapi import APIRouter, HTTPException, Query
    from fastapi.params import Depends
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra("fastapi", "fastapi", "the FastAPI router") from exc


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is a 422, not ignored

    parallel: bool = Field(default=True, description="Run independent tasks at the same time.")
    params: dict[str, Any] | None = Field(
        default=None,
        description="Values of the tasks' keyword-only parameters, by name, over their "
        "defaults and the pipeline's; an unknown name is a 422.",
    )
    targets: list[str] | None = Field(default=None, description="Run only what these tasks need.")
    from_tasks: list[str] | None = Field(
        default=None,
        description="Run these tasks and what is downstream of them; their inputs come from "
        "the cache or the saved results of earlier runs.",
    )
    tags: list[str] | None = Field(
        default=None, description="Run only the tasks with one of these tags."
    )


Encoding = Literal["json", "base64", "repr"]


class RunStarted(BaseModel):
    run_id: str
    pipeline: str
    status: RunState


class TaskState(BaseModel):
    status: TaskStatus = Field(
        description="pending, running (or finished, on a cluster, until the run ends), then "
        "how it ended: succeeded, failed, skipped (an upstream task failed), cached, cancelled; "
        "not_selected: the run's targets, from_tasks or tags left it out."
    )
    duration: float | None = None
    attempts: int | None = None
    params: dict[str, Any] | None = Field(
        None, description="The parameter values the task was called with, if it has any."
    )


class RunStatus(BaseModel):
    """A run's status: :class:`xlibrary.pipeline.records.RunStatus` as JSON."""

    pipeline: str
    run_id: str
    status: RunState
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    duration: float | None = None
    failed_task: str | None = None
    error: str | None = Field(
        None, description="Why the run failed, in one line (the traceback is not sent)."
    )
    tasks: dict[str, TaskState]
    params: dict[str, Any] | None = Field(
        None,
        description="The run's parameter values, by name (a value JSON cannot hold: its repr).",
    )


class PipelineInfo(BaseModel):
    name: str
    tasks: list[str]
    last_run: RunStatus | None = None


class RunResult(BaseModel):
    run_id: str
    pipeline: str
    encoding: Encoding = Field(
        description="How final_result holds the value: json (the value itself; DataFrames as "
        "lists of records, arrays as lists, NaN and infinities as null), base64 (bytes that "
        "are not UTF-8 text) or repr (a value with no JSON form: its repr() text)."
    )
    final_result: Any


class Problem(BaseModel):
    detail: str = Field(description="What went wrong, and what to do about it.")


class RunFailed(Problem):
    failed_task: str | None = None
    error: str | None = Field(
        None, description="Why the run failed, in one line (the traceback is not sent)."
    )


class NoJSONForm(ValueError):
    """A value (or a part of it) that JSON cannot hold."""


MAX_ERROR_TEXT = 1000
"""Characters of an error text an answer carries at most."""


def as_model(found: records.RunStatus) -> RunStatus:
    """The API's form of a run's status: its error in one line (no traceback)."""
    shown = dataclasses.replace(found, error=one_line(found.error))
    return RunStatus.model_validate(shown.to_json())


def one_line(text: str | None) -> str | None:
    """An error text as the API shows it: before any traceback, its first line, at most
    ``MAX_ERROR_TEXT`` characters."""
    if text is None:
        return None
    head = text.split("Traceback (most recent call last)", 1)[0].strip()
    line = head.splitlines()[0].strip() if head else ""
    return line if len(line) <= MAX_ERROR_TEXT else line[: MAX_ERROR_TEXT - 1] + "…"


def encoded(value: Any) -> tuple[Encoding, Any]:
    """``value`` as ``RunResult`` sends it: ``(encoding, final_result)``."""
    try:
        return "json", jsonable(value)
    except NoJSONForm:
        if isinstance(value, bytes | bytearray):
            return "base64", base64.b64encode(bytes(value)).decode()
        return "repr", repr(value)


def jsonable(value: Any) -> Any:
    """``value`` as JSON-able data: DataFrames become lists of records, arrays lists, NaN and
    infinities null; :class:`NoJSONForm` when some part of it has no JSON form (bytes that
    are not UTF-8, an object with no fields)."""
    from fastapi.encoders import jsonable_encoder

    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError as exc:
            raise NoJSONForm("bytes that are not UTF-8 text") from exc
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return jsonable(value.to_dict(orient="records"))
    if hasattr(value, "tolist") and callable(value.tolist):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    try:
        converted = jsonable_encoder(value)
    except (ValueError, TypeError) as exc:  # no fields: FastAPI gives up
        raise NoJSONForm(f"{type(value).__name__} has no JSON form") from exc
    return jsonable(converted)  # NaN inside a dataclass or a model


def _saved_final_result(pm: PipelineManager, run_id: str, pipeline: str, why: str) -> Any:
    """The final result of a finished run whose values are not in this process (``why``), from
    the results it saved in the store; 404 when it saved none."""
    record = pm.store.find_record(run_id)
    sinks = list(record.sinks) if record is not None else []
    saved = pm.get_intermediate_results(pipeline, run_id=run_id, tasks=sinks) if sinks else {}
    if not sinks or any(name not in saved for name in sinks):
        raise HTTPException(
            404,
            f"the result of run {run_id} is not here: {why}, and the run did not save its "
            "results in the store; runs with save_intermediate_results: True can be read from "
            "any process, at any time",
        )
    return saved[sinks[0]] if len(sinks) == 1 else {name: saved[name] for name in sinks}


def create_router(
    pm: PipelineManager,
    pipelines: Iterable[Pipeline] | Mapping[str, Pipeline] | None = None,
    *,
    dependencies: Sequence[Depends] | None = None,
) -> APIRouter:
    """The routes above for ``pipelines`` (default: the ones ``pm`` knows by name).

    ``dependencies`` (FastAPI ``Depends(...)``) run before every route: authentication, rate
    limits. The router has none of its own.
    """
    chosen: dict[str, Pipeline] = {}
    if isinstance(pipelines, Mapping):
        chosen.update(pipelines)
    elif pipelines is not None:
        chosen.update({p.name: p for p in pipelines})

    def known() -> dict[str, Pipeline]:
        return chosen or dict(pm.pipelines)

    def status(run_id: str) -> RunStatus:
        try:
            found = pm.get_pipeline_status(run_id)
        except PipelineError:
            found = None
        if found is None or found.run_id != run_id:  # it answers pipeline names: not here
            raise HTTPException(404, f"no run {run_id!r}")
        return as_model(found)

    router = APIRouter(tags=["pipelines"], dependencies=dependencies)
    missing: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}

    @router.get("/pipelines", response_model=list[PipelineInfo], operation_id="list_pipelines")
    def list_pipelines() -> list[PipelineInfo]:
        """The pipelines this API runs, each with its last run."""
        out = []
        for name, pipeline in known().items():
            try:
                found = pm.get_pipeline_status(name)
            except PipelineError:
                found = None
            last = as_model(found) if found is not None and found.run_id else None
            out.append(PipelineInfo(name=name, tasks=list(pipeline.task_names), last_run=last))
        return out

    @router.post(
        "/pipelines/{name}/runs",
        response_model=RunStarted,
        status_code=202,
        responses={**missing, 400: {"model": Problem}},
        operation_id="start_run",
    )
    def start_run(name: str, request: RunRequest | None = None) -> RunStarted:
        """Start a run of pipeline ``name``; returns at once with its run id."""
        pipeline = known().get(name)
        if pipeline is None:
            raise HTTPException(404, f"no pipeline {name!r}; known: {sorted(known())}")
        asked = request or RunRequest()
        try:
            handle = pm.submit(
                pipeline, parallel=asked.parallel, params=asked.params, targets=asked.targets,
                from_tasks=asked.from_tasks, tags=asked.tags,
            )  # fmt: skip
        except SelectionError as exc:
            raise HTTPException(400, one_line(str(exc))) from exc
        except ConfigError as exc:  # an unknown parameter, one without a value
            raise HTTPException(422, one_line(str(exc))) from exc
        return RunStarted(
            run_id=handle.run_id,
            pipeline=name,
            status=handle.status(),
        )

    @router.get(
        "/runs/{run_id}", response_model=RunStatus, responses=missing, operation_id="get_run"
    )
    def run_status(run_id: str) -> RunStatus:
        """The run's status (pending, running, succeeded, failed, cancelled) and its tasks."""
        return status(run_id)

    @router.get(
        "/runs/{run_id}/result",
        response_model=RunResult,
        responses={
            **missing,
            409: {"model": Problem},
            410: {"model": Problem},
            424: {"model": RunFailed},
        },
        operation_id="get_run_result",
    )
    def run_result(run_id: str) -> Any:
        """The run's final result, once it has succeeded, with how it is encoded."""
        found = status(run_id)
        state = found.status
        if state in (RunState.PENDING, RunState.RUNNING):
            raise HTTPException(409, f"run {run_id} is still {state}")
        if state is RunState.CANCELLED:
            raise HTTPException(410, f"run {run_id} was cancelled")
        if state is RunState.FAILED:
            failed_task = found.failed_task
            where = f" in task {failed_task!r}" if failed_task else ""
            problem = RunFailed(
                detail=f"run {run_id} failed{where}",
                failed_task=failed_task,
                error=found.error,
            )
            return JSONResponse(problem.model_dump(), status_code=424)
        handle = pm.handle(run_id)
        result = handle.result_with_values() if handle is not None else None
        if result is not None:
            final = result.final_result
        else:  # another process's run, or one whose values this server let go: the store's
            why = (
                f"its values were let go (this server keeps the last {KEEP_VALUES} submitted "
                "runs' results)"
                if handle is not None
                else "it was not started by this server"
            )
            final = _saved_final_result(pm, run_id, found.pipeline, why)
        encoding, sent = encoded(final)
        return RunResult(
            run_id=run_id, pipeline=found.pipeline, encoding=encoding, final_result=sent
        )

    @router.post(
        "/runs/{run_id}/cancel",
        response_model=RunStatus,
        responses=missing,
        operation_id="cancel_run",
    )
    def cancel_run(
        run_id: str,
        wait: float = Query(
            30.0,
            ge=0,
            le=300,
            description="Seconds to wait for the run to stop (its running tasks finish first); "
            "0 answers at once, with the run still running until they do.",
        ),
    ) -> RunStatus:
        """Cancel the run: it starts no further task."""
        handle = pm.handle(run_id)
        if handle is None:
            raise HTTPException(404, f"no run {run_id!r} started by this server")
        handle.cancel()
        if wait > 0:
            with contextlib.suppress(Exception):  # cancelled, failed, or still going: see status
                handle.result(timeout=wait)
        return status(run_id)

    return router

"""Run records and saved intermediate results, on the fsspec store.

Layout under the store URL::

    runs/<pipeline>/latest.json                     {"run_id": ...}, the last run started
    runs/<pipeline>/<run_id>/record.json            the run record (JSON, below)
    runs/<pipeline>/<run_id>/results/<task>.entry   a saved result (an entry, as in the cache)

A record holds the run id, the pipeline, its status (``running``, ``succeeded``, ``failed``),
start and end times, and per task its status, attempts, timings, error (type, message,
traceback), where its result came from (``source``: a cache key or an earlier run) and
whether it was saved. Records and results written by one process are read by any other
process with the same store: they are the state that ``retry_failed_task`` and ``resume``
continue from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from . import codec
from .codec import BadEntry
from .fs import FsStore

__all__ = ["RunStore"]


def _slug(name: str) -> str:
    return quote(name, safe="") or "_"


class RunStore:
    """Run records and intermediates of every pipeline, on one store."""

    def __init__(self, store: FsStore, *, secret: bytes | None = None) -> None:
        self.store = store
        self.secret = secret
        self.opened_by: tuple[Any, ...] | None = None
        """``(factory, args)`` when made by ``open_runs``: pickles as that call."""

    def __reduce__(self) -> tuple[Any, ...]:
        if self.opened_by is not None:
            return self.opened_by
        return (RunStore, (self.store,), {"secret": self.secret})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def url(self) -> str:
        return self.store.url

    # -- records --------------------------------------------------------------------------
    def write_record(self, record: dict[str, Any], *, latest: bool = True) -> None:
        pipeline, run_id = record["pipeline"], record["run_id"]
        data = json.dumps(record, indent=1, default=str).encode()
        self.store.write(f"runs/{_slug(pipeline)}/{run_id}/record.json", data)
        if latest:
            pointer = json.dumps({"run_id": run_id}).encode()
            self.store.write(f"runs/{_slug(pipeline)}/latest.json", pointer)

    def latest_run_id(self, pipeline: str) -> str | None:
        raw = self.store.read(f"runs/{_slug(pipeline)}/latest.json")
        if raw is None:
            return None
        try:
            run_id = json.loads(raw)["run_id"]
        except (ValueError, KeyError, TypeError):
            return None
        return str(run_id)

    def read_record(self, pipeline: str, run_id: str | None = None) -> dict[str, Any] | None:
        """The record of ``run_id`` (default: the latest run) of ``pipeline``, or ``None``."""
        run_id = run_id or self.latest_run_id(pipeline)
        if run_id is None:
            return None
        raw = self.store.read(f"runs/{_slug(pipeline)}/{run_id}/record.json")
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        return record

    def find_record(self, run_id: str) -> dict[str, Any] | None:
        """The record of ``run_id`` in whichever pipeline it belongs to."""
        for path in self.store.list("runs"):
            parts = path.split("/")
            if len(parts) == 4 and parts[2] == run_id and parts[3] == "record.json":
                raw = self.store.read(path)
                if raw is not None:
                    record: dict[str, Any] = json.loads(raw)
                    return record
        return None

    def records(self, pipeline: str) -> Iterator[dict[str, Any]]:
        """Every record of ``pipeline``, oldest first."""
        for path in self.store.list(f"runs/{_slug(pipeline)}"):
            if path.endswith("/record.json"):
                raw = self.store.read(path)
                if raw is not None:
                    yield json.loads(raw)

    # -- intermediate results -----------------------------------------------------------------
    def _result_path(self, pipeline: str, run_id: str, task: str) -> str:
        return f"runs/{_slug(pipeline)}/{run_id}/results/{_slug(task)}.entry"

    def save_result(self, pipeline: str, run_id: str, task: str, value: Any) -> None:
        """Save a task's result under its run; raises SerializationError naming the task."""
        _, header, payload = codec.encode_entry(
            f"{pipeline}/{run_id}/{task}", value, task=task, pipeline=pipeline, secret=self.secret
        )
        self.store.write(self._result_path(pipeline, run_id, task), codec.frame(header, payload))

    def load_result(self, pipeline: str, run_id: str, task: str) -> Any:
        """A saved result; raises BadEntry when it is missing, corrupt or tampered with."""
        blob = self.store.read(self._result_path(pipeline, run_id, task))
        if blob is None:
            raise BadEntry(f"no saved result of task {task!r} in run {run_id}")
        _, value = codec.decode_entry(*codec.split(blob), secret=self.secret)
        return value

"""Run records and saved intermediate results, on the fsspec store.

Layout under the store URL::

    runs/<pipeline>/latest.json                     {"run_id": ...}, the last run started
    runs/<pipeline>/<run_id>/record.json            the run record (JSON, below)
    runs/<pipeline>/<run_id>/results/<task>.entry   a saved result (an entry, as in the cache)
    run-index/<yyyymmdd>/<run_id>.json              {"pipeline": ...}: find a run by its id
    run-index/complete.json                         every record of the store is indexed

Pipeline and task names are percent-encoded and run ids have one checked form
(:mod:`.names`): a run id that is not one is refused (``InvalidRunIdError``), and no name or id
can address a file outside its directory.

A record is a :class:`~xlibrary.pipeline.records.RunRecord` in its JSON form: the run id, the
pipeline, its status (``running``, ``succeeded``, ``failed``, ``cancelled``), start and end
times, and per task its status, attempts, timings, error (type, message, traceback), where its
result came from (``source``: a cache key or an earlier run) and whether it was saved. A record
that cannot be read is skipped with a warning. Records and results written by one process are
read by any other process with the same store: they are the state that ``retry_failed_task``
and ``resume`` continue from.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import BadEntry, StorePathError
from ..records import RunRecord
from ..redact import redact_url
from . import codec
from .fs import FsStore
from .names import check_run_id, is_run_id, name_of_slug, slug

__all__ = ["RunStore"]

logger = logging.getLogger(__name__)


class _WriteBehind:
    """Writes records on a background thread, in order, so a run does not wait on the disk.

    Every read of records in this process waits for the writes before it (``flush``), as does
    interpreter exit; other processes see a record a moment after the run returns.
    """

    def __init__(self, store: FsStore) -> None:
        self.store = store
        self._queue: queue.Queue[tuple[str, bytes | Callable[[], bytes], str]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        _writers.add(self)

    def submit(self, path: str, data: bytes | Callable[[], bytes], what: str) -> None:
        """Write ``data`` at ``path`` behind the caller; a callable is called there for the
        bytes (so encoding a big record costs the caller nothing). ``what`` names it in the
        warning when it cannot be written."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="xlibrary-record-writer", daemon=True
                )
                self._thread.start()
        self._queue.put((path, data, what))

    def _work(self) -> None:
        while True:
            path, data, what = self._queue.get()
            try:
                self.store.write(path, data if isinstance(data, bytes) else data())
            except Exception as exc:  # a record lost to a full disk must not kill the writer
                logger.warning(
                    "could not write %s to the store %s (%s): %s",
                    what,
                    redact_url(self.store.url),
                    path,
                    exc,
                )
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()


_writers: weakref.WeakSet[_WriteBehind] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for writer in list(_writers):
        writer.flush()


class RunStore:
    """Run records and intermediates of every pipeline, on one store."""

    def __init__(self, store: FsStore, *, secret: bytes | None = None) -> None:
        self.store = store
        self.secret = secret
        self._writer = _WriteBehind(store)
        self._indexed = False  # every record of the store is in the index
        self._index_started = False  # this process has looked whether it is
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
    def write_record(self, record: RunRecord, *, latest: bool = True, wait: bool = False) -> None:
        """Write a run record (and point ``latest`` at it), in the background unless ``wait``."""
        pipeline, run_id = record.pipeline, record.run_id
        base = _pipeline_dir(pipeline)
        if not self._index_started:
            self._start_index()
        what = f"the record of run {run_id} of pipeline {pipeline!r}"

        def encode() -> bytes:  # in the writer thread: a record is frozen once made
            data = record.to_json()
            return json.dumps(data, separators=(",", ":"), default=str).encode()  # C encoder

        self._writer.submit(f"{base}/{check_run_id(run_id)}/record.json", encode, what)
        index = json.dumps({"pipeline": pipeline}).encode()
        self._writer.submit(_index_path(run_id), index, f"{what} (in the index of runs)")
        if latest:
            pointer = json.dumps({"run_id": run_id}).encode()
            self._writer.submit(f"{base}/latest.json", pointer, f"{what} (as its latest)")
        if wait:
            self.flush()

    def flush(self) -> None:
        """Wait until every record written so far is in the store."""
        self._writer.flush()

    def latest_run_id(self, pipeline: str) -> str | None:
        self.flush()
        base = _recorded_dir(pipeline)
        raw = None if base is None else self.store.read(f"{base}/latest.json")
        if raw is None:
            return None
        try:
            run_id = json.loads(raw)["run_id"]
        except (ValueError, KeyError, TypeError):
            return None
        if not is_run_id(run_id):
            logger.warning(
                "the latest run of pipeline %r in the store %s is %r, which is not a run id; "
                "ignoring it",
                pipeline,
                redact_url(self.store.url),
                run_id,
            )
            return None
        return str(run_id)

    def read_record(self, pipeline: str, run_id: str | None = None) -> RunRecord | None:
        """The record of ``run_id`` (default: the latest run) of ``pipeline``, or ``None``.

        Raises InvalidRunIdError when ``run_id`` is not a run id.
        """
        self.flush()
        if run_id is not None:
            check_run_id(run_id)
        base = _recorded_dir(pipeline)
        run_id = run_id or self.latest_run_id(pipeline)
        if run_id is None or base is None:
            return None
        return self._load(f"{base}/{run_id}/record.json")

    def _load(self, path: str) -> RunRecord | None:
        """The record at ``path``; ``None`` (with a warning) when it is missing or unreadable."""
        raw = self.store.read(path)
        if raw is None:
            return None
        try:
            return RunRecord.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning(
                "the run record %s in the store %s cannot be read (%s); ignoring it",
                path,
                redact_url(self.store.url),
                exc,
            )
            return None

    def find_record(self, run_id: str) -> RunRecord | None:
        """The record of ``run_id`` in whichever pipeline it belongs to (``None`` when the
        store has none, or ``run_id`` is not a run id)."""
        if not is_run_id(run_id):
            return None
        self.flush()
        pipeline = self._indexed_pipeline(run_id)
        if pipeline is None and not self._index_complete():
            self._build_index()
            pipeline = self._indexed_pipeline(run_id)
        return None if pipeline is None else self.read_record(pipeline, run_id)

    def _indexed_pipeline(self, run_id: str) -> str | None:
        raw = self.store.read(_index_path(run_id))
        if raw is None:
            return None
        try:
            pipeline = json.loads(raw)["pipeline"]
        except (ValueError, KeyError, TypeError):
            return None
        return pipeline if isinstance(pipeline, str) else None

    def _index_complete(self) -> bool:
        """Whether every record of the store is in the index (remembered once seen)."""
        if not self._indexed:
            self._indexed = self.store.read(_INDEX_COMPLETE) is not None
        return self._indexed

    def _start_index(self) -> None:
        """On a store with no runs yet, mark the index complete: every record is indexed from
        the first. A store with older, unindexed records is indexed when first searched."""
        self._index_started = True
        try:
            if self._index_complete():
                return
            if not self.store.listdir("runs"):
                self.store.write(_INDEX_COMPLETE, b'{"version": 1}')
                self._indexed = True
        except Exception as exc:  # the records' own writes will say what is wrong
            logger.debug("could not mark the run index of %s: %s", redact_url(self.url), exc)

    def _build_index(self) -> None:
        """Index the records of a store written before the index existed: one walk, once."""
        logger.info("indexing the runs in the store %s by run id (once)", redact_url(self.url))
        for path in self.store.files("runs"):
            parts = path.split("/")
            if len(parts) == 4 and parts[3] == "record.json" and is_run_id(parts[2]):
                entry = {"pipeline": name_of_slug(parts[1])}
                self.store.write(_index_path(parts[2]), json.dumps(entry).encode())
        self.store.write(_INDEX_COMPLETE, b'{"version": 1}')
        self._indexed = True

    def records(self, pipeline: str) -> Iterator[RunRecord]:
        """Every record of ``pipeline``, oldest first."""
        self.flush()
        base = _recorded_dir(pipeline)
        for path in self.store.files(base) if base is not None else ():
            if path.endswith("/record.json"):
                record = self._load(path)
                if record is not None:
                    yield record

    def pipelines(self) -> list[str]:
        """Names of the pipelines with recorded runs."""
        self.flush()
        return [name_of_slug(encoded) for encoded in self.store.listdir("runs")]

    def recent_records(self, pipeline: str, count: int) -> list[RunRecord]:
        """The last ``count`` records of ``pipeline``, oldest first (run ids sort by time)."""
        self.flush()
        base = _recorded_dir(pipeline)
        if base is None:
            return []
        run_ids = [name for name in self.store.listdir(base) if is_run_id(name)]
        out = []
        for run_id in run_ids[-count:]:
            record = self._load(f"{base}/{run_id}/record.json")
            if record is not None:
                out.append(record)
        return out

    # -- intermediate results -----------------------------------------------------------------
    def _result_path(self, pipeline: str, run_id: str, task: str) -> str:
        return f"{_pipeline_dir(pipeline)}/{check_run_id(run_id)}/results/{slug(task)}.entry"

    def save_result(self, pipeline: str, run_id: str, task: str, value: Any) -> None:
        """Save a task's result under its run; raises SerializationError naming the task."""
        _, header, payload = codec.encode_entry(
            f"{pipeline}/{run_id}/{task}", value, task=task, pipeline=pipeline, secret=self.secret
        )
        self.store.write(self._result_path(pipeline, run_id, task), codec.frame(header, payload))

    def load_result(self, pipeline: str, run_id: str, task: str) -> Any:
        """A saved result; raises BadEntry when it is missing, corrupt or tampered with. A
        Dask collection comes back as a :class:`~.codec.StoredCollection` to open."""
        blob = self.store.read(self._result_path(pipeline, run_id, task))
        if blob is None:
            raise BadEntry(f"no saved result of task {task!r} in run {run_id}")
        expect = {"key": f"{pipeline}/{run_id}/{task}", "task": task, "pipeline": pipeline}
        _, value = codec.decode_entry(*codec.split(blob), secret=self.secret, expect=expect)
        if isinstance(value, codec.StoredCollection):
            value = self._resolved(value)
        return value

    def place_result(
        self, pipeline: str, run_id: str, task: str, fmt: str, extension: str
    ) -> codec.StoredCollection:
        """Where the workers write a task's Dask collection saved under its run (then
        ``save_result`` the place once it is written)."""
        folder = f"{_pipeline_dir(pipeline)}/{check_run_id(run_id)}/results"
        return self._resolved(codec.StoredCollection(fmt, f"{folder}/{slug(task)}{extension}"))

    def _resolved(self, stored: codec.StoredCollection) -> codec.StoredCollection:
        return dataclasses.replace(
            stored, url=self.store.url_of(stored.path), storage_options=self.store.storage_options
        )


_INDEX_COMPLETE = "run-index/complete.json"


def _index_path(run_id: str) -> str:
    """Where the index keeps the pipeline of ``run_id``: one read finds a run by its id."""
    return f"run-index/{run_id[:8]}/{check_run_id(run_id)}.json"


def _pipeline_dir(pipeline: str) -> str:
    """``runs/<pipeline>``; raises StorePathError for a name no store can hold."""
    return f"runs/{slug(pipeline)}"


def _recorded_dir(pipeline: str) -> str | None:
    """``runs/<pipeline>`` to read from; ``None`` for a name nothing can be recorded under."""
    try:
        return _pipeline_dir(pipeline)
    except StorePathError:
        return None

"""Outputs: a task's result written to its declared dataset, and read back from there.

A task with ``save_to=URL`` (or a catalog entry of its name) writes its result there once it
succeeds, from wherever it ran (a worker, on a cluster), atomically as the store does; a
versioned one under the run's id. When the task also has a cache key, its cache entry is not
a second copy of the value but a small note of where it lies (:func:`~.sources.output_ref`):
the version and the fingerprint of what was written. A later run with the same key is
``cached`` from the dataset while the file is as it was written; changed or gone, the task
runs again (:class:`OutputLoader` says ``stale`` and the engine reruns it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .datasets import Dataset
from .outcome import Outcome
from .redact import redact_url
from .sources import output_problem, output_ref
from .states import STALE, TaskStatus

__all__ = ["OutputLoader", "read_output", "source_of_output", "write_output"]

logger = logging.getLogger("xlibrary.pipeline.wrapper")


def write_output(dataset: Dataset, value: Any, run_id: str, *, keyed: bool) -> Any:
    """Write ``value`` to ``dataset`` (a versioned one as version ``run_id``); returns what
    the cache keeps for it when ``keyed`` (else ``None``). Raises what the write raises."""
    version = dataset.save(value, version=run_id if dataset.versioned else None)
    return output_ref(dataset, version) if keyed else None


def read_output(dataset: Dataset, ref: Any, task: str) -> tuple[bool, Any]:
    """``(True, value)`` read from the output ``ref`` points at, or ``(False, None)`` with a
    warning when it changed or cannot be read (the task runs again)."""
    problem = output_problem(dataset, ref)
    if problem is None:
        try:
            return True, dataset.load(version=ref.get("version"))
        except Exception as exc:
            problem = f"its saved output cannot be read ({exc})"
    logger.warning("task %r is not cached from its output: %s; it runs again", task, problem)
    return False, None


def source_of_output(dataset: Dataset, ref: Any) -> str:
    """``dataset:<url>`` (and ``@<version>``): where a cached result was read from."""
    version = ref.get("version") if isinstance(ref, dict) else None
    return f"dataset:{redact_url(dataset.url)}" + (f"@{version}" if version else "")


class OutputLoader:
    """Stands in for a task whose result is its saved output, found up to date before the
    run: ``saved`` (its cache entry) says which version and what was written, ``token``
    stands for the value in downstream keys. The output is checked again as it is read."""

    __slots__ = ("dataset", "name", "saved", "token")

    def __init__(self, name: str, dataset: Dataset, saved: Any, token: str) -> None:
        self.name = name
        self.dataset = dataset
        self.saved = saved
        self.token = token

    def __reduce__(self) -> tuple[Any, ...]:
        return (OutputLoader, (self.name, self.dataset, self.saved, self.token))

    def __dask_tokenize__(self) -> tuple[str, str, int]:
        return ("xlibrary.OutputLoader", self.name, id(self))

    def __call__(self) -> Outcome:
        started = time.time()
        ok, value = read_output(self.dataset, self.saved, self.name)
        if not ok:
            return Outcome(status=STALE, cause=self.name)
        return Outcome(
            status=TaskStatus.CACHED, value=value, started=started, finished=time.time(),
            token=self.token, source=source_of_output(self.dataset, self.saved),
        )  # fmt: skip

"""Every error the engine raises, under one root.

::

    PipelineError
    ├── ConfigError (ValueError)                 a config key is unknown or holds the wrong type
    ├── PipelineDefinitionError (ValueError)     the pipeline cannot run as declared
    │   ├── DuplicateTaskError                   two tasks share a name
    │   ├── UnknownDependencyError               depends_on names no task ("did you mean ...")
    │   ├── DependencyCycleError                 the tasks depend on each other in a circle
    │   ├── EmptyPipelineError                   the pipeline has no tasks
    │   └── TaskSignatureError (TypeError)       the function cannot take its dependencies' results
    ├── SelectionError (ValueError)              targets/from_tasks/tags select nothing, or an
    │                                            input of the selected tasks has no source
    ├── PipelineExecutionError (RuntimeError)    a task failed during a run
    ├── RunCancelled                             a run was cancelled before it finished
    ├── TaskTimeoutError (TimeoutError)          a task ran longer than its timeout
    ├── ClusterError (ConnectionError)           the Dask cluster cannot be started or reached
    ├── ResourceError (ValueError)               no worker can ever give a task what it asks
    ├── MissingExtraError (ImportError)          an optional dependency is not installed
    ├── StreamError                              a stream cannot start, or stopped on a record
    │   └── StreamDeliveryError (ConnectionError)  a sink could not deliver a batch this time
    ├── BadEntry                                 a stored entry is corrupt, foreign or tampered with
    ├── SerializationError (TypeError)           a task's result cannot be serialized
    ├── TaskOutputError (TypeError)              a result does not fit the task's named outputs
    ├── MapInputError (TypeError)                a mapped task's input is not a sequence
    ├── InvalidRunIdError (ValueError)           a run id not of the form the engine makes
    ├── StorePathError (ValueError)              a path or name the store cannot hold in its root
    ├── DatasetError                             a dataset cannot be declared, loaded or saved
    │   ├── DatasetNotFoundError (FileNotFoundError)  nothing at a dataset's URL
    │   └── UnknownDatasetError (KeyError)       a catalog has no dataset of that name
    └── TaskError                                for users: raise it (or a subclass) from a task
        ├── ExtractionError                      as in the guide's ETL example
        └── ValidationError                      as in the guide's ML example

Every message names the thing that is wrong and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "BadEntry",
    "ClusterError",
    "ConfigError",
    "DatasetError",
    "DatasetNotFoundError",
    "DependencyCycleError",
    "DuplicateTaskError",
    "EmptyPipelineError",
    "ExtractionError",
    "InvalidRunIdError",
    "MapInputError",
    "MissingExtraError",
    "PipelineDefinitionError",
    "PipelineError",
    "PipelineExecutionError",
    "ResourceError",
    "RunCancelled",
    "SelectionError",
    "SerializationError",
    "StorePathError",
    "StreamDeliveryError",
    "StreamError",
    "TaskError",
    "TaskOutputError",
    "TaskSignatureError",
    "TaskTimeoutError",
    "UnknownDatasetError",
    "UnknownDependencyError",
    "ValidationError",
    "did_you_mean",
]


class PipelineError(Exception):
    """Root of every error raised by xlibrary.pipeline."""


class ConfigError(PipelineError, ValueError):
    """A ``PipelineManager`` config key is unknown, misspelt, or holds a value of the wrong type."""


class PipelineDefinitionError(PipelineError, ValueError):
    """The pipeline cannot run as declared; raised before any task runs."""


class DuplicateTaskError(PipelineDefinitionError):
    """Two tasks of one pipeline share a name."""


class UnknownDependencyError(PipelineDefinitionError):
    """A task's ``depends_on`` names a task the pipeline does not have."""


class DependencyCycleError(PipelineDefinitionError):
    """The tasks depend on each other in a circle; ``cycle`` lists it, first task repeated last."""

    def __init__(self, message: str, cycle: list[str]) -> None:
        super().__init__(message)
        self.cycle = cycle


class EmptyPipelineError(PipelineDefinitionError):
    """The pipeline has no tasks."""


class TaskSignatureError(PipelineDefinitionError, TypeError):
    """A task's function is not callable, or cannot take its dependencies' results."""


class SelectionError(PipelineError, ValueError):
    """A run's ``targets``, ``from_tasks`` or ``tags`` name no task (or select none), or an
    input of the selected tasks has no source (no cache entry, no saved result); raised before
    any task runs."""


class PipelineExecutionError(PipelineError, RuntimeError):
    """A task failed during a run.

    ``result.error`` holds one of these when a run fails, and ``execute_pipeline`` raises it
    with ``debug_mode`` or ``raise_on_failure=True``. The task's own exception is ``__cause__``
    (also ``exception``); ``stack_trace`` is its traceback, starting at the user's frames.
    """

    def __init__(
        self,
        message: str,
        *,
        pipeline: str,
        failed_task: str,
        error_message: str,
        stack_trace: str,
        run_id: str,
        exception: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.pipeline = pipeline
        self.failed_task = failed_task
        self.error_message = error_message
        self.stack_trace = stack_trace
        self.run_id = run_id
        self.exception = exception

    def without_exception(self) -> PipelineExecutionError:
        """The same error without the task's exception object (its message and stack trace
        stay, as text): cheap to keep, and pickles anywhere."""
        return PipelineExecutionError(self.args[0], **{**self._fields(), "exception": None})

    def _fields(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __reduce__(self) -> tuple[object, ...]:
        # the keyword fields as a dict: adding one touches __init__ only
        return (_rebuild_execution_error, (self.args[0], self._fields()))


def _rebuild_execution_error(message: str, fields: dict[str, Any]) -> PipelineExecutionError:
    error = PipelineExecutionError(message, **fields)
    error.__cause__ = error.exception
    return error


class RunCancelled(PipelineError):
    """A run was cancelled (``handle.cancel()``) before it finished.

    ``result`` is how far it got (a ``PipelineResult`` without values: the tasks that finished
    with their states, the others ``cancelled``), or ``None`` when it never started.
    """

    result: Any = None


class TaskTimeoutError(PipelineError, TimeoutError):
    """A task ran longer than its timeout (``fault_tolerance.task_timeout`` or ``timeout=``)."""


class ClusterError(PipelineError, ConnectionError):
    """The Dask cluster cannot be started or reached, or its workers cannot run our tasks."""


class ResourceError(PipelineError, ValueError):
    """A task asks for resources that no worker of the cluster can ever give it."""


class MissingExtraError(PipelineError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class StreamError(PipelineError):
    """A stream cannot start (a bad source or sink config), or stopped on a record or batch it
    could not process, write or commit."""


class StreamDeliveryError(StreamError, ConnectionError):
    """A sink could not deliver a batch this time (a broker or database out of reach): the
    stream tries the batch again before it stops. A plain :class:`StreamError` from a sink
    means the batch can never be written as it is, and is not tried again."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'extract'?"`` for the closest of ``candidates``, or ``""``: the one
    spelling hint every message of the library uses."""
    close = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class BadEntry(PipelineError):
    """A stored entry (cache entry, saved result) that is short, corrupt, foreign, tampered
    with or unsigned: read as a cache miss, never as a value."""


class SerializationError(PipelineError, TypeError):
    """A task's result cannot be serialized: for the store or cache, or to travel from a
    Dask worker to where it is needed."""


class TaskOutputError(PipelineError, TypeError):
    """A task declared with ``outputs=[...]`` returned something that does not fit them: not a
    tuple, list or mapping, the wrong number of values, or a mapping without one of them."""


class MapInputError(PipelineError, TypeError):
    """The dependency a task maps over (``map_over=``) gave something that is not a sequence
    of elements (a string, a mapping, a set, a generator, a lazy Dask collection)."""


class InvalidRunIdError(PipelineError, ValueError):
    """A run id that is not of the form the engine makes (``20261128T082121.123456-3fa2c1d0``)."""


class StorePathError(PipelineError, ValueError):
    """A path or name the store cannot hold inside its root (``..``, an absolute path, a name
    too long for a file name)."""


class DatasetError(PipelineError):
    """A dataset cannot be declared (an unknown format, a bad catalog entry), loaded or saved;
    the message names the dataset, its URL (secrets hidden) and the fix."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """Nothing is at a dataset's URL (no file, no match of its glob, no saved version)."""


class UnknownDatasetError(DatasetError, KeyError):
    """A catalog has no dataset of that name; the message names the closest and the known."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


def missing_extra(package: str, extra: str, feature: str) -> MissingExtraError:
    """The error for a missing optional dependency, naming the extra that brings it."""
    return MissingExtraError(
        f"{feature} needs the {package!r} package, which is not installed; "
        f'install it with: pip install "xlibrary[{extra}]"'
    )


class TaskError(PipelineError):
    """Base for errors users raise from their own tasks to signal a domain failure.

    The engine treats it like any exception: the task fails (and is retried when its retry
    policy covers it) and the run reports it.
    """


class ExtractionError(TaskError):
    """Raise from a task when extracting data from a source failed."""


class ValidationError(TaskError):
    """Raise from a task when data or a model failed validation."""

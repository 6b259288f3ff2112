"""xlibrary.pipeline: declare tasks with decorators, run them as one Dask graph.

::

    from xlibrary.pipeline import Pipeline, PipelineManager

    pipeline = Pipeline("etl")

    @pipeline.task("extract")
    def extract():
        return [1, 2, 3]

    @pipeline.task("load", depends_on=["extract"])
    def load(rows):
        return len(rows)

    result = PipelineManager().execute_pipeline(pipeline)
    result.final_result   # 3
"""

from __future__ import annotations

import logging

from ._version import __version__
from .datasets import Catalog, Dataset
from .errors import (
    BadEntry,
    ClusterError,
    ConfigError,
    DatasetError,
    DatasetNotFoundError,
    DependencyCycleError,
    DuplicateTaskError,
    EmptyPipelineError,
    ExtractionError,
    InvalidRunIdError,
    MapInputError,
    MissingExtraError,
    PipelineDefinitionError,
    PipelineError,
    PipelineExecutionError,
    ResourceError,
    RunCancelled,
    SelectionError,
    SerializationError,
    StorePathError,
    StreamDeliveryError,
    StreamError,
    TaskError,
    TaskOutputError,
    TaskSignatureError,
    TaskTimeoutError,
    UnknownDatasetError,
    UnknownDependencyError,
    ValidationError,
)
from .execute import RunObserver
from .handles import RunHandle
from .manager import PipelineManager
from .monitoring.report import MonitoringDashboard, PerformanceReport
from .pipeline import Pipeline, task
from .plan import CacheExplanation, Plan
from .records import Alert, RunError, RunRecord, RunStatus, TaskRecord, TaskRun, TaskState
from .recovery import ErrorDetails
from .result import PipelineResult
from .spec import CachePolicy, RetryPolicy, Task
from .states import RunState, TaskStatus
from .stream import StreamPipeline, StreamTask

# A library leaves where its log lines go to the application (the standard library's advice).
logging.getLogger("xlibrary").addHandler(logging.NullHandler())

__all__ = [
    "Alert",
    "BadEntry",
    "CacheExplanation",
    "CachePolicy",
    "Catalog",
    "ClusterError",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "DependencyCycleError",
    "DuplicateTaskError",
    "EmptyPipelineError",
    "ErrorDetails",
    "ExtractionError",
    "InvalidRunIdError",
    "MapInputError",
    "MissingExtraError",
    "MonitoringDashboard",
    "PerformanceReport",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineError",
    "PipelineExecutionError",
    "PipelineManager",
    "PipelineResult",
    "Plan",
    "ResourceError",
    "RetryPolicy",
    "RunCancelled",
    "RunError",
    "RunHandle",
    "RunObserver",
    "RunRecord",
    "RunState",
    "RunStatus",
    "SelectionError",
    "SerializationError",
    "StorePathError",
    "StreamDeliveryError",
    "StreamError",
    "StreamPipeline",
    "StreamTask",
    "Task",
    "TaskError",
    "TaskOutputError",
    "TaskRecord",
    "TaskRun",
    "TaskSignatureError",
    "TaskState",
    "TaskStatus",
    "TaskTimeoutError",
    "UnknownDatasetError",
    "UnknownDependencyError",
    "ValidationError",
    "__version__",
    "task",
]

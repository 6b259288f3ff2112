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

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    ClusterError,
    ConfigError,
    DependencyCycleError,
    DuplicateTaskError,
    EmptyPipelineError,
    ExtractionError,
    MissingExtraError,
    PipelineDefinitionError,
    PipelineError,
    PipelineExecutionError,
    ResourceError,
    TaskError,
    TaskSignatureError,
    TaskTimeoutError,
    UnknownDependencyError,
    ValidationError,
)
from .manager import PipelineManager
from .pipeline import Pipeline, RetryPolicy, Task, task
from .result import PipelineResult, TaskRun, TaskStatus
from .stream import StreamError, StreamPipeline, StreamTask

try:
    __version__ = version("xlibrary")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ClusterError",
    "ConfigError",
    "DependencyCycleError",
    "DuplicateTaskError",
    "EmptyPipelineError",
    "ExtractionError",
    "MissingExtraError",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineError",
    "PipelineExecutionError",
    "PipelineManager",
    "PipelineResult",
    "ResourceError",
    "RetryPolicy",
    "StreamError",
    "StreamPipeline",
    "StreamTask",
    "Task",
    "TaskError",
    "TaskRun",
    "TaskSignatureError",
    "TaskStatus",
    "TaskTimeoutError",
    "UnknownDependencyError",
    "ValidationError",
    "__version__",
    "task",
]

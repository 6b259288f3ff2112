"""The names xlibrary.pipeline exports are a promise: this pins them."""

from __future__ import annotations

import xlibrary.pipeline as xp


def test_exported_names() -> None:
    assert sorted(xp.__all__) == sorted(
        [
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
            "Plan",
            "PipelineDefinitionError",
            "PipelineError",
            "PipelineExecutionError",
            "PipelineManager",
            "PipelineResult",
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
    )
    for name in xp.__all__:
        assert hasattr(xp, name), name


def test_what_public_methods_return_or_raise_is_exported() -> None:
    import inspect
    import os
    import pathlib
    import typing

    exported = {getattr(xp, name) for name in xp.__all__}
    for owner in (xp.PipelineManager, xp.Pipeline):
        for name, method in inspect.getmembers(owner, inspect.isfunction):
            if name.startswith("_"):
                continue
            hints = typing.get_type_hints(
                method, localns={"os": os, "pathlib": pathlib, "PipelineResult": xp.PipelineResult}
            )
            returned = hints.get("return")
            for kind in (returned, *typing.get_args(returned)):
                module = getattr(kind, "__module__", "")
                if isinstance(kind, type) and module.startswith("xlibrary"):
                    assert kind in exported, f"{owner.__name__}.{name} returns {kind.__name__}"


def test_every_error_derives_from_pipeline_error() -> None:
    for name in xp.__all__:
        value = getattr(xp, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, xp.PipelineError), name


def test_importing_the_package_does_not_import_distributed() -> None:
    import subprocess
    import sys

    code = "import sys, xlibrary.pipeline; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_package_is_typed() -> None:
    from pathlib import Path

    assert (Path(xp.__file__).parent / "py.typed").exists()

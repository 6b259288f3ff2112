"""The names xlibrary.pipeline exports are a promise: this pins them."""

from __future__ import annotations

import xlibrary.pipeline as xp


def test_exported_names() -> None:
    assert sorted(xp.__all__) == sorted(
        [
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
    )
    for name in xp.__all__:
        assert hasattr(xp, name), name


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

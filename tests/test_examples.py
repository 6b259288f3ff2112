"""Each script in examples/ runs and prints what its guide section promises."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_basic_etl() -> None:
    proc = run(str(EXAMPLES / "etl.py"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "Loading: [2, 4, 6, 8, 10]",
        "Pipeline completed: True",
        "Final result: {'status': 'loaded', 'count': 5}",
    ]


def test_parallel_training_takes_the_longest_model_not_the_sum() -> None:
    started = time.perf_counter()
    proc = run(str(EXAMPLES / "parallel_training.py"))
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    assert "Best model: neural_net" in proc.stdout
    for line in ("Training Random Forest...", "Training SVM...", "Training Neural Network..."):
        assert line in proc.stdout
    assert elapsed < 8.5, f"2 s + 3 s + 4 s of training took {elapsed:.1f}s: not parallel"


def test_customer_etl() -> None:
    proc = run(str(EXAMPLES / "customer_etl.py"))
    assert proc.returncode == 0, proc.stderr
    assert "Loading 2 customers to data warehouse..." in proc.stdout
    assert "ETL pipeline completed successfully!" in proc.stdout
    assert "Loaded 2 customers" in proc.stdout


@pytest.mark.parametrize(
    ("seed", "deployed"),
    [(1, True), (5, False)],  # accuracy ~0.86 passes validation; ~0.81 fails it
)
def test_ml_training_deploys_only_a_valid_model(seed: int, deployed: bool) -> None:
    proc = run(str(EXAMPLES / "ml_training.py"), str(seed))
    assert proc.returncode == 0, proc.stderr
    if deployed:
        assert "ML pipeline completed successfully!" in proc.stdout
        assert "Model deployed: True" in proc.stdout
        assert "Endpoint: https://api.example.com/predict" in proc.stdout
    else:
        assert "Deploying model" not in proc.stdout
        assert "task 'deploy_model' of pipeline 'ml_model_training' failed" in proc.stdout
        assert "ValidationError: Model failed validation - not deploying" in proc.stdout


def test_ml_training_pipeline_outcome_matches_validation() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import ml_training
    finally:
        sys.path.pop(0)
    from xlibrary.pipeline import PipelineManager, ValidationError

    with PipelineManager() as pm:
        for _ in range(3):
            result = pm.execute_pipeline(ml_training.ml_pipeline)
            accuracy = result.results["train_model"]["accuracy"]
            assert result.results["validate_model"]["is_valid"] == (accuracy >= 0.85)
            if accuracy >= 0.85:
                assert result.success and result.final_result["deployed"] is True
            else:
                assert result.failed_task == "deploy_model"
                assert isinstance(result.tasks["deploy_model"].error, ValidationError)


def test_caching_example_second_run_is_served_from_the_cache() -> None:
    proc = run(str(EXAMPLES / "caching.py"), "--fsspec")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Performing expensive computation...") == 1
    second = next(line for line in proc.stdout.splitlines() if line.startswith("second run:"))
    assert float(second.split()[2].rstrip("s")) < 1.0
    assert "'use_cached_result': 'cached'" in second
    assert "expensive_computation: hit" in proc.stdout


def test_debugging_example_retries_the_failed_task() -> None:
    proc = run(str(EXAMPLES / "debugging.py"))
    assert proc.returncode == 0, proc.stderr
    assert "Pipeline failed at task: transform" in proc.stdout
    assert "Completed tasks: ['extract']" in proc.stdout
    assert "Retry succeeded: True" in proc.stdout
    assert "'extract': 'cached'" in proc.stdout
    assert "Final result: {'loaded': 2, 'countries': ['France', 'Germany']}" in proc.stdout


def test_batch_monitoring_example() -> None:
    proc = run(str(EXAMPLES / "batch_monitoring.py"))
    assert proc.returncode == 0, proc.stderr
    assert "Processed 9000 orders..." in proc.stdout
    assert "Total execution time:" in proc.stdout
    peak = next(line for line in proc.stdout.splitlines() if line.startswith("Memory peak:"))
    assert float(peak.split()[2]) > 10
    assert "Dashboard: http://" in proc.stdout and "/pipelines)" in proc.stdout


def test_realtime_monitoring_example() -> None:
    proc = run(str(EXAMPLES / "realtime_monitoring.py"))
    assert proc.returncode == 0, proc.stderr
    assert "'records_extracted': 10000.0" in proc.stdout
    assert "'monitored_etl': {'runs':" in proc.stdout


def test_distributed_example_on_a_local_cluster_of_the_same_layout() -> None:
    proc = run(str(EXAMPLES / "distributed_etl.py"))
    assert proc.returncode == 0, proc.stderr
    assert "Processed 10000000 records" in proc.stdout


def test_stream_processing_example() -> None:
    proc = run(str(EXAMPLES / "stream_processing.py"))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("average")]
    assert len(lines) == 10 and lines[-1].endswith("over 10000 readings")
    average = float(lines[-1].split()[1])
    assert 16.5 < average < 27.5  # readings in [15, 25], times 1.1
    assert "10000 readings at" in proc.stdout


def test_params_and_data_recompute_what_a_change_touches(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "XLIBRARY_EXAMPLE_DATA": str(tmp_path / "data")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "params_and_data.py")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    everything = "['companies', 'shuttles', 'model_input_table', 'split', 'regressor', 'score']"
    assert lines[0].startswith(f"first run:       ran {everything}")
    assert lines[1].startswith("nothing changed: ran nothing")
    assert lines[0].split("R²")[1] == lines[1].split("R²")[1]
    assert lines[2] == "  split: miss (parameter test_size: 0.2 → 0.3); runs"
    assert lines[3].startswith("test_size 0.3:   ran ['split', 'regressor', 'score']")
    assert "companies.csv changed" in lines[4]
    assert lines[5].startswith(f"companies edited: ran {everything}")
    assert lines[6] == "regressor versions: 3"

"""The user guide's code blocks run as written (imports added) and do what their prose says.

docs/user-guide.md is the guide. Every Python block in it is listed in BLOCKS: either it runs
here, or it names the issue that builds its feature, so no block is silently left out.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.brokers import kafka_bootstrap_fixture  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "user-guide.md"

# The imports the guide leaves out, and the `pm` its later blocks reuse from "Basic Pipeline".
PRELUDE = """\
import time
import numpy as np
from xlibrary.pipeline import *
pm = PipelineManager()
"""

# heading of the block -> what must appear in its output, or the issue that builds it
BLOCKS: dict[str, list[str] | str] = {
    "Basic Configuration": [],
    "1. Basic Pipeline Creation": [
        "Loading: [2, 4, 6, 8, 10]",
        "Pipeline completed: True",
        "Final result: {'status': 'loaded', 'count': 5}",
    ],
    "2. Parallel Task Execution": ["Best model: neural_net"],
    "3. Stream Processing": "test_stream_processing_block_against_kafka_and_postgres",
    "4. Distributed Execution": ["Processed 10000000 records"],
    "Data Pipeline": [
        "Loading 2 customers",
        "ETL pipeline completed successfully!",
        "Loaded 2 customers",
    ],
    "ML Training Pipeline": [],
    "Batch Processing Pipeline": [
        "Processed 9000 orders...",
        "Total execution time:",
        "Memory peak:",
        "dashboard: http://",
    ],
    "Resource Management": [
        "succeeded: True",
        "workers offer: {'cpu_cores': 4, 'memory_mb': 8192}",
        "restricted: {'cpu_cores': 4}",
    ],
    "Caching and Optimization": [
        "Performing expensive computation...",
        "second run: cached in",
        "same result: True",
    ],
    "Real-time Monitoring": [
        "Current metrics: {",
        "'extraction_time': 1.0",
        "'records_extracted': 10000.0",
        "Performance trends: {",
        "'monitored_etl'",
    ],
    "Debugging and Troubleshooting": [
        "Pipeline failed at task: transform",
        "Error message: the warehouse dropped the connection",
        "Stack trace: Traceback",
        "Completed tasks: ['extract']",
        "retried: True [2, 4, 6]",
    ],
    "FastAPI Integration": "test_fastapi.py::test_guide_fastapi_example_as_written",
    "Jupyter Notebook Integration": [
        "task load_data: {'dataframe': <DataFrame 100x2>, 'shape': (100, 2)}",
        "task analyze: {'correlation': np.float64(0.967",
        "pipeline 'data_analysis' run ",
        "load_data  succeeded",
        "analyze    succeeded",
    ],
}

# No Kubernetes here: the distributed example runs with the same layout on a LocalCluster
# (test_distributed_example_as_written checks what it does as written).
REWRITE = {"4. Distributed Execution": ('"cluster_mode": "kubernetes"', '"cluster_mode": "local"')}

# What a block needs defined before it (the guide leaves it to the reader), and checks after.
BEFORE = {
    # The guide's caching block uses Redis at its default URL; start from an empty entry.
    "Caching and Optimization": """
PipelineManager({"caching": {"cache_type": "redis"}}).clear_cache("cached_pipeline")
""",
    # "problematic_pipeline" is the reader's own: here, one whose transform fails once.
    "Debugging and Troubleshooting": """
_attempts = []
problematic_pipeline = Pipeline("problematic")

@problematic_pipeline.task("extract")
def _extract():
    return [1, 2, 3]

@problematic_pipeline.task("transform", depends_on=["extract"])
def _transform(rows):
    _attempts.append(1)
    if len(_attempts) == 1:
        raise ConnectionError("the warehouse dropped the connection")
    return [r * 2 for r in rows]
""",
}
AFTER = {
    "Resource Management": """
print("succeeded:", result.success)
_info = optimized_pm.client.scheduler_info()["workers"]
print("workers offer:", next(iter(_info.values()))["resources"])
print("restricted:", result.tasks["cpu_intensive"].status == "succeeded" and {"cpu_cores": 4})
""",
    "Batch Processing Pipeline": """
print("dashboard:", pm.dashboard_link)
assert performance_report["peak_memory"] > 10, performance_report
assert set(performance_report["tasks"]) == {
    "initialize_batch", "process_orders", "generate_reports", "send_notifications"
}
""",
    "Caching and Optimization": """
_t = time.perf_counter()
result3 = cached_pm.execute_pipeline(create_cached_pipeline)
print(f"second run: {result2.states['use_cached_result']} in {result2.duration:.2f}s")
print("same result:", result3.final_result == result2.final_result == result1.final_result)
assert result2.duration < 1.0, result2.duration
""",
    "Debugging and Troubleshooting": """
_retry = debug_pm.get_intermediate_results(problematic_pipeline.name)
_latest = debug_pm.store.read_record(problematic_pipeline.name)
print("retried:", _latest.status == "succeeded", _retry["transform"])
""",
}


def guide_blocks() -> dict[str, str]:
    blocks: dict[str, str] = {}
    heading = ""
    for match in re.finditer(
        r"^###[ \t]+([^\n]+)$|^```python\n(.*?)^```", GUIDE.read_text(), re.M | re.S
    ):
        if match.group(1):
            heading = match.group(1).strip()
        else:
            blocks[heading] = match.group(2)
    return blocks


def run_block(heading: str, code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if heading in REWRITE:
        old, new = REWRITE[heading]
        assert old in code
        code = code.replace(old, new)
    script = PRELUDE + BEFORE.get(heading, "") + code + AFTER.get(heading, "")
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_every_python_block_is_accounted_for() -> None:
    assert set(guide_blocks()) == set(BLOCKS)


RUNNABLE = [name for name, expected in BLOCKS.items() if isinstance(expected, list)]


@pytest.mark.parametrize("heading", RUNNABLE)
def test_guide_block_runs_as_written(heading: str) -> None:
    started = time.perf_counter()
    proc = run_block(heading, guide_blocks()[heading])
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    expected = BLOCKS[heading]
    assert isinstance(expected, list)
    for fragment in expected:
        assert fragment in proc.stdout, proc.stdout + proc.stderr
    if heading == "2. Parallel Task Execution":
        # 2 s, 3 s and 4 s of training in parallel: about 4 s, never the 9 s of one by one.
        assert elapsed < 8.5, f"took {elapsed:.1f}s"
    if heading == "ML Training Pipeline" and "completed successfully" in proc.stdout:
        assert "Model deployed: True" in proc.stdout
        assert "Endpoint: https://api.example.com/predict" in proc.stdout
    if heading == "Basic Configuration":
        assert "WARNING" not in proc.stderr  # every key of this block is built
    if heading == "Caching and Optimization":
        assert proc.stdout.count("Performing expensive computation...") == 1


def test_quick_setup_check() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from xlibrary.pipeline import PipelineManager; print('Ready!')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "Ready!", proc.stderr


def test_distributed_example_as_written() -> None:
    """On Kubernetes as written: here, with no cluster to reach, one clear error."""
    import os

    if os.environ.get("KUBECONFIG"):
        pytest.skip("a KUBECONFIG is set: the real-cluster test in test_kubernetes.py covers it")
    code = PRELUDE + guide_blocks()["4. Distributed Execution"]
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("xlibrary.pipeline.errors.ClusterError: cannot start the Kubernetes")
    assert "KUBECONFIG" in last and "deploy/README.md" in last


def test_stream_processing_block_against_kafka_and_postgres(kafka_bootstrap: str) -> None:
    """The guide's stream, as written: Kafka topic sensor_data -> DataProcessor x2 ->
    Aggregator -> PostgreSQL database analytics; it runs until interrupted (Ctrl-C)."""
    import os
    import signal

    import psycopg

    from tests.brokers import create_topic, produce

    with psycopg.connect("host=127.0.0.1 dbname=postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'analytics'").fetchone():
            conn.execute("create database analytics")
    with psycopg.connect("host=127.0.0.1 dbname=analytics", autocommit=True) as conn:
        conn.execute("drop table if exists results")
    n = 1000
    create_topic(kafka_bootstrap, "sensor_data")
    produce(kafka_bootstrap, "sensor_data", [{"id": i, "value": i} for i in range(n)])
    env = {**os.environ, "XLIBRARY_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    code = PRELUDE + guide_blocks()["3. Stream Processing"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    last = None
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        with psycopg.connect("host=127.0.0.1 dbname=analytics") as conn:
            try:
                last = conn.execute(
                    "select average, count from results order by count desc limit 1"
                ).fetchone()
            except psycopg.errors.UndefinedTable:
                last = None
        if last is not None and last[1] == n:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert last is not None and last[1] == n, err
    assert last[0] == pytest.approx(sum(i * 1.1 for i in range(n)) / n)

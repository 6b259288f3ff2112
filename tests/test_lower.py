"""Lowering (one Dask graph per run, keyed by task names) and the in-worker task wrapper."""

from __future__ import annotations

import pickle
import threading
import time

import cloudpickle
import dask
from dask.utils import key_split

from xlibrary.pipeline import Pipeline, RetryPolicy, TaskError, TaskTimeoutError
from xlibrary.pipeline import keys as keys_module
from xlibrary.pipeline.lower import lower
from xlibrary.pipeline.outcome import Outcome
from xlibrary.pipeline.plan import make_plan, prepare_run
from xlibrary.pipeline.settings import FaultTolerance
from xlibrary.pipeline.states import TaskStatus
from xlibrary.pipeline.wrapper import TaskWrapper

SUCCEEDED, FAILED, SKIPPED = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED


def _pipeline() -> Pipeline:
    p = Pipeline("numbers")
    p.task("one")(lambda: 1)
    p.task("two", depends_on=["one"])(lambda x: x + 1)
    p.task("three", depends_on=["one", "two"])(lambda x, y: x + y)
    return p


def test_graph_keys_carry_task_names_and_run_id() -> None:
    graph, keys = lower(prepare_run(make_plan(_pipeline(), FaultTolerance())), "numbers", "run-1")
    assert keys == {"one": ("one", "run-1"), "two": ("two", "run-1"), "three": ("three", "run-1")}
    assert set(graph) == set(keys.values())
    assert graph[keys["three"]].dependencies == {keys["one"], keys["two"]}
    # Dask's dashboard groups tasks by key_split: it shows the task names.
    assert [key_split(k) for k in keys.values()] == ["one", "two", "three"]


def _fanout(n: int) -> Pipeline:
    p = Pipeline(f"fanout_{n}")
    p.task("source")(lambda: 1)
    for i in range(n):
        p.task(f"transform_customers_{i:02d}", depends_on=["source"])(lambda x: x + 1)
    p.task("total", depends_on=[f"transform_customers_{i:02d}" for i in range(n)])(
        lambda *xs: sum(xs)
    )
    return p


def test_a_large_run_keys_its_tasks_by_group_and_still_names_them(monkeypatch) -> None:
    """Above GROUP_ABOVE tasks, a key is (group, run_id, task): the tasks of one kind share a
    Dask prefix (one bookkeeping entry on the scheduler, not one a task)."""
    monkeypatch.setattr(keys_module, "GROUP_ABOVE", 10)
    small = lower(prepare_run(make_plan(_fanout(3), FaultTolerance())), "fanout_3", "r")[1]
    assert small["transform_customers_01"] == ("transform_customers_01", "r")
    graph, keys = lower(prepare_run(make_plan(_fanout(20), FaultTolerance())), "fanout_20", "r")
    assert keys["transform_customers_07"] == ("transform_customers", "r", "transform_customers_07")
    assert {key_split(k) for k in keys.values()} == {"source", "transform_customers", "total"}
    assert {keys_module.task_of(k) for k in keys.values()} == set(keys)
    assert {keys_module.run_of(k) for k in keys.values()} == {"r"}
    outcome = dask.get(graph, keys["total"])
    assert (outcome.status, outcome.value) == (SUCCEEDED, 40)
    # told apart from an element of a mapped task, (task, run_id, i)
    assert keys_module.task_of(("square_rows", "r", 3)) == "square_rows"
    assert keys_module.element_of(("square_rows", "r", 3)) == 3
    assert keys_module.element_of(keys["transform_customers_07"]) is None


def test_one_lowered_task_pickles_to_the_same_size_in_a_small_or_large_pipeline() -> None:
    """Nothing a task carries to a worker grows with the pipeline (the plan, the other tasks,
    a shared dict): only its own key and its own dependencies' references."""

    def pickled(n: int) -> int:
        graph, keys = lower(prepare_run(make_plan(_fanout(n), FaultTolerance())), "f", "r")
        return len(cloudpickle.dumps(graph[keys["transform_customers_01"]]))

    small, large = pickled(5), pickled(3_000)
    assert large - small <= 64, (small, large)  # the grouped key is a little longer


def test_graph_runs_on_plain_dask() -> None:
    graph, keys = lower(prepare_run(make_plan(_pipeline(), FaultTolerance())), "numbers", "r")
    outcome = dask.get(graph, keys["three"])
    assert (outcome.status, outcome.value, outcome.attempts) == (SUCCEEDED, 3, 1)


def _fails(times: int, exc: type[Exception] = ConnectionError):
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc(f"attempt {calls['n']}")
        return "ok"

    return flaky, calls


def test_retries_until_success_and_counts_attempts() -> None:
    flaky, calls = _fails(2)
    outcome = TaskWrapper(name="t", func=flaky, retry=RetryPolicy(max_retries=3))()
    assert (outcome.status, outcome.value, outcome.attempts, calls["n"]) == (SUCCEEDED, "ok", 3, 3)


def test_gives_up_after_max_retries() -> None:
    flaky, calls = _fails(10)
    outcome = TaskWrapper(name="t", func=flaky, retry=RetryPolicy(max_retries=2))()
    assert (outcome.status, outcome.attempts, calls["n"]) == (FAILED, 3, 3)
    assert outcome.failure is not None and outcome.failure.message == "attempt 3"


def test_retry_on_filters_exception_types() -> None:
    flaky, calls = _fails(10, exc=KeyError)
    outcome = TaskWrapper(
        name="t", func=flaky, retry=RetryPolicy(max_retries=5, retry_on=(ConnectionError,))
    )()
    assert (outcome.status, outcome.attempts, calls["n"]) == (FAILED, 1, 1)


def test_backoff_waits_between_attempts() -> None:
    flaky, _ = _fails(2)
    started = time.perf_counter()
    outcome = TaskWrapper(
        name="t", func=flaky, retry=RetryPolicy(max_retries=2, delay=0.1, backoff=2)
    )()
    assert outcome.status == SUCCEEDED
    assert time.perf_counter() - started >= 0.3  # 0.1 s, then 0.2 s


def test_timeout_fails_the_attempt_and_keeps_going() -> None:
    release = threading.Event()
    outcome = TaskWrapper(name="slow", func=lambda: release.wait(10), timeout=0.2)()
    release.set()
    assert outcome.status == FAILED and outcome.failure is not None
    assert isinstance(outcome.failure.exception, TaskTimeoutError)
    assert isinstance(outcome.failure.exception, TimeoutError)
    assert "task 'slow' ran longer than its timeout of 0.2s" in outcome.failure.message


def test_timeout_then_retry_succeeds() -> None:
    calls = {"n": 0}

    def slow_once() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(1)
        return "done"

    outcome = TaskWrapper(name="t", func=slow_once, retry=RetryPolicy(max_retries=1), timeout=0.3)()
    assert (outcome.status, outcome.value, outcome.attempts) == (SUCCEEDED, "done", 2)


def test_upstream_failure_skips_without_calling() -> None:
    called = []
    failed = TaskWrapper(name="a", func=lambda: 1 / 0)()
    skipped = TaskWrapper(name="b", func=lambda x: called.append(x))(failed)
    further = TaskWrapper(name="c", func=lambda x: called.append(x))(skipped)
    assert (skipped.status, skipped.cause) == (SKIPPED, "a")
    assert (further.status, further.cause) == (SKIPPED, "a")
    assert called == []


def test_traceback_starts_at_the_users_frames() -> None:
    def inner() -> None:
        raise ValueError("bad row")

    def user_task() -> None:
        inner()

    outcome = TaskWrapper(name="t", func=user_task, retry=RetryPolicy(max_retries=1))()
    text = outcome.failure.traceback
    assert "in user_task" in text and "in inner" in text and "ValueError: bad row" in text
    assert "xlibrary/pipeline/wrapper.py" not in text


def test_unpicklable_exception_becomes_a_picklable_task_error() -> None:
    class Holder(Exception):
        def __init__(self) -> None:
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    def task() -> None:
        raise Holder()

    outcome = TaskWrapper(name="t", func=task)()
    copy = pickle.loads(pickle.dumps(outcome))
    assert isinstance(copy.failure.exception, TaskError)
    assert "Holder: holds a lock" in str(copy.failure.exception)
    assert "Holder" in copy.failure.type_name


def test_outcome_and_runner_pickle() -> None:
    runner = pickle.loads(
        pickle.dumps(TaskWrapper(name="t", func=len, retry=RetryPolicy(), timeout=3))
    )
    assert (runner.name, runner.func, runner.retry, runner.timeout) == ("t", len, RetryPolicy(), 3)
    outcome = pickle.loads(
        pickle.dumps(Outcome(status=SUCCEEDED, value=[1, 2], attempts=2, started=1.0, finished=2.0))
    )
    assert (outcome.status, outcome.value, outcome.attempts) == (SUCCEEDED, [1, 2], 2)


def test_dask_sizes_an_outcome_by_its_value() -> None:
    from dask.sizeof import sizeof

    assert sizeof(Outcome(status=SUCCEEDED, value=b"x" * 1_000_000)) >= 1_000_000

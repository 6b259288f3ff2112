"""Runs that go wrong in ways a task's exception does not: tasks that exit."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, Nanny, Scheduler, SpecCluster

from xlibrary.pipeline import Pipeline, PipelineManager


def exiting(name: str, *, interrupts: bool = True, **options: Any) -> Pipeline:
    """Tasks that leave by SystemExit, GeneratorExit and (``interrupts``) KeyboardInterrupt,
    beside one that does its work; ``options`` go to every task (a timeout takes the
    wrapper's other path)."""
    p = Pipeline(name)

    @p.task("exits", **options)
    def exits() -> None:
        sys.exit(3)

    @p.task("closes", **options)
    def closes() -> None:
        raise GeneratorExit("closed")

    if interrupts:

        @p.task("interrupts", **options)
        def interrupts() -> None:
            raise KeyboardInterrupt  # raised by the task itself, not a Ctrl-C of this process

    @p.task("after", depends_on=["exits"], **options)
    def after(x: None) -> None:
        return x

    @p.task("independent", **options)
    def independent() -> int:
        time.sleep(0.2)
        return 42

    return p


def check_exits(result: Any) -> None:
    assert result.states == {
        "exits": "failed",
        "closes": "failed",
        "interrupts": "failed",
        "after": "skipped",
        "independent": "succeeded",
    }
    assert result.results == {"independent": 42}
    assert isinstance(result.tasks["exits"].error, SystemExit)
    assert isinstance(result.tasks["closes"].error, GeneratorExit)
    assert isinstance(result.tasks["interrupts"].error, KeyboardInterrupt)
    assert result.tasks["after"].skipped_because == "exits"


@pytest.mark.parametrize("options", [{}, {"timeout": 30}], ids=["plain", "with-timeout"])
def test_a_task_that_exits_fails_on_threads(tmp_path: Path, options: dict[str, Any]) -> None:
    with PipelineManager({"store": {"url": str(tmp_path)}}) as pm:
        result = pm.execute_pipeline(exiting("exits_threads", **options))
        check_exits(result)
        assert pm.store.read_record("exits_threads")["status"] == "failed"


def test_a_task_that_exits_fails_in_a_sequential_run(tmp_path: Path) -> None:
    # no KeyboardInterrupt: in the calling thread it is a Ctrl-C (the next test)
    p = exiting("exits_sequential", interrupts=False)
    with PipelineManager({"store": {"url": str(tmp_path)}}) as pm:
        result = pm.execute_pipeline(p, parallel=False)
    assert result.states["exits"] == "failed" and result.states["closes"] == "failed"
    assert result.states["independent"] == "succeeded" and result.results == {"independent": 42}


# -- on a cluster of worker processes -------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[SpecCluster]:
    """Two worker processes, one offering resource ``left`` and one ``right``, so a test can
    place a task and its dependent on different workers."""

    def worker(side: str) -> dict[str, Any]:
        return {
            "cls": Nanny,
            "options": {"nthreads": 2, "resources": {side: 1}, "dashboard": False},
        }

    with SpecCluster(
        scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
        workers={"left": worker("left"), "right": worker("right")},
    ) as spec:
        yield spec


@pytest.fixture
def client(cluster: SpecCluster) -> Iterator[Client]:
    with Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def test_a_task_that_exits_fails_on_a_cluster_and_kills_no_worker(
    client: Client, tmp_path: Path
) -> None:
    workers = set(client.scheduler_info()["workers"])
    with PipelineManager({"store": {"url": str(tmp_path)}}, client=client) as pm:
        result = pm.execute_pipeline(exiting("exits_cluster"))
        check_exits(result)
        assert pm.store.read_record("exits_cluster")["status"] == "failed"
    assert set(client.scheduler_info()["workers"]) == workers  # none died, none restarted

"""Execute one run: decide each task's step, lower the run to one graph, compute it, collect.

Normally this is one graph submitted once. When a result found before the run turns out
unusable while it runs (a cache entry expired or was corrupt, a saved result is missing),
its loader reports it ``stale``; the engine then keeps every outcome it has, and submits one
more graph for the stale tasks (without their bad entry) and what depends on them. That
round never loops: the stale tasks are forced to run, and a task that runs cannot be stale.

The run record is written to the store when the run starts (``running``) and when it ends.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .backends import Backend
from .lower import lower
from .observe import collect, run_record, start_record
from .plan import Plan, Restore, prepare_run
from .result import PipelineResult
from .runner import SKIPPED, STALE, Outcome
from .store import Cache, RunStore

__all__ = ["Persistence", "execute", "new_run_id"]

logger = logging.getLogger("xlibrary.pipeline")


def new_run_id() -> str:
    """A run id that sorts by start time and is unique: ``20261128T082121-3fa2c1d0``."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Persistence:
    """What a run reads from and writes to the store and the cache."""

    runs: RunStore | None = None
    cache: Cache | None = None
    save_results: bool = False
    record_runs: bool = False


def execute(
    plan: Plan,
    backend: Backend,
    *,
    parallel: bool = True,
    persistence: Persistence | None = None,
    restore: Mapping[str, Restore] | None = None,
    force: Collection[str] = (),
    targets: Collection[str] | None = None,
    resumed_from: str | None = None,
) -> PipelineResult:
    """Run ``plan`` on ``backend`` and return its result (see the module docstring)."""
    persistence = persistence or Persistence()
    run_id = new_run_id()
    started = time.time()
    steps = prepare_run(
        plan, cache=persistence.cache, restore=restore, force=force, targets=targets
    )
    record = persistence.runs if persistence.record_runs else None
    if record is not None:  # written in the background: the run does not wait on the disk
        _write(record, start_record(plan, run_id, steps, started, resumed_from))
    outcomes: dict[str, Outcome] = {}
    for round_ in range(2):
        graph, keys = lower(
            steps,
            plan.pipeline,
            run_id,
            cache=persistence.cache,
            runs=persistence.runs,
            save_results=persistence.save_results,
            known=outcomes,
        )
        outcomes.update(backend.run(graph, keys, parallel=parallel))
        stale = {name for name, outcome in outcomes.items() if outcome.status == STALE}
        if not stale or round_:
            break
        logger.info("rerunning %s: their stored results could not be used", sorted(stale))
        redo = stale | {
            name
            for name, outcome in outcomes.items()
            if outcome.status == SKIPPED and outcome.cause in stale
        }
        for name in redo:
            del outcomes[name]
        steps = prepare_run(
            plan,
            cache=persistence.cache,
            known={name: o.token for name, o in outcomes.items()},
            restore={k: v for k, v in (restore or {}).items() if k not in stale},
            force=set(force) | stale,
            targets=targets,
        )
    finished = time.time()
    result = collect(plan, run_id, outcomes, steps, started=started, finished=finished)
    if record is not None:
        _write(record, run_record(result, resumed_from), latest=False)
    return result


def _write(runs: RunStore, record: dict[str, object], *, latest: bool = True) -> None:
    try:
        runs.write_record(record, latest=latest)
    except Exception as exc:  # the run's own result must not be lost to a full disk
        logger.warning("could not write the run record to %s: %s", runs.url, exc)

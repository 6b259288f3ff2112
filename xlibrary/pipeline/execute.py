"""Execute one run: decide each task's step, lower the run to one graph, compute it, collect.

Normally this is one graph submitted once. When a result found before the run turns out
unusable while it runs (a cache entry expired or was corrupt, a saved result is missing),
its loader reports it ``stale``; the engine then keeps every outcome it has, and submits one
more graph for the stale tasks (without their bad entry) and what depends on them. That
round never loops: the stale tasks are forced to run, and a task that runs cannot be stale.

Observers hear of the run when it starts and when it ends (the run record writer, the
dashboard's Pipelines page); a monitor measures the tasks and finishes the result (peak
memory, alerts) before the observers see it.

A run that has started always ends, for its observers too, whatever stops it. Cancelled
(``cancel`` set) or interrupted (Ctrl-C: ``KeyboardInterrupt``), it ends ``cancelled``;
stopped by any other exception (the cluster went away, say), it ends ``failed`` with that
error. Either way the tasks that finished keep their states and the others end
``cancelled``, and the exception goes on up: ``RunCancelled`` (with that partial result as
``.result``), ``KeyboardInterrupt`` or the error itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import collector
from .backends import Backend
from .collect import collect, log_result, started_record
from .errors import RunCancelled
from .expand import held_back, needed, this_round
from .inputs import RunInputs
from .keys import task_of
from .lower import lower
from .outcome import Outcome
from .plan import Action, Plan, Step, prepare_run
from .pools import Pool
from .records import RunRecord
from .recovery import RecoveryPlan
from .result import PipelineResult
from .selection import Selection
from .states import DONE, STALE, RunState, TaskStatus
from .store import Cache, RunStore
from .store.names import new_run_id  # the run id grammar lives beside its check
from .stored import abandon_held
from .watch import Listener, RunWatch
from .wrapper import Measures

__all__ = ["Instruments", "RunObserver", "RunStorage", "execute", "new_run_id"]

logger = logging.getLogger("xlibrary.pipeline")

_LEFT_OUT = frozenset({Action.PRUNE, Action.UNSELECTED})


@dataclass(frozen=True, kw_only=True)
class RunStorage:
    """What a run reads from and writes to the store and the cache."""

    runs: RunStore | None = None
    cache: Cache | None = None
    save_results: bool = False


class RunObserver(Protocol):
    """Hears of each run when it starts and when it ends (its result's ``record`` is the run
    record); a run that started always ends, whatever stopped it."""

    def run_started(self, record: RunRecord) -> None: ...

    def run_finished(self, result: PipelineResult) -> None: ...


class Instruments(Protocol):
    """What a run's tasks measure, and what finishing a run adds (peak memory, alerts)."""

    def for_run(self, run_id: str) -> Measures | None:
        """What the run's tasks measure (``None``: nothing)."""
        ...

    def finish(self, result: PipelineResult) -> PipelineResult:
        """The result with what monitoring adds (run peak memory, alerts)."""
        ...


def execute(
    plan: Plan,
    backend: Backend,
    *,
    parallel: bool = True,
    storage: RunStorage | None = None,
    recovery: RecoveryPlan | None = None,
    instruments: Instruments | None = None,
    observers: Sequence[RunObserver] = (),
    keep_results: str = "all",
    run_id: str | None = None,
    listeners: Sequence[Listener] = (),
    cancel: threading.Event | None = None,
    selection: Selection | None = None,
    pools: Mapping[str, Pool] | None = None,
    inputs: RunInputs | None = None,
    compute_final: bool = True,
) -> PipelineResult:
    """Run ``plan`` on ``backend`` and return its result (see the module docstring).

    ``keep_results="final"`` brings back only the final tasks' results; the others are
    released as soon as no later task needs them. ``listeners`` hear of tasks starting and
    finishing (a progress bar, a run's status); once ``cancel`` is set no further task
    starts, and RunCancelled is raised. ``selection`` runs part of the plan (its targets,
    from_tasks, tags); ``pools`` are the concurrency pools of tasks declared with ``pool=``;
    ``inputs`` holds the run's parameter values and the tasks it refreshes (default: the
    functions' and the pipeline's values, none). With
    ``compute_final`` the final tasks' Dask collections come back computed (pandas, NumPy);
    the other tasks' stay collections.
    """
    storage = storage or RunStorage()
    restore = recovery.restore if recovery else None
    force = recovery.force if recovery else frozenset()
    targets = recovery.targets if recovery else None
    resumed_from = recovery.run_id if recovery else None
    unselected: frozenset[str] = frozenset()
    if selection is not None:  # part of the pipeline: its plan has the selection's sinks
        plan, unselected = selection.plan, selection.unselected
        restore, force, targets = selection.restore, selection.force, selection.targets
    run_id = run_id or new_run_id()
    started = time.time()
    used = backend.name if parallel else "sequential"
    steps = prepare_run(
        plan, cache=storage.cache, restore=restore, force=force, targets=targets,
        unselected=unselected, inputs=inputs,
    )  # fmt: skip
    if observers:
        record = started_record(plan, run_id, steps, started, resumed_from, inputs, used)
        for observer in observers:
            observer.run_started(record)
    measures = instruments.for_run(run_id) if instruments is not None else None
    watch = RunWatch(listeners, cancel) if listeners or cancel is not None else None
    if watch is not None:
        watch.begin(sum(step.action not in _LEFT_OUT for step in steps))
    outcomes: dict[str, Outcome] = {}
    wanted = set(targets or plan.sinks) if keep_results == "final" else None
    computed = set(targets or plan.sinks) if compute_final else set()
    fetched: set[str] = set()  # tasks whose outcomes came back with their values
    remote: dict[str, Any] = {}  # futures of results held on the cluster for a later round
    try:
        threads = _threads(backend) if parallel else 1
        rerun = False  # the one round of reruns of stale results has been
        while True:
            held = held_back(steps, outcomes)  # mapped tasks wait for their inputs' lengths
            mapped_inputs, hold = needed(steps, held) if held else (set(), set())
            fetch = None if wanted is None else wanted | mapped_inputs
            with collector.paused():  # builds objects that all live through the run
                graph, keys = lower(
                    this_round(steps, held) if held or outcomes else steps,
                    plan.pipeline,
                    run_id,
                    cache=storage.cache,
                    runs=storage.runs,
                    save_results=storage.save_results,
                    known=outcomes,
                    measures=measures,
                    pools=pools,
                    guard_inputs=inputs is not None and inputs.guard,
                    threads=threads,
                    remote=remote,
                )
            # what earlier rounds brought back is data in this one: ask only for the rest
            ran = {n: k for n, k in keys.items() if n not in outcomes} if outcomes else keys
            got = backend.run(
                graph,
                ran,
                parallel=parallel,
                progress=watch,
                wanted=fetch,
                restrictions=_restrictions(steps, graph, ran),
                compute=computed - held,
                **({"hold": hold | mapped_inputs} if held else {}),  # the next round reads
            )
            if held and callable(getattr(backend, "held", None)):  # on the cluster
                remote.update(backend.held(run_id))  # type: ignore[attr-defined]
            outcomes.update(got)
            came = set(got)  # with values: what was fetched, and what was held here (threads)
            fetched.update(came if fetch is None else fetch & came | (hold & came) - set(remote))
            stale = {name for name, outcome in outcomes.items() if outcome.status == STALE}
            redo: set[str] = set()
            if stale and not rerun:
                rerun = True
                logger.info("rerunning %s: their stored results could not be used", sorted(stale))
                redo = stale | {
                    name
                    for name, outcome in outcomes.items()
                    if outcome.status == TaskStatus.SKIPPED and outcome.cause in stale
                }
                restore = {k: v for k, v in (restore or {}).items() if k not in stale}
                force = frozenset(force) | stale
            elif not held:
                break
            if watch is not None and watch.cancelled:
                raise RunCancelled("the run was cancelled")
            for name in redo:
                del outcomes[name]
            # a task known without its value (keep_results final) cannot feed one that reruns;
            # the tasks of the next round of a map read only what this one kept for them
            usable = outcomes
            if redo:
                usable = {
                    n: o
                    for n, o in outcomes.items()
                    if n in fetched or n in remote or o.status not in DONE
                }
            steps = prepare_run(
                plan,
                cache=storage.cache,
                known={name: o.token for name, o in usable.items()},
                restore=restore,
                force=force,
                targets=targets,
                unselected=unselected,
                inputs=inputs,
            )
        kept = fetched if wanted is None else fetched & wanted
        with collector.paused():  # one record a task, all kept
            result = collect(
                plan, run_id, outcomes, steps, started=started, finished=time.time(),
                fetched=kept, resumed_from=resumed_from, inputs=inputs, backend=used,
            )  # fmt: skip
        if instruments is not None:
            result = instruments.finish(result)
    except BaseException as exc:
        finished = {**outcomes, **(watch.finished if watch is not None else {})}
        abandon_held(finished.values())  # collections written for a run that never settled
        try:
            _stopped(
                plan, run_id, steps, finished, started, resumed_from, observers, exc, inputs,
                used,
            )  # fmt: skip
        except Exception:  # never hide what stopped the run
            logger.exception("could not end the record of run %s", run_id)
        raise
    finally:
        if watch is not None:
            watch.close()
        if remote:
            backend.release_held(run_id)  # type: ignore[attr-defined]
    log_result(result, _where(backend, used))
    _tell(observers, result)
    return result


def _threads(backend: Backend) -> int:
    """How many tasks the backend runs at once (``batch_size="auto"`` sizes batches by it)."""
    threads = getattr(backend, "threads", None)
    try:
        return max(1, int(threads())) if callable(threads) else 1
    except Exception:  # a cluster that cannot say: one batch per element group is still right
        return 1


def _restrictions(
    steps: tuple[Step, ...], graph: Mapping[Any, Any], keys: Mapping[str, Any]
) -> dict[Any, Mapping[str, float]]:
    """The Dask resources of the tasks that ask for them: each key of theirs in ``graph``
    (a mapped task's element keys too)."""
    asks = {
        s.name: s.task.spec.resource_requirements
        for s in steps
        if s.action is Action.RUN and s.task.spec.resource_requirements and s.name in keys
    }
    if not asks:
        return {}
    return {key: asks[name] for key in graph if (name := task_of(key)) in asks}


def _where(backend: Backend, used: str) -> str:
    """Where a run computed, for its log line: the backend's own words when it has them."""
    describe = getattr(backend, "describe", None)
    return str(describe()) if used != "sequential" and callable(describe) else used


def _stopped(
    plan: Plan,
    run_id: str,
    steps: tuple[Step, ...],
    outcomes: Mapping[str, Outcome],
    started: float,
    resumed_from: str | None,
    observers: Sequence[RunObserver],
    exc: BaseException,
    inputs: RunInputs | None = None,
    backend: str | None = None,
) -> None:
    """End a run that ``exc`` stopped early, with the ``outcomes`` of the tasks that had
    finished (see the module docstring)."""
    result = collect(
        plan, run_id, outcomes, steps, started=started, finished=time.time(), fetched=(),
        resumed_from=resumed_from, stopped_by=exc, inputs=inputs, backend=backend,
    )  # fmt: skip
    if isinstance(exc, RunCancelled):
        exc.result = result
    cancelled = result.status is RunState.CANCELLED
    log = logger.info if cancelled else logger.warning  # a cancel is what the user asked for
    log("pipeline %r run %s stopped: %s", plan.pipeline, run_id, str(exc) or type(exc).__name__)
    _tell(observers, result)


def _tell(observers: Sequence[RunObserver], result: PipelineResult) -> None:
    """Tell the observers that the run ended."""
    for observer in observers:
        try:
            observer.run_finished(result)
        except Exception:  # the run's own result must not be lost to an observer
            logger.exception("run observer %r failed", observer)

"""Lower a mapped task: the graph grows, from the client, as the inputs' lengths become known.

How a run with mapped tasks goes (``map_over=``, see :mod:`~.mapping`):

1. A mapped task that runs waits for its mapped input: it, and every task downstream of it,
   is held back from the round's graph (:func:`held_back`). The round computes the rest.
   What the held-back tasks read (:func:`needed`) is kept for the next round: the mapped
   inputs' values come to the client (their elements go out with the element tasks); on a
   cluster every result they read also stays held there, as a future, and the next round
   refers to it by key, so nothing is sent back.
2. The next round knows those outcomes (``KNOWN`` steps), so the mapped task's length is
   known: it is lowered (:func:`expand`) to one element task per element, or per batch of
   elements, keyed ``(task, run_id, i)`` with ``i`` the element's (or the batch's) index,
   and one gather task keyed ``(task, run_id)`` that holds the assembled list, as the key of
   any task. Each element task holds its elements (taken by position on the client) and
   depends only on the task's other dependencies, so Dask spreads them over the workers as
   it would tasks without inputs. Dask groups its dashboard by a key's first element, so the
   elements show as one progress bar under the task's name; the run's own machinery
   (outcomes, reports, progress) reads only the 2-tuple keys.
3. Rounds go on until nothing is held back: one per level of mapped tasks, whatever their
   sizes. No task ever computes from inside a worker (a nested compute or ``worker_client``
   deadlocks 1-thread workers): every round is submitted from the client.

A mapped input that is not a sequence fails the mapped task with a
:class:`~.errors.MapInputError`; an input that failed or was skipped skips it, as for any task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef

from .elements import ElementRunner, MapGather, SharedPolicy
from .mapping import auto_batch_size, elements_of
from .outcome import Failure, Outcome
from .plan import Action, Step
from .states import DONE, TaskStatus
from .wrapper import TaskWrapper

__all__ = ["expand", "held_back", "needed", "this_round"]


def held_back(steps: Iterable[Step], known: Mapping[str, Outcome]) -> set[str]:
    """The tasks that cannot be lowered yet: mapped tasks that run and whose mapped input's
    outcome is not in ``known``, and everything downstream of them."""
    steps = tuple(steps)
    if all(step.task.spec.map_over is None for step in steps):  # most runs: nothing to hold
        return set()
    held: set[str] = set()
    for step in steps:  # topological
        spec = step.task.spec
        if any(dep in held for dep in spec.depends_on) or (
            step.action is Action.RUN and spec.map_over is not None and spec.map_over not in known
        ):
            held.add(step.name)
    return held


def needed(steps: Iterable[Step], held: set[str]) -> tuple[set[str], set[str]]:
    """What the held-back tasks need of the tasks outside ``held``: the mapped inputs (their
    values, on the client: their elements go out with the element tasks), and the others
    (kept where the next round can use them: on a cluster, held there)."""
    inputs: set[str] = set()
    others: set[str] = set()
    for step in steps:
        if step.name in held:
            spec = step.task.spec
            if spec.map_over is not None and spec.map_over not in held:
                inputs.add(spec.map_over)
            others.update(dep for dep in spec.depends_on if dep not in held)
    return inputs, others - inputs


def this_round(steps: Iterable[Step], held: set[str]) -> tuple[Step, ...]:
    """The steps of a round: those not ``held`` back, less the tasks known from earlier
    rounds that none of them reads (their results are not sent again)."""
    live = [step for step in steps if step.name not in held]
    read = {
        dep for step in live if step.action is not Action.KNOWN for dep in step.task.spec.depends_on
    }
    return tuple(s for s in live if s.action is not Action.KNOWN or s.name in read)


def expand(
    graph: dict[Any, Any],
    step: Step,
    wrapper: TaskWrapper,
    refs: Mapping[str, TaskRef],
    known: Mapping[str, Outcome],
    run_id: str,
    *,
    threads: int = 1,
) -> list[Any]:
    """Add the element tasks and the gather task of mapped ``step`` to ``graph``; ``wrapper``
    is the task wrapper it would have unmapped. Returns the element keys."""
    spec = step.task.spec
    name, map_over = step.name, spec.map_over
    assert map_over is not None
    key = (name, run_id)
    upstream = [refs[dep] for dep in spec.depends_on]
    store = TaskWrapper(
        name=name, func=wrapper.func, storage=wrapper.storage, measures=wrapper.measures
    )
    gather = MapGather(store, len(upstream), spec.on_error or "fail")
    mapped = known[map_over]
    if mapped.status not in DONE:  # skipped after it, by the gather
        graph[key] = DaskTask(key, gather, *upstream)
        return []
    try:
        items = elements_of(name, map_over, mapped.value)
        count = len(items)
    except Exception as exc:  # MapInputError; or a len() that raised
        failed = Outcome(status=TaskStatus.FAILED, failure=Failure.from_exception(name, exc))
        graph[key] = DaskTask(key, _Failed(failed))
        return []
    size = spec.batch_size
    if size == "auto":
        size = auto_batch_size(count, threads)
    step_size = int(size) if size is not None else 1
    policy = TaskWrapper(
        name=name, func=wrapper.func, retry=wrapper.retry, timeout=wrapper.timeout,
        pool=wrapper.pool,
    )  # fmt: skip
    shared = SharedPolicy(policy)
    position = spec.depends_on.index(map_over)
    others = [ref for dep, ref in zip(spec.depends_on, upstream, strict=True) if dep != map_over]
    element_keys: list[Any] = []
    for index, start in enumerate(range(0, count, step_size)):
        element_key = (name, run_id, index)
        part = [items[i] for i in range(start, min(start + step_size, count))]
        runner = ElementRunner(shared, position, start, part)
        graph[element_key] = DaskTask(element_key, runner, *others)
        element_keys.append(element_key)
    graph[key] = DaskTask(key, gather, *upstream, *[TaskRef(k) for k in element_keys])
    return element_keys


class _Failed:
    """A task that fails before it starts (its mapped input is not a sequence)."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def __call__(self) -> Outcome:
        return self.outcome

"""Lower: turn the steps of one run into one Dask graph.

Guarantees:

* One run is one Dask graph, built as a raw ``dask.task_spec`` dict (a few microseconds a task;
  never ``dask.delayed``, whose chains cost the square of their depth to build).
* Each pipeline task is one Dask task keyed ``(task_name, run_id)``: Dask's dashboard, task
  stream and progress bars group by the first element, so they show the task names, and two
  runs never share a key. A large run keys its tasks ``(group, run_id, task_name)``, the
  tasks of one kind under one prefix (see :mod:`~xlibrary.pipeline.keys`).
* A task that runs becomes a :class:`~xlibrary.pipeline.wrapper.TaskWrapper`; one whose result
  is in the cache or saved by an earlier run becomes a loader; one whose outcome is already in
  hand becomes data; a pruned task, or one the run's selection left out, is left out.
* An output task becomes an :class:`~xlibrary.pipeline.outputs.OutputPicker` of its task's
  outcome; a task with named outputs has its result checked against them; a task with a pool
  takes a place in it (``pools``, by pool name) around each attempt.
* A mapped task (``map_over=``) whose input is known becomes element tasks keyed
  ``(task_name, run_id, i)`` and a gather task keyed ``(task_name, run_id)``
  (:mod:`~.expand`, which also says how the rounds of such a run go).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from dask.task_spec import DataNode, TaskRef
from dask.task_spec import Task as DaskTask

from .compose import OutputOf
from .expand import expand
from .inputs import InputGuard
from .keys import Key, grouped, task_key
from .loaders import CacheLoader, DatasetLoader, SavedLoader
from .outcome import Outcome
from .outputs import CheckedOutputs, OutputPicker
from .plan import Action, Step
from .pools import Pool
from .saving import OutputLoader
from .store import Cache, RunStore
from .wrapper import Measures, TaskStorage, TaskWrapper

__all__ = ["Key", "lower"]


def lower(
    steps: tuple[Step, ...],
    pipeline: str,
    run_id: str,
    *,
    cache: Cache | None = None,
    runs: RunStore | None = None,
    save_results: bool = False,
    known: Mapping[str, Outcome] | None = None,
    measures: Measures | None = None,
    pools: Mapping[str, Pool] | None = None,
    guard_inputs: bool = False,
    threads: int = 1,
    remote: Mapping[str, Any] | None = None,
) -> tuple[dict[Key, Any], dict[str, Key]]:
    """The Dask graph of one run, and each task's key by task name (pruned tasks left out).

    ``cache`` serves tasks with a cache rule; with ``save_results`` every task that runs saves
    its result in ``runs`` under ``run_id``; ``known`` holds the outcomes of KNOWN steps;
    ``measures`` is what monitored tasks measure (tasks tracked by a decorator measure all);
    ``pools`` are the concurrency pools of tasks declared with ``pool=``. A task with
    parameters is called with them as keywords; with ``guard_inputs`` each task warns when it
    changes a value it was given (``debug_mode``). A mapped task's input must be KNOWN;
    ``threads`` (the backend's worker threads) sizes its ``batch_size="auto"`` batches.
    A KNOWN task in ``remote`` is referred to by its future there (held on the cluster).
    """
    tracking = measures.tracking() if measures is not None else None
    run_action, prune, unselected = Action.RUN, Action.PRUNE, Action.UNSELECTED
    by_group = grouped(len(steps))
    keys: dict[str, Key] = {}
    refs: dict[str, TaskRef] = {}  # one reference per key, shared by the tasks that need it
    graph: dict[Key, Any] = {}
    for step in steps:  # topological: a task's dependencies are lowered before it
        action = step.action
        if action is prune or action is unselected:  # nothing that runs needs it
            continue
        name = step.name
        key = keys[name] = task_key(name, run_id, by_group=by_group)
        refs[name] = TaskRef(key)
        planned = step.task
        if action is run_action:
            spec = planned.spec
            if type(spec.func) is OutputOf:  # picks its part of its task's result
                picker = OutputPicker(name, spec.func, planned.output, run_id)
                graph[key] = DaskTask(key, picker, refs[spec.depends_on[0]])
                continue
            rule = planned.cache if cache is not None else None
            storage = None
            inputs, output = step.inputs, planned.output
            token = inputs is not None and inputs.token is not None  # a dataset's output
            if rule is not None or save_results or output is not None or token:
                storage = TaskStorage(
                    pipeline=pipeline,
                    run_id=run_id,
                    cache=cache if rule is not None else None,
                    cache_key=step.cache_key,
                    cache_checked=step.cache_checked,
                    code=rule.code if rule and rule.key is None else "",  # derived keys only
                    ttl=rule.ttl if rule else None,
                    runs=runs if save_results else None,
                    inputs=inputs,
                    output=output,
                )
            measure = measures
            if spec.monitor:
                measure = tracking or Measures(run_id=run_id).tracking()
            func = spec.func
            if inputs is not None and inputs.params:
                func = functools.partial(func, **inputs.params)
            if guard_inputs:
                func = InputGuard(name, func, spec.depends_on)
            if spec.outputs is not None:
                func = CheckedOutputs(name, func, spec.outputs)
            wrapper = TaskWrapper(
                name=name,
                func=func,
                retry=planned.retry,
                timeout=planned.timeout,
                storage=storage,
                measures=measure,
                pool=None if spec.pool is None or pools is None else pools[spec.pool],
            )
            if spec.map_over is not None:
                expand(graph, step, wrapper, refs, known or {}, run_id, threads=threads)
                continue
            graph[key] = DaskTask(key, wrapper, *[refs[dep] for dep in spec.depends_on])
        elif action is Action.LOAD:
            assert cache is not None and step.cache_key is not None
            if planned.output is not None:  # cached from its saved output
                assert step.saved is not None and step.token is not None
                loader: Any = OutputLoader(name, planned.output, step.saved, step.token)
            else:
                loader = CacheLoader(name, cache, step.cache_key)
            graph[key] = DaskTask(key, loader)
        elif action is Action.RESTORE and step.restore_dataset is not None:
            graph[key] = DaskTask(key, DatasetLoader(name, step.restore_dataset))
        elif action is Action.RESTORE:
            assert runs is not None and step.restore_run is not None
            loader = SavedLoader(name, runs, pipeline, step.restore_run, step.token)
            graph[key] = DaskTask(key, loader)
        elif remote is not None and name in remote:  # KNOWN, its result on the cluster
            refs[name] = remote[name]  # a distributed Future is a TaskRef to its key
        else:  # KNOWN
            assert known is not None
            graph[key] = DataNode(key, known[name])
    return graph, keys

"""The resource pre-flight: a task that no worker can ever satisfy fails before the run.

:func:`check_resources` raises a :class:`~.errors.ResourceError` naming the task, what it
asked and the largest worker, instead of letting it wait forever in Dask's ``no-worker``
state. :func:`preflight` decides what to check against: the layout of a cluster the manager
starts, or the workers a remote cluster declares now; on the embedded backend resources mean
nothing, and a task that sets them is warned about once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from .errors import ResourceError
from .plan import Plan

__all__ = ["check_resources", "preflight"]

logger = logging.getLogger("xlibrary.pipeline")


def preflight(
    plan: Plan,
    *,
    local: bool,
    offered: Callable[[], tuple[list[dict[str, float]], str] | None],
    warn_once: Callable[[tuple[str, str, str], str], None],
) -> None:
    """Fail before the run when a task asks what no worker can ever give it.

    ``offered()`` gives what each worker offers and the name of the cluster in messages
    (``None``: the cluster has no workers yet, so nothing can be checked).
    """
    asking = [t.name for t in plan.tasks if t.spec.resource_requirements]
    if not asking:
        return
    if local:
        for name in asking:
            warn_once(
                (plan.pipeline, name, "resources"),
                f"task {name!r} of pipeline {plan.pipeline!r} sets resource_requirements, which "
                "take effect on dask.distributed; the embedded backend runs every task on this "
                "machine's threads",
            )
        return
    found = offered()
    if found is None:
        logger.warning(
            "the cluster has no workers yet, so the resources tasks ask for cannot be checked "
            "before the run"
        )
        return
    check_resources(plan, *found)


def check_resources(plan: Plan, offered: Iterable[Mapping[str, float]], where: str) -> None:
    """Raise ResourceError for the first task of ``plan`` that no worker in ``offered`` can
    satisfy. ``where`` names the cluster in the message."""
    workers = [dict(resources) for resources in offered]
    for planned in plan.tasks:
        asked = planned.spec.resource_requirements
        if not asked:
            continue
        if any(all(worker.get(k, 0) >= v for k, v in asked.items()) for worker in workers):
            continue
        largest = {k: max((w.get(k, 0) for w in workers), default=0) for k in asked}
        ask = ", ".join(f"{k}={_num(v)}" for k, v in asked.items())
        best = ", ".join(f"{k}={_num(v)}" for k, v in largest.items())
        if not workers:
            detail = f"{where} has no workers that declare resources"
        else:
            detail = f"the largest worker of {where} offers {best}"
        raise ResourceError(
            f"task {planned.name!r} of pipeline {plan.pipeline!r} asks for {ask}, and no worker "
            f"can ever give it that: {detail}. Lower the task's resource_requirements, or give "
            "workers more (resource_allocation / resource_limits, or --resources on "
            "`dask worker`)"
        )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"

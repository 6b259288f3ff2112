"""Execute one run: lower the plan, compute it on a backend once, and collect the result."""

from __future__ import annotations

import secrets
import time

from .backends import Backend
from .lower import lower
from .observe import collect
from .plan import Plan
from .result import PipelineResult

__all__ = ["execute", "new_run_id"]


def new_run_id() -> str:
    """A run id that sorts by start time and is unique: ``20261128T082121-3fa2c1d0``."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def execute(plan: Plan, backend: Backend, *, parallel: bool = True) -> PipelineResult:
    """Run ``plan`` on ``backend`` as one Dask graph and return its result."""
    run_id = new_run_id()
    graph, keys = lower(plan, run_id)
    started = time.time()
    outcomes = backend.run(graph, keys, parallel=parallel)
    finished = time.time()
    return collect(plan, run_id, outcomes, started=started, finished=finished)

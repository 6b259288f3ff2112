"""A progress bar for runs: tasks done of the total, and the task that last started.

Drawn with tqdm (``tqdm.auto``: text in a terminal, a widget in a notebook). Shown when
``display_progress`` is set and the output is a terminal or a notebook, or always when a run
asks for it (``execute_pipeline(..., display_progress=True)``).
"""

from __future__ import annotations

import sys

from ..errors import missing_extra

__all__ = ["Progress", "wanted"]


def wanted(setting: bool, asked: bool | None) -> bool:
    """Whether to show progress: asked for explicitly, or set and somewhere to show it."""
    if asked is not None:
        return asked
    if not setting:
        return False
    return "ipykernel" in sys.modules or sys.stderr.isatty()


class Progress:
    """One run's progress bar."""

    def __init__(self, pipeline: str) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:  # pragma: no cover - tqdm comes with the pipeline extra
            raise missing_extra("tqdm", "pipeline", "display_progress") from exc
        self._bar = tqdm(total=None, desc=pipeline, unit="task", leave=True)

    def begin(self, tasks: int) -> None:
        """The run computes ``tasks`` tasks (the others are known already)."""
        self._bar.reset(total=tasks)

    def started(self, task: str) -> None:
        self._bar.set_postfix_str(task, refresh=False)

    def done(self, task: str) -> None:
        self._bar.set_postfix_str(task, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()

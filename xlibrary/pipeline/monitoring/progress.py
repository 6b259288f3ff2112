"""A progress bar for runs: tasks done of the total, and the task that last started.

Drawn with tqdm (``tqdm.auto``: text in a terminal, a widget in a notebook). Shown when
``display_progress`` is set and the output is a terminal or a notebook, or always when a run
asks for it (``execute_pipeline(..., display_progress=True)``).
"""

from __future__ import annotations

import sys
from typing import Any

from dask.callbacks import Callback

from ..errors import missing_extra

__all__ = ["Progress", "ProgressCallback", "wanted"]


def wanted(setting: bool, asked: bool | None) -> bool:
    """Whether to show progress: asked for explicitly, or set and somewhere to show it."""
    if asked is not None:
        return asked
    if not setting:
        return False
    return "ipykernel" in sys.modules or sys.stderr.isatty()


class Progress:
    """One run's progress bar."""

    def __init__(self, total: int, pipeline: str) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:  # pragma: no cover - tqdm comes with the pipeline extra
            raise missing_extra("tqdm", "pipeline", "display_progress") from exc
        self._bar = tqdm(total=total, desc=pipeline, unit="task", leave=True)

    def started(self, task: str) -> None:
        self._bar.set_postfix_str(task, refresh=False)

    def done(self, task: str) -> None:
        self._bar.set_postfix_str(task, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class ProgressCallback(Callback):
    """Feeds a :class:`Progress` from Dask's local scheduler."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.progress = progress

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        self.progress.started(str(key[0]) if isinstance(key, tuple) else str(key))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self.progress.done(str(key[0]) if isinstance(key, tuple) else str(key))

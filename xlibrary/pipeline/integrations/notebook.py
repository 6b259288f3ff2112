"""Notebooks: show runs and task results inline in Jupyter, and as text everywhere else.

Everything here works without IPython: outside a running IPython kernel (a script, a
terminal, a test) the same calls print plain text. IPython is imported only when a kernel is
running, so it is already there. The previews (a DataFrame's head, a short ``repr``, a failed
task's error) are the ones :meth:`PipelineResult._repr_html_` shows::

    from xlibrary.pipeline.integrations.notebook import in_notebook, show_task

    show_task("load_data", df)   # a "task load_data" block with df's head; or one line of text
"""

from __future__ import annotations

import html
import logging
import sys
from typing import Any

from ..result import _preview_html, _preview_text

__all__ = ["LiveResults", "in_notebook", "show", "show_task"]


def in_notebook() -> bool:
    """Whether this code runs in an IPython kernel (Jupyter, VS Code, Colab), which shows HTML.

    A terminal IPython shell is not a notebook: it shows text.
    """
    if "IPython" not in sys.modules:  # never import IPython just to find out
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(html_text: str, plain_text: str) -> None:
    """Display ``html_text`` in a notebook, else print ``plain_text`` to stdout."""
    if in_notebook():
        from IPython.display import HTML, display

        display(HTML(html_text))  # type: ignore[no-untyped-call]  # IPython is untyped here
    else:
        print(plain_text)


def show_task(name: str, value: Any) -> None:
    """Show one task's result: in a notebook a small HTML block headed
    "task <name>" with a preview of ``value``; elsewhere one line of text.

    >>> show_task("extract", [1, 2, 3])
    task extract: [1, 2, 3]
    """
    block = (
        '<div class="xlibrary-pipeline-task" style="margin: 0.3em 0">'
        f"<strong>task</strong> <code>{html.escape(name)}</code>"
        f"<div>{_preview_html(value)}</div></div>"
    )
    show(block, f"task {name}: {_preview_text(value, 100)}")


class LiveResults:
    """A run listener that shows each task's result as soon as the task finishes
    (``show_intermediate``), where the backend has the value at hand (the embedded one); the
    manager shows the rest when the run ends. ``shown`` names the tasks already shown."""

    def __init__(self) -> None:
        self.shown: set[str] = set()

    def started(self, task: str) -> None:
        pass

    def done(self, task: str) -> None:
        pass

    def outcome(self, task: str, outcome: Any) -> None:
        from ..runner import CACHED, SUCCEEDED

        if getattr(outcome, "status", None) not in (SUCCEEDED, CACHED) or task in self.shown:
            return
        self.shown.add(task)
        try:
            show_task(task, outcome.value)
        except Exception:  # showing a result must never fail the run
            logging.getLogger(__name__).exception("could not show the result of task %r", task)

    def close(self) -> None:
        pass

"""Notebooks: show runs and task results inline in Jupyter, and as text everywhere else.

Everything here works without IPython: outside a running IPython kernel (a script, a
terminal, a test) the same calls print plain text. IPython is imported only when a kernel is
running, so it is already there. The previews (a DataFrame's head, a short ``repr``, a failed
task's error) are the ones :meth:`PipelineResult._repr_html_` shows::

    from xlibrary.pipeline.integrations.notebook import in_notebook, show_task

    show_task("load_data", df)   # a "task load_data" block with df's head; or one line of text
"""

from __future__ import annotations

from ..present import LiveResults, NotebookRun, in_notebook, show, show_task

__all__ = ["LiveResults", "NotebookRun", "in_notebook", "show", "show_task"]

"""Pictures of a pipeline: its task graph as Graphviz DOT, SVG or PNG, coloured by a run.

One box per task, an arrow from each dependency to the task that needs it, left to right.
A task with named outputs lists them under its name; each output a task depends on is a
dashed box of its own (``X_train``) between them. Given a run's
:class:`~xlibrary.pipeline.result.PipelineResult`, each box also says how its task ended and
how long it took, and is coloured by it: succeeded green, cached blue, failed red, skipped
grey, cancelled orange, not selected pale grey.

SVG never needs Graphviz: with the ``dot`` command on the ``PATH`` (Debian/Ubuntu:
``apt-get install graphviz``) Graphviz lays the graph out, and without it a small layout of
our own draws the same boxes in columns by dependency depth. PNG needs ``dot``::

    to_dot(pipeline)                                   # DOT text
    to_svg(pipeline, result)                           # SVG text, coloured by the run
    visualize(pipeline, "etl.svg", result=result)      # or "etl.png"
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .compose import is_output
from .errors import PipelineDefinitionError, PipelineError
from .present import STATUS_COLOURS, format_duration, status_words
from .records import TaskRecord
from .result import PipelineResult
from .spec import Task


class Pipeline(Protocol):
    """What a picture reads of a pipeline: its name and its task specs in order."""

    @property
    def name(self) -> str: ...
    @property
    def tasks(self) -> tuple[Task, ...]: ...


__all__ = ["to_dot", "to_svg", "visualize"]

_FONT = "Helvetica,Arial,sans-serif"
_EDGE_COLOUR = "#616161"


def to_dot(pipeline: Pipeline, result: PipelineResult | None = None) -> str:
    """The task graph as Graphviz DOT, coloured by ``result`` when given.

    >>> print(to_dot(pipeline))  # doctest: +SKIP
    digraph "etl" {
      graph [rankdir=LR, ...];
      ...
      "extract" [label="extract", fillcolor="#ffffff", color="#455a64"];
      "transform" [label="transform", fillcolor="#ffffff", color="#455a64"];
      "extract" -> "transform";
    }
    """
    _check_result(pipeline, result)
    lines = [
        f"digraph {_dot_id(pipeline.name)} {{",
        f'  graph [rankdir=LR, fontname="{_FONT}", nodesep=0.3, ranksep=0.5];',
        f'  node [shape=box, style="rounded,filled", fontname="{_FONT}", fontsize=12];',
        f'  edge [color="{_EDGE_COLOUR}", arrowsize=0.7];',
    ]
    for task in pipeline.tasks:
        run = _run_of(task.name, result)
        fill, line = _colours(run)
        label = "\n".join(_label_lines(task, run))
        style = ', style="rounded,filled,dashed"' if is_output(task) else ""
        lines.append(
            f"  {_dot_id(task.name)} [label={_dot_label(label)}, "
            f'fillcolor="{fill}", color="{line}"{style}];'
        )
    for task in pipeline.tasks:
        for dep in task.depends_on:
            lines.append(f"  {_dot_id(dep)} -> {_dot_id(task.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(pipeline: Pipeline, result: PipelineResult | None = None) -> str:
    """The task graph as an ``<svg>`` element (no XML prolog, so it can be inlined in HTML).

    Laid out by Graphviz's ``dot`` when it is installed, else by a layout of our own.
    """
    if shutil.which("dot") is None:
        _check_result(pipeline, result)
        return _SvgLayout(pipeline.tasks, result).render(pipeline.name)
    svg = _run_dot(to_dot(pipeline, result), "svg").decode("utf-8")
    return svg[svg.index("<svg") :]


def visualize(
    pipeline: Pipeline, filename: str | os.PathLike[str], *, result: PipelineResult | None = None
) -> Path:
    """Draw the task graph into ``filename``: SVG or PNG, by its suffix. Returns the path.

    PNG needs Graphviz's ``dot`` command; SVG does not.

    >>> visualize(pipeline, "etl.svg", result=result)  # doctest: +SKIP
    PosixPath('etl.svg')
    """
    path = Path(filename)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n' + to_svg(pipeline, result), encoding="utf-8"
        )
    elif suffix == ".png":
        if shutil.which("dot") is None:
            raise PipelineError(
                f"drawing {str(path)!r} as PNG needs Graphviz's 'dot' command, which is not on "
                "the PATH; install Graphviz (Debian/Ubuntu: apt-get install graphviz, macOS: "
                "brew install graphviz), or draw an .svg instead, which needs nothing"
            )
        path.write_bytes(_run_dot(to_dot(pipeline, result), "png"))
    else:
        raise PipelineError(
            f"cannot draw pipeline {pipeline.name!r} into {str(path)!r}: the file name must end "
            "in .svg or .png"
        )
    return path


def pipeline_html(pipeline: Pipeline, result: PipelineResult | None = None) -> str:
    """The task graph as inline SVG for a notebook, or the reason it cannot be drawn."""
    try:
        return to_svg(pipeline, result)
    except PipelineDefinitionError as exc:
        return f"<p>pipeline {html.escape(repr(pipeline.name))}: {html.escape(str(exc))}</p>"


# -- shared by both layouts -------------------------------------------------------------------


def _check_result(pipeline: Pipeline, result: PipelineResult | None) -> None:
    if result is not None and result.pipeline != pipeline.name:
        raise PipelineError(
            f"cannot colour pipeline {pipeline.name!r} by a run of pipeline "
            f"{result.pipeline!r}; pass a result of {pipeline.name!r}, or none"
        )


def _run_of(name: str, result: PipelineResult | None) -> TaskRecord | None:
    return result.tasks.get(name) if result is not None else None


def _colours(run: TaskRecord | None) -> tuple[str, str]:
    return STATUS_COLOURS.get(run.status if run is not None else None, STATUS_COLOURS[None])


def _label_lines(task: Task, run: TaskRecord | None) -> list[str]:
    """The task's name (an output task's: its output's) and its named outputs, then (after a
    run) its status and duration: the colour is not the only thing that says how it went."""
    lines = [task.name.rpartition(".")[2] if is_output(task) else task.name]
    if task.outputs is not None:
        lines.append("→ " + ", ".join(task.outputs))
    if run is None:
        return lines
    if run.duration is None:
        return [*lines, status_words(run.status)]
    return [*lines, f"{status_words(run.status)} · {format_duration(run.duration)}"]


# -- Graphviz ---------------------------------------------------------------------------------


def _dot_id(name: str) -> str:
    """``name`` as a DOT node or graph id that Graphviz reads back exactly.

    In a quoted DOT string only ``\\"`` is an escape and a backslash stays as written, so a
    name with a backslash (or a line break) becomes an HTML-like id, ``<...>``, instead.
    """
    if any(c in name for c in "\\\r\n"):
        return f"<{html.escape(name, quote=False)}>"
    return '"' + name.replace('"', '\\"') + '"'


def _dot_label(text: str) -> str:
    """``text`` as a quoted DOT label: ``\\`` and ``"`` escaped, line breaks as ``\\n``."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "")
    return '"' + text.replace("\n", "\\n") + '"'


def _run_dot(source: str, fmt: str) -> bytes:
    try:
        done = subprocess.run(
            ["dot", f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PipelineError(f"Graphviz's dot could not draw the pipeline: {exc}") from exc
    if done.returncode != 0:
        raise PipelineError(
            f"Graphviz's dot could not draw the pipeline (exit {done.returncode}): "
            f"{done.stderr.decode('utf-8', 'replace').strip()}"
        )
    return done.stdout


# -- our own layout, when Graphviz is not installed -------------------------------------------

_CHAR_WIDTH = 7.2  # of 12 px Helvetica, about; boxes are sized by it
_LINE_HEIGHT = 16.0
_PAD = 10.0
_COLUMN_GAP = 56.0
_ROW_GAP = 16.0
_MARGIN = 12.0
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    """``text`` escaped for XML text and attributes; characters XML cannot hold become ``?``."""
    return html.escape(_INVALID_XML.sub("?", text), quote=True)


@dataclass
class _Box:
    lines: list[str]
    fill: str
    line: str
    dashed: bool = False
    x: float = 0.0
    y: float = 0.0

    @property
    def width(self) -> float:
        return max(72.0, max(len(line) for line in self.lines) * _CHAR_WIDTH + 2 * _PAD)

    @property
    def height(self) -> float:
        return len(self.lines) * _LINE_HEIGHT + _PAD


class _SvgLayout:
    """Columns by topological generation (a task sits one column right of its deepest
    dependency), tasks in a column ordered by where their dependencies sit, edges as curves."""

    def __init__(self, tasks: tuple[Task, ...], result: PipelineResult | None) -> None:
        self.tasks = tasks
        self.boxes: dict[str, _Box] = {}
        for task in tasks:
            run = _run_of(task.name, result)
            fill, line = _colours(run)
            self.boxes[task.name] = _Box(_label_lines(task, run), fill, line, is_output(task))
        self.width, self.height = self._place()

    def _place(self) -> tuple[float, float]:
        depth: dict[str, int] = {}
        columns: list[list[str]] = []
        for task in self.tasks:  # topological: dependencies are placed first
            depth[task.name] = 1 + max((depth[d] for d in task.depends_on), default=-1)
            if depth[task.name] == len(columns):
                columns.append([])
            columns[depth[task.name]].append(task.name)
        row: dict[str, float] = {}
        deps = {task.name: task.depends_on for task in self.tasks}
        for column in columns:  # barycentre ordering keeps edges short and crossings few
            column.sort(key=lambda n: sum(row[d] for d in deps[n]) / max(1, len(deps[n])))
            row.update((name, float(i)) for i, name in enumerate(column))
        heights = [sum(self.boxes[n].height for n in c) + _ROW_GAP * (len(c) - 1) for c in columns]
        total_height = max(heights)
        x = _MARGIN
        for column, height in zip(columns, heights, strict=True):
            width = max(self.boxes[n].width for n in column)
            y = _MARGIN + (total_height - height) / 2
            for name in column:
                box = self.boxes[name]
                box.x, box.y = x + (width - box.width) / 2, y
                y += box.height + _ROW_GAP
            x += width + _COLUMN_GAP
        return x - _COLUMN_GAP + _MARGIN, total_height + 2 * _MARGIN

    def render(self, title: str) -> str:
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width:.0f}" '
            f'height="{self.height:.0f}" viewBox="0 0 {self.width:.0f} {self.height:.0f}" '
            f'font-family="{_FONT}" font-size="12">',
            f"<title>{_xml(title)}</title>",
            '<defs><marker id="xlibrary-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{_EDGE_COLOUR}"/></marker></defs>',
        ]
        parts += [self._edge(dep, task.name) for task in self.tasks for dep in task.depends_on]
        parts += [self._node(name, box) for name, box in self.boxes.items()]
        parts.append("</svg>")
        return "\n".join(parts)

    def _edge(self, source: str, target: str) -> str:
        a, b = self.boxes[source], self.boxes[target]
        x1, y1 = a.x + a.width, a.y + a.height / 2
        x2, y2 = b.x - 1, b.y + b.height / 2
        bend = max(20.0, (x2 - x1) / 2)
        return (
            f'<g class="edge"><title>{_xml(source)}-&gt;{_xml(target)}</title>'
            f'<path d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} '
            f'{x2:.1f},{y2:.1f}" fill="none" stroke="{_EDGE_COLOUR}" stroke-width="1.2" '
            'marker-end="url(#xlibrary-arrow)"/></g>'
        )

    def _node(self, name: str, box: _Box) -> str:
        texts = []
        for i, line in enumerate(box.lines):
            y = box.y + _PAD / 2 + _LINE_HEIGHT * (i + 0.75)
            style = ' font-size="11" fill="#424242"' if i else ""
            texts.append(
                f'<text x="{box.x + box.width / 2:.1f}" y="{y:.1f}" '
                f'text-anchor="middle"{style}>{_xml(line)}</text>'
            )
        return (
            f'<g class="node"><title>{_xml(name)}</title>'
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
            f'height="{box.height:.1f}" rx="6" ry="6" fill="{box.fill}" stroke="{box.line}"'
            + (' stroke-dasharray="4 3"/>' if box.dashed else "/>")
            + "".join(texts)
            + "</g>"
        )

"""Pictures of pipelines: DOT, SVG (laid out by Graphviz or by our own layout), PNG files, and
the inline SVG a notebook shows."""

from __future__ import annotations

import itertools
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from xlibrary.pipeline import Pipeline, PipelineError, PipelineManager, PipelineResult, pictures

SVG = "{http://www.w3.org/2000/svg}"
FAILING = "<a & b>"  # a name that needs escaping in XML, and fails
EDGES = {
    ("extract", "clean"),
    ("extract", FAILING),
    (FAILING, "report"),
    ("clean", "summary"),
    ("extract", "summary"),
}
FILL = {"succeeded": "#c8e6c9", "failed": "#ffcdd2", "skipped": "#eeeeee", None: "#ffffff"}
EXPECTED_STATUS = {
    "extract": "succeeded",
    "clean": "succeeded",
    "summary": "succeeded",
    FAILING: "failed",
    "report": "skipped",
}


def make_pipeline() -> Pipeline:
    pipeline = Pipeline("pictures")

    @pipeline.task("extract")
    def extract() -> list[int]:
        return [1, 2, 3]

    @pipeline.task("clean", depends_on=["extract"])
    def clean(rows: list[int]) -> list[int]:
        return [r for r in rows if r > 1]

    @pipeline.task(FAILING, depends_on=["extract"])
    def broken(rows: list[int]) -> None:
        raise ValueError("no good")

    @pipeline.task("report", depends_on=[FAILING])
    def report(value: None) -> str:
        return "never"

    @pipeline.task("summary", depends_on=["clean", "extract"])
    def summary(cleaned: list[int], rows: list[int]) -> int:
        return len(cleaned) + len(rows)

    return pipeline


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return make_pipeline()


@pytest.fixture(scope="module")
def result(pipeline: Pipeline) -> PipelineResult:
    with PipelineManager({"store": {"url": "memory://pictures"}}) as pm:
        result = pm.execute_pipeline(pipeline)
    assert {name: str(status) for name, status in result.states.items()} == EXPECTED_STATUS
    return result


@pytest.fixture
def dot() -> None:
    """Graphviz's dot, which CI installs; missing, the tests say how to get it."""
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's 'dot' command is not installed; apt-get install graphviz")


@pytest.fixture
def no_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without Graphviz."""
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)


@pytest.fixture(params=["graphviz", "builtin"])
def layout(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each SVG test runs on both layouts: Graphviz's and our own."""
    request.getfixturevalue("dot" if request.param == "graphviz" else "no_dot")
    yield request.param


def svg_nodes(svg: str) -> dict[str, ET.Element]:
    """The node groups of an SVG drawn by either layout, by task name (their <title>)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    nodes = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "node":
            title = group.find(f"{SVG}title")
            assert title is not None and title.text is not None
            nodes[title.text] = group
    return nodes


def svg_edges(svg: str) -> set[tuple[str, str]]:
    edges = set()
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if group.get("class") == "edge":
            title = group.find(f"{SVG}title")
            assert title is not None and title.text is not None
            source, target = title.text.split("->", 1)
            edges.add((source, target))
    return edges


def fills(group: ET.Element) -> set[str]:
    return {element.get("fill", "") for element in group.iter() if element.get("fill")}


def test_dot_has_every_task_and_edge(pipeline: Pipeline) -> None:
    dot_source = pictures.to_dot(pipeline)
    assert dot_source.startswith('digraph "pictures" {')
    assert "rankdir=LR" in dot_source
    for task in pipeline.tasks:
        assert f'"{task.name}" [label="{task.name}", fillcolor="{FILL[None]}"' in dot_source
    edges = {line.strip() for line in dot_source.splitlines() if "->" in line}
    assert edges == {f'"{source}" -> "{target}";' for source, target in EDGES}


def test_dot_colours_and_times_tasks_after_a_run(
    pipeline: Pipeline, result: PipelineResult
) -> None:
    lines = pictures.to_dot(pipeline, result).splitlines()
    for name, status in EXPECTED_STATUS.items():
        (line,) = [line for line in lines if line.strip().startswith(f'"{name}" [')]
        assert f'fillcolor="{FILL[status]}"' in line
        assert f"\\n{status}" in line
        if status != "skipped":  # a skipped task did not run: no duration
            assert " ms" in line or " s" in line, line


def test_svg_names_every_task_and_edge(pipeline: Pipeline, layout: str) -> None:
    svg = pictures.to_svg(pipeline)
    assert svg.startswith("<svg")
    nodes = svg_nodes(svg)
    assert set(nodes) == set(EXPECTED_STATUS)
    for name, group in nodes.items():
        assert name in "".join(group.itertext())
        assert FILL[None] in fills(group)
    assert svg_edges(svg) == EDGES


def test_svg_colours_tasks_by_how_the_run_went(
    pipeline: Pipeline, result: PipelineResult, layout: str
) -> None:
    nodes = svg_nodes(pictures.to_svg(pipeline, result))
    assert set(nodes) == set(EXPECTED_STATUS)
    for name, status in EXPECTED_STATUS.items():
        assert FILL[status] in fills(nodes[name]), (name, status)
        assert status in "".join(nodes[name].itertext())


def test_svg_escapes_names(layout: str) -> None:
    names = ["<a & b>", 'say "hi" \\ there', "ends in \\", "two\nlines", "naïve ✓", "it's"]
    pipeline = Pipeline("escaping & <quoting>")
    previous: list[str] = []
    for name in names:
        pipeline.task(name, depends_on=previous)(lambda *args: None)
        previous = [name]
    svg = pictures.to_svg(pipeline)
    assert set(svg_nodes(svg)) == set(names)
    assert svg_edges(svg) == set(itertools.pairwise(names))


def test_builtin_layout_puts_each_task_right_of_its_dependencies(
    pipeline: Pipeline, result: PipelineResult, no_dot: None
) -> None:
    nodes = svg_nodes(pictures.to_svg(pipeline, result))
    boxes = {}
    for name, group in nodes.items():
        rect = group.find(f"{SVG}rect")
        assert rect is not None
        x, y = float(rect.get("x", "")), float(rect.get("y", ""))
        boxes[name] = (x, y, x + float(rect.get("width", "")), y + float(rect.get("height", "")))
    for source, target in EDGES:
        assert boxes[source][2] < boxes[target][0], (source, target)
    names = list(boxes)
    for i, a in enumerate(names):  # no two boxes overlap
        for b in names[i + 1 :]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (a, b)


def test_svg_file(pipeline: Pipeline, result: PipelineResult, layout: str, tmp_path: Path) -> None:
    path = pipeline.visualize(str(tmp_path / "run.svg"), result=result)
    assert path == tmp_path / "run.svg"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<?xml")
    assert set(svg_nodes(text)) == set(EXPECTED_STATUS)


def test_png_file(pipeline: Pipeline, result: PipelineResult, dot: None, tmp_path: Path) -> None:
    path = pictures.visualize(pipeline, tmp_path / "run.PNG", result=result)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_png_without_graphviz_says_how_to_get_it(
    pipeline: Pipeline, no_dot: None, tmp_path: Path
) -> None:
    with pytest.raises(PipelineError, match=r"apt-get install graphviz.*\.svg"):
        pipeline.visualize(tmp_path / "run.png")
    assert not (tmp_path / "run.png").exists()


def test_an_unknown_suffix_names_the_two_formats(pipeline: Pipeline, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"\.svg or \.png"):
        pipeline.visualize(tmp_path / "run.jpg")
    assert not (tmp_path / "run.jpg").exists()


def test_a_run_of_another_pipeline_is_refused(result: PipelineResult, layout: str) -> None:
    other = Pipeline("other")
    other.task("extract")(lambda: None)
    with pytest.raises(PipelineError, match="run of pipeline 'pictures'"):
        pictures.to_svg(other, result)


def test_pipeline_shows_its_graph_in_a_notebook(pipeline: Pipeline, layout: str) -> None:
    html = pipeline._repr_html_()
    assert html.startswith("<svg")
    assert set(svg_nodes(html)) == set(EXPECTED_STATUS)


def test_a_pipeline_that_cannot_be_drawn_says_why() -> None:
    html = Pipeline("empty")._repr_html_()
    assert html.startswith("<p>")
    assert "has no tasks" in html


def test_after_a_run_the_picture_shows_how_it_went(layout: str, tmp_path: Path) -> None:
    pipeline = make_pipeline()
    assert pipeline.last_run is None
    bare = svg_nodes(pipeline.visualize(tmp_path / "before.svg").read_text(encoding="utf-8"))
    assert all(FILL[None] in fills(group) for group in bare.values())

    with PipelineManager({"store": {"url": "memory://pictures-latest"}}) as pm:
        result = pm.execute_pipeline(pipeline)
    last = pipeline.last_run
    assert last is not None and last.run_id == result.run_id
    assert last.results == {} and last.tasks[FAILING].error is None  # no values kept
    assert "no good" in (last.tasks[FAILING].traceback or "")

    for svg in (
        pipeline.visualize(tmp_path / "after.svg").read_text(encoding="utf-8"),
        pipeline._repr_html_(),
    ):
        nodes = svg_nodes(svg)
        for name, status in EXPECTED_STATUS.items():
            assert FILL[status] in fills(nodes[name]), (name, status)
    plain = svg_nodes(pipeline.visualize(tmp_path / "plain.svg", states=False).read_text())
    assert all(FILL[None] in fills(group) for group in plain.values())

    pipeline.task("late", depends_on=["summary"])(lambda total: total)
    assert pipeline.last_run is None  # the graph changed: that run no longer describes it
    assert "late" in svg_nodes(pipeline._repr_html_())

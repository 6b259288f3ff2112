"""Notebooks: a run's HTML summary, its text table outside a notebook, task previews, and the
example notebook executed on a real Jupyter kernel."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from xlibrary.pipeline import Pipeline, PipelineManager, PipelineResult
from xlibrary.pipeline.integrations.notebook import in_notebook, show_task

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"
FAILING = "<b>oops</b>"
ERROR = "bad <input> & more"


@pytest.fixture(scope="module")
def result() -> PipelineResult:
    pipeline = Pipeline("notebook")
    calls = []

    @pipeline.task("frame")
    def frame() -> pd.DataFrame:
        return pd.DataFrame({"x": range(10), "y": [i * i for i in range(10)]})

    @pipeline.task("flaky", depends_on=["frame"])
    @pipeline.retry_on_failure(max_retries=2)
    def flaky(df: pd.DataFrame) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first try")
        return {"rows": len(df), "frame": df.tail(3)}

    @pipeline.task(FAILING, depends_on=["frame"])
    def broken(df: pd.DataFrame) -> None:
        raise ValueError(ERROR)

    @pipeline.task("after", depends_on=[FAILING])
    def after(value: None) -> int:
        return 1

    with PipelineManager({"store": {"url": "memory://notebook-tests"}}) as pm:
        return pm.execute_pipeline(pipeline)


class _Rows(HTMLParser):
    """The rows of the outermost table: each cell's text, and the rows of tables inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.rows: list[list[str]] = []
        self.inner_rows: list[int] = []  # per outer row, <tr>s of tables inside it

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.depth += 1
        elif tag == "tr" and self.depth == 1:
            self.rows.append([])
            self.inner_rows.append(0)
        elif tag == "tr" and self.rows:
            self.inner_rows[-1] += 1
        elif tag in ("td", "th") and self.depth == 1:
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def table(html_text: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Rows of the result table by task name, and the rows of tables inside each."""
    parser = _Rows()
    parser.feed(html_text)
    header, *rows = parser.rows
    assert header == ["task", "status", "duration", "attempts", "result"]
    inner = dict(zip([row[0] for row in rows], parser.inner_rows[1:], strict=True))
    return {row[0]: row for row in rows}, inner


def test_result_html_shows_every_task(result: PipelineResult) -> None:
    html_text = result._repr_html_()
    rows, inner = table(html_text)
    assert list(rows) == ["frame", "flaky", FAILING, "after"]
    assert {name: row[1] for name, row in rows.items()} == {
        "frame": "succeeded",
        "flaky": "succeeded",
        FAILING: "failed",
        "after": "skipped",
    }
    assert {name: row[3] for name, row in rows.items()} == {
        "frame": "1",
        "flaky": "2",
        FAILING: "1",
        "after": "0",
    }
    assert rows["frame"][2].endswith("ms") or rows["frame"][2].endswith(" s")
    assert rows["after"][2] == "-"
    # a DataFrame shows its head: a header row and five of its ten rows
    assert '<table border="1" class="dataframe">' in html_text
    assert "DataFrame, 10 rows, 2 columns" in rows["frame"][4]
    assert inner["frame"] == 1 + 5
    # a dict holding a DataFrame: its short repr, and the frame's head below it
    assert "'rows': 10" in rows["flaky"][4] and "<DataFrame 3x2>" in rows["flaky"][4]
    assert inner["flaky"] == 1 + 3
    # the failed task's error, escaped; the skipped one says why
    assert rows[FAILING][4] == f"ValueError: {ERROR}"
    assert html.escape(ERROR) in html_text and ERROR not in html_text
    assert html.escape(FAILING) in html_text and FAILING not in html_text
    assert rows["after"][4] == f"not run: {FAILING!r} failed"
    headline = html.unescape(re.sub(r"<[^>]+>", "", html_text.split("<table", 1)[0]))
    assert headline.startswith(f"pipeline notebook · run {result.run_id} · failed at {FAILING!r}")


def test_a_long_value_is_cut_short_and_escaped() -> None:
    from xlibrary.pipeline.present import preview_html as _preview_html

    preview = _preview_html({f"key{i}": "<" * 50 for i in range(20)})
    assert preview.startswith("<code>{") and preview.endswith("…</code>")
    text = html.unescape(preview.removeprefix("<code>").removesuffix("</code>"))
    assert len(text) == 200
    assert "<" not in preview.removeprefix("<code>").removesuffix("</code>")


def test_display_results_prints_a_table_outside_a_notebook(
    result: PipelineResult, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not in_notebook()
    result.display_results()
    headline, header, *lines = capsys.readouterr().out.splitlines()
    assert headline.startswith(f"pipeline 'notebook' run {result.run_id} failed at {FAILING!r}")
    assert header.split() == ["task", "status", "duration", "attempts", "result"]
    assert [line.split()[:2] for line in lines] == [
        ["frame", "succeeded"],
        ["flaky", "succeeded"],
        [FAILING, "failed"],
        ["after", "skipped"],
    ]
    column = header.index("result")
    assert [line[column:] for line in lines] == [
        "<DataFrame 10x2>",
        "{'frame': <DataFrame 3x2>, 'rows': 10}",
        f"ValueError: {ERROR}",
        f"not run: {FAILING!r} failed",
    ]


def test_show_task_prints_one_line_outside_a_notebook(
    capsys: pytest.CaptureFixture[str],
) -> None:
    show_task("extract", [1, 2, 3])
    show_task("frame", pd.DataFrame({"x": range(7)}))
    show_task("long", "x" * 500)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["task extract: [1, 2, 3]", "task frame: <DataFrame 7x1>"]
    assert out[2].startswith("task long: 'xxx") and len(out[2]) < 130
    assert len(out) == 3


def live_pipeline(name: str) -> Pipeline:
    pipeline = Pipeline(name)
    pipeline.task("a")(lambda: [1, 2])

    @pipeline.task("b", depends_on=["a"])
    def b(rows: list[int]) -> int:
        print("b is running")
        return sum(rows)

    pipeline.task("c", depends_on=["b"])(lambda total: total * 10)
    return pipeline


@pytest.mark.parametrize("parallel", [True, False])
def test_show_intermediate_shows_each_result_as_its_task_finishes(
    parallel: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    with PipelineManager({"store": {"url": "memory://live"}}) as pm:
        pm.execute_pipeline(live_pipeline("live"), parallel=parallel, show_intermediate=True)
        assert capsys.readouterr().out.splitlines() == [
            "task a: [1, 2]",  # shown before b starts: while the run goes, not after it
            "b is running",
            "task b: 3",
            "task c: 30",
        ]
        pm.execute_pipeline(live_pipeline("quiet"))  # not asked, not in a notebook: nothing
        assert capsys.readouterr().out == "b is running\n"


def test_show_intermediate_on_a_cluster_shows_every_result_at_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        with Client(cluster) as client, PipelineManager(client=client) as pm:
            capsys.readouterr()
            result = pm.execute_pipeline(live_pipeline("live_cluster"), show_intermediate=True)
            out = capsys.readouterr().out.splitlines()
            assert [line for line in out if line.startswith("task ")] == [
                "task a: [1, 2]",  # brought back although a cluster keeps only final results
                "task b: 3",
                "task c: 30",
            ]
            assert set(result.results) == {"a", "b", "c"}
            assert set(pm.execute_pipeline(live_pipeline("final")).results) == {"c"}


@pytest.mark.timeout(300)
def test_example_notebook_runs_on_a_real_kernel(tmp_path: Path) -> None:
    import nbformat
    from jupyter_client.kernelspec import find_kernel_specs
    from nbclient import NotebookClient

    if "python3" not in find_kernel_specs():
        pytest.fail(
            "no Jupyter kernel named python3 in this environment; install it with: "
            "python -m ipykernel install --sys-prefix"
        )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        "commit examples/notebook.ipynb with its outputs cleared"
    )

    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    cells = {cell.metadata["tags"][0]: cell for cell in code}
    (dag,) = [out for out in cells["dag"].outputs if out.output_type == "execute_result"]
    picture = dag.data.get("image/svg+xml") or dag.data["text/html"]
    assert picture.startswith("<svg") and "load_data" in picture and "analyze" in picture

    # interactive_mode: each task's result shown as the task finished, then the table
    # (inline_results); the progress bar is a widget
    html_out = [
        out.data["text/html"]
        for out in cells["run"].outputs
        if out.output_type == "display_data" and "text/html" in out.data
    ]
    blocks = [h for h in html_out if "xlibrary-pipeline-task" in h]
    assert [re.findall(r"<code>(\w+)</code>", h)[0] for h in blocks] == ["load_data", "analyze"]
    assert "<table" in blocks[0]  # the DataFrame's head
    assert any("<table" in h and "load_data" in h for h in html_out if h not in blocks)

    shown = [out for out in cells["display-results"].outputs if out.output_type == "display_data"]
    assert len(shown) == 1
    summary = shown[0].data["text/html"]
    rows, inner = table(summary)
    assert {name: row[1] for name, row in rows.items()} == {
        "load_data": "succeeded",
        "analyze": "succeeded",
    }
    assert "DataFrame, 100 rows, 2 columns" in rows["load_data"][4]
    assert inner["load_data"] == 1 + 5  # the DataFrame's head
    assert "correlation" in rows["analyze"][4]

    (as_value,) = [out for out in cells["result"].outputs if out.output_type == "execute_result"]
    assert table(as_value.data["text/html"])[0].keys() == {"load_data", "analyze"}

    printed = "".join(out.text for out in cells["analysis"].outputs if out.get("name") == "stdout")
    assert "correlation: 0.9676" in printed

    svg = tmp_path / "data_analysis.svg"
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = svg.read_text(encoding="utf-8")
    assert "load_data" in text and "analyze" in text and "succeeded" in text

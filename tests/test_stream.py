"""Stream processing on the embedded default: stages, state, order, micro-batches,
backpressure, stopping, bad records, file and database sinks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from examples.stream_processing import Aggregator, DataProcessor  # the guide's two stages
from xlibrary.pipeline import MissingExtraError, StreamError, StreamPipeline, StreamTask
from xlibrary.pipeline.stream import Batch


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "value": i} for i in range(n)]


def test_guide_stages_give_the_exact_running_average() -> None:
    out: list[dict] = []
    stream = StreamPipeline("averages", batch_size=100)
    stream.add_source("numbers", records(10_000))
    stream.add_stage(DataProcessor(), parallelism=2)
    stream.add_stage(Aggregator(), parallelism=1)
    stream.add_sink("results", out.extend)
    metrics = stream.start()
    assert len(out) == 100  # one row per batch of 100
    assert out[-1]["count"] == 10_000
    assert out[-1]["average"] == pytest.approx(sum(v * 1.1 for v in range(10_000)) / 10_000)
    assert [row["count"] for row in out] == list(range(100, 10_001, 100))
    assert metrics["records_read"] == 10_000 and metrics["records_written"] == 100
    assert metrics["stages"]["DataProcessor"]["records_in"] == 10_000
    assert metrics["stages"]["Aggregator"]["records_out"] == 100
    assert metrics["stages"]["DataProcessor"]["throughput"] > 0


class Tag(StreamTask):
    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        super().__init__()
        self.barrier = barrier
        self.set_up = 0

    def setup(self) -> None:
        self.set_up += 1

    def process_batch(self, batch):
        if self.barrier is not None:
            self.barrier.wait()  # both chunks of the batch must be here at once
        return [{**r, "thread": threading.get_ident(), "set_up": self.set_up} for r in batch]

    def __deepcopy__(self, memo):  # copies share the barrier, not a copy of it
        twin = Tag(self.barrier)
        return twin


def test_parallel_stage_runs_its_chunks_at_once_and_keeps_order() -> None:
    out: list[dict] = []
    stream = StreamPipeline("parallel", batch_size=10)
    stream.add_source("numbers", records(100))
    stream.add_stage(Tag(threading.Barrier(2, timeout=10)), parallelism=2)
    stream.add_sink("out", out.extend)
    stream.start()
    assert [r["id"] for r in out] == list(range(100))
    assert len({r["thread"] for r in out}) == 2
    assert all(r["set_up"] == 1 for r in out)  # each copy set up once


def test_short_batches_go_when_the_timeout_passes() -> None:
    def slow():
        for i in range(6):
            time.sleep(0.1)
            yield {"id": i}

    sizes: list[int] = []
    stream = StreamPipeline("slow", batch_size=100, batch_timeout=0.25)
    stream.add_source("trickle", slow())
    stream.add_sink("sizes", lambda batch: sizes.append(len(batch)))
    stream.start()
    assert sum(sizes) == 6 and len(sizes) >= 2 and max(sizes) <= 3


def test_a_slow_sink_holds_the_source_back() -> None:
    seen: list[int] = []
    in_flight: list[int] = []

    def endless():
        i = 0
        while True:
            yield {"id": i}
            i += 1

    stream = StreamPipeline("backpressure", batch_size=10, max_in_flight=2)
    stream.add_source("endless", endless())

    def slow_sink(batch):
        time.sleep(0.05)
        seen.extend(r["id"] for r in batch)

    stream.add_sink("slow", slow_sink)
    run = stream.start(background=True)
    for _ in range(10):
        time.sleep(0.05)
        metrics = run.metrics()
        in_flight.append(metrics["records_read"] - metrics["records_written"])
    run.stop(30)
    assert not run.running
    assert max(in_flight) <= 2 * 10  # never more than max_in_flight batches read ahead
    assert run.metrics()["max_batches_in_flight"] <= 2
    assert seen == list(range(len(seen)))  # in order, none lost while stopping
    assert run.metrics()["records_read"] == len(seen)  # stop drained what was read


class CommittingSource:
    """A source that records what the runner commits (like Kafka offsets)."""

    def __init__(self, items: list[dict], size: int = 10) -> None:
        self.name = "committing"
        self.items = items
        self.size = size
        self.at = 0
        self.committed: list[int] = []

    def open(self) -> None:
        pass

    def read(self, max_records: int, timeout: float) -> Batch | None:
        if self.at >= len(self.items):
            return None
        chunk = self.items[self.at : self.at + self.size]
        self.at += len(chunk)
        return Batch(chunk, position=self.at)

    def commit(self, batch: Batch) -> None:
        self.committed.append(batch.position)

    def lag(self) -> int | None:
        return len(self.items) - self.at

    def close(self) -> None:
        pass


class FailsOn(StreamTask):
    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.bad = bad
        self.count = 0

    def process_batch(self, batch):
        out = []
        for r in batch:
            self.count += 1  # state changes before the failure...
            if r["id"] in self.bad:
                raise ValueError(f"record {r['id']} is malformed")
            out.append({**r, "count": self.count})
        return out


class FailsOnWithALock(FailsOn):
    """The same, holding a resource made in setup (a lock cannot be copied)."""

    def setup(self) -> None:
        self.lock = threading.Lock()

    def process_batch(self, batch):
        with self.lock:
            return super().process_batch(batch)


def test_on_error_fail_stops_and_commits_nothing_from_the_bad_batch() -> None:
    source = CommittingSource(records(100))
    out: list[dict] = []
    stream = StreamPipeline("failing", max_in_flight=1)
    stream.add_source("committing", source)
    stream.add_stage(FailsOn({35}))
    stream.add_sink("out", out.extend)
    with pytest.raises(StreamError, match=r"stage 'FailsOn' .* failed on batch 3: ValueError"):
        stream.start()
    assert source.committed == [10, 20, 30]  # batch 3 (ids 30-39) and later: not committed
    assert [r["id"] for r in out] == list(range(30))


@pytest.mark.parametrize("stage_type", [FailsOn, FailsOnWithALock])
@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
def test_bad_records_are_skipped_or_dead_lettered(policy: str, stage_type: type[FailsOn]) -> None:
    source = CommittingSource(records(50))
    out: list[dict] = []
    letters: list[dict] = []
    stream = StreamPipeline(
        "tolerant", on_error=policy, dead_letter=letters.extend if policy == "dead_letter" else None
    )
    stream.add_source("committing", source)
    stage = stage_type({3, 17, 18})
    stream.add_stage(stage)
    stream.add_sink("out", out.extend)
    metrics = stream.start()
    assert [r["id"] for r in out] == [i for i in range(50) if i not in {3, 17, 18}]
    # the stage's state counts only the records that went through: the failures left no trace
    assert [r["count"] for r in out] == list(range(1, 48))
    assert metrics["stages"][stage_type.__name__]["skipped"] == 3
    assert source.committed == [10, 20, 30, 40, 50]
    if policy == "dead_letter":
        name = stage_type.__name__
        assert [(d["record"]["id"], d["stage"]) for d in letters] == [
            (3, name), (17, name), (18, name)
        ]  # fmt: skip
        assert letters[0]["error"] == "ValueError: record 3 is malformed"
        assert metrics["dead_letters"] == 3
    else:
        assert letters == []


def test_a_sink_that_keeps_failing_stops_the_stream_without_committing(monkeypatch) -> None:
    import xlibrary.pipeline.stream.engine as engine

    monkeypatch.setattr(engine, "SINK_RETRIES", 2)
    source = CommittingSource(records(30))
    calls = {"n": 0}

    def broken(batch):
        calls["n"] += 1
        if calls["n"] > 1:
            raise ConnectionError("database went away")

    stream = StreamPipeline("sink_down", max_in_flight=1)
    stream.add_source("committing", source)
    stream.add_sink("db", broken)
    with pytest.raises(
        StreamError, match=r"writing batch 1 of stream .sink_down. failed: database went away"
    ):
        stream.start()
    assert source.committed == [10]


def test_stop_from_another_thread_drains() -> None:
    got: list[int] = []

    def endless():
        i = 0
        while True:
            yield {"id": i}
            i += 1

    stream = StreamPipeline("stoppable", batch_size=50)
    stream.add_source("endless", endless())
    stream.add_stage(DataProcessor(), parallelism=2)
    stream.add_sink("out", lambda b: got.extend(r["id"] for r in b))
    threading.Timer(0.3, stream.stop).start()
    metrics = stream.start()
    assert got == list(range(len(got))) and len(got) == metrics["records_read"] > 0
    assert not metrics["running"]


def test_files_in_and_out(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(5)))
    (inbox / "b.csv").write_text("id,value\n5,5\n6,6\n")
    stream = StreamPipeline("files", batch_size=3)
    stream.add_source("in", {"type": "file", "path": str(inbox / "*")})
    stream.add_sink("jsonl", {"type": "file", "path": str(tmp_path / "out")})
    stream.start()
    to_parquet = StreamPipeline("parquet", batch_size=3)
    to_parquet.add_source("in", {"type": "file", "path": str(inbox / "*.jsonl")})
    to_parquet.add_sink("pq", {"type": "file", "path": str(tmp_path / "pq"), "format": "parquet"})
    to_parquet.start()
    lines = [
        json.loads(line)
        for part in sorted((tmp_path / "out").glob("part-*.jsonl"))
        for line in part.read_text().splitlines()
    ]
    assert [str(r["id"]) for r in lines] == [str(i) for i in range(7)]
    import pandas as pd

    frames = [pd.read_parquet(p) for p in sorted((tmp_path / "pq").glob("part-*.parquet"))]
    assert pd.concat(frames)["id"].tolist() == list(range(5))
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_sqlite_sink_with_schema_inference_and_upsert(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'stream.db'}"
    for _ in range(2):  # the same records twice: the upsert key leaves no duplicates
        stream = StreamPipeline("to_sqlite", batch_size=4)
        stream.add_source("in", [{"id": i, "value": i * 0.5, "ok": i % 2 == 0} for i in range(10)])
        stream.add_sink("rows", {"type": "database", "connection": url, "upsert_key": "id"})
        stream.start()
    with sa.create_engine(url).connect() as connection:
        rows = connection.execute(sa.text("select id, value, ok from rows order by id")).all()
    assert [tuple(r) for r in rows] == [(i, i * 0.5, i % 2 == 0) for i in range(10)]


def test_sqlite_sink_keeps_floats_that_follow_ints_as_they_are(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'stream.db'}"
    values = [1, 2, 3, 3.7, 0.4, 2.5, 4]
    stream = StreamPipeline("widening", batch_size=3)
    stream.add_source("in", [{"id": i, "value": v} for i, v in enumerate(values)])
    stream.add_sink("rows", {"type": "database", "connection": url})
    stream.start()
    with sa.create_engine(url).connect() as connection:
        got = connection.execute(sa.text("select value from rows order by id")).scalars().all()
    assert got == values and [type(v) for v in got] == [type(v) for v in values]


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [("value", "12", "integer"), ("value", True, "integer"), ("name", 5, "text"),
     ("ok", 1, "boolean"), ("share", 2**53 + 1, "float")],
)  # fmt: skip
def test_sqlite_sink_fails_a_batch_whose_value_the_column_would_change(
    tmp_path: Path, column: str, value: object, kind: str
) -> None:
    """SQLite stores "12" in an INTEGER column as 12, True as 1, 5 in a TEXT one as "5", 1 in
    a BOOLEAN one as true, 2**53 + 1 in a REAL one rounded: the sink refuses them all."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'stream.db'}"
    good = {"id": 0, "value": 10, "name": "a", "ok": False, "share": 0.5}
    stream = StreamPipeline("typed", batch_size=2)
    stream.add_source("in", [good, {**good, "id": 1}, {**good, "id": 2}, {**good, column: value}])
    stream.add_sink("rows", {"type": "database", "connection": url})
    with pytest.raises(StreamError) as caught:
        stream.start()
    for part in (repr(column), repr(value), type(value).__name__, kind, "'rows'", "not committed"):
        assert part in str(caught.value), str(caught.value)
    with sa.create_engine(url).connect() as connection:
        assert connection.execute(sa.text("select id from rows")).scalars().all() == [0, 1]


def test_database_sink_needs_dict_records(tmp_path: Path) -> None:
    stream = StreamPipeline("bad_rows")
    stream.add_source("in", [1, 2, 3])
    stream.add_sink("rows", {"type": "database", "connection": f"sqlite:///{tmp_path}/x.db"})
    with pytest.raises(StreamError, match="records must be dicts"):
        stream.start()


def test_missing_database_driver_names_the_package(tmp_path: Path, monkeypatch) -> None:
    stream = StreamPipeline("mysql")
    stream.add_source("in", records(3))
    stream.add_sink("rows", {"type": "database", "connection": "mysql+pymysql://u@127.0.0.1/db"})
    with pytest.raises(StreamError, match=r"driver of 'mysql\+pymysql' is not installed"):
        stream.start()
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)
    postgres = StreamPipeline("postgres")
    postgres.add_source("in", records(3))
    postgres.add_sink("rows", {"type": "database", "connection": "postgresql://127.0.0.1/test"})
    with pytest.raises(MissingExtraError, match=r'pip install "xlibrary\[sql\]"'):
        postgres.start()


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda s: s.add_source("x", {"type": "kafak", "topic": "t"}), "did you mean 'kafka'"),
        (lambda s: s.add_source("x", {"type": "file", "pth": "a"}), "unknown key 'pth'"),
        (lambda s: s.add_sink("x", {"type": "databse"}), "did you mean 'database'"),
        (lambda s: s.add_stage(DataProcessor, parallelism=2), "StreamTask instance"),
        (lambda s: s.add_stage(DataProcessor(), parallelism=0), "1 or more"),
        (lambda s: s.start(), "has no source"),
    ],
)
def test_bad_declarations_say_what_to_fix(call, fragment) -> None:
    with pytest.raises(StreamError, match=fragment):
        call(StreamPipeline("bad"))


def test_parallel_stages_on_a_dask_cluster() -> None:
    from xlibrary.pipeline import PipelineManager

    with PipelineManager() as pm:
        pm.enable_monitoring(dashboard=True)  # an in-process dask.distributed cluster
        out: list[dict] = []
        stream = StreamPipeline("on_dask", batch_size=100, manager=pm)
        stream.add_source("numbers", records(1000))
        stream.add_stage(Where(), parallelism=2)
        stream.add_stage(DataProcessor(), parallelism=2)
        stream.add_stage(Aggregator(), parallelism=1)
        stream.add_sink("out", out.extend)
        stream.start()
        assert out[-1]["count"] == 1000
        assert out[-1]["average"] == pytest.approx(sum(v * 1.1 for v in range(1000)) / 1000)
        assert Where.seen and all("Dask-Default-Threads" in name for name in Where.seen)


class Where(StreamTask):
    """Notes the thread each chunk ran on (a Dask worker's threads are named Dask-...)."""

    seen: set[str] = set()

    def process_batch(self, batch):
        Where.seen.add(threading.current_thread().name)
        return batch


def test_a_first_batch_of_ints_and_floats_makes_a_float_column(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'stream.db'}"
    stream = StreamPipeline("mixed", batch_size=10)
    stream.add_source("in", [{"id": 1, "value": 1}, {"id": 2, "value": 2.5}])
    stream.add_sink("rows", {"type": "database", "connection": url})
    stream.start()
    table = sa.Table("rows", sa.MetaData(), autoload_with=sa.create_engine(url))
    assert isinstance(table.columns["value"].type, sa.Float)
    assert isinstance(table.columns["id"].type, sa.Integer)

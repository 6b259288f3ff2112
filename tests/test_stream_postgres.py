"""The database sink against the real PostgreSQL on 127.0.0.1:5432 (CI starts it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from xlibrary.pipeline import StreamPipeline, StreamTask

POSTGRES = "postgresql://127.0.0.1:5432/test"


@pytest.fixture
def table() -> Iterator[str]:
    import psycopg

    name = f"stream_{uuid.uuid4().hex[:8]}"
    try:
        psycopg.connect("host=127.0.0.1 port=5432 dbname=test", connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}")
    yield name
    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test", autocommit=True) as conn:
        conn.execute(f'drop table if exists "{name}"')


def rows(table: str, order: str = "id") -> list[tuple]:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test") as conn:
        return conn.execute(f'select * from "{table}" order by {order}').fetchall()


class Double(StreamTask):
    def process_batch(self, batch):
        return [{**r, "double": r["value"] * 2} for r in batch]


def test_rows_land_in_postgres_with_inferred_types(table: str) -> None:
    stream = StreamPipeline("to_postgres", batch_size=7)
    stream.add_source("in", [{"id": i, "value": i + 0.5, "tags": {"n": i}} for i in range(20)])
    stream.add_stage(Double(), parallelism=2)
    stream.add_sink("rows", {"type": "database", "connection": POSTGRES, "table": table})
    stream.start()
    got = rows(table)
    assert [(r[0], r[1], r[2], r[3]) for r in got] == [
        (i, i + 0.5, {"n": i}, (i + 0.5) * 2) for i in range(20)
    ]


def test_upsert_key_makes_a_replayed_batch_harmless(table: str) -> None:
    sink = {"type": "database", "connection": POSTGRES, "table": table, "upsert_key": "id"}
    for version in (1, 2):
        stream = StreamPipeline("upserts", batch_size=5)
        stream.add_source("in", [{"id": i % 8, "version": version} for i in range(12)])
        stream.add_sink("rows", sink)
        stream.start()
    assert rows(table) == [(i, 2) for i in range(8)]


def test_upsert_of_a_batch_past_the_drivers_parameter_limit(table: str) -> None:
    """8,000 rows of 10 columns: 80,000 values, past PostgreSQL's 65,535 per statement."""
    sink = {"type": "database", "connection": POSTGRES, "table": table, "upsert_key": "id"}
    stream = StreamPipeline("wide_upserts", batch_size=8000, batch_timeout=5)
    stream.add_source("in", [{"id": i, **{f"c{j}": i * j for j in range(9)}} for i in range(8000)])
    stream.add_sink("rows", sink)
    stream.start()
    got = rows(table)
    assert len(got) == 8000 and got[-1] == (7999, *[7999 * j for j in range(9)])


def test_declared_schema_and_a_missing_column(table: str) -> None:
    from xlibrary.pipeline import StreamError

    sink = {
        "type": "database",
        "connection": POSTGRES,
        "table": table,
        "schema": {"id": "integer", "name": "text"},
    }
    stream = StreamPipeline("declared")
    stream.add_source("in", [{"id": 1, "name": "a"}, {"id": 2}])
    stream.add_sink("rows", sink)
    stream.start()
    assert rows(table) == [(1, "a"), (2, None)]
    bad = StreamPipeline("undeclared")
    bad.add_source("in", [{"id": 3, "colour": "red"}])
    bad.add_sink("rows", sink)
    with pytest.raises(StreamError, match=r"columns \['colour'\] that table"):
        bad.start()

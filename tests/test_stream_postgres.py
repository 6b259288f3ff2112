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


def test_floats_after_a_batch_of_ints_widen_the_column_and_keep_their_value(table: str) -> None:
    """The first batch makes the column BIGINT; later floats turn it DOUBLE PRECISION."""
    values = [1, 2, 3, 3.7, 0.4, 2.5, 4, 2.0]
    stream = StreamPipeline("widening", batch_size=3)
    stream.add_source("in", [{"id": i, "value": v} for i, v in enumerate(values)])
    stream.add_sink("rows", {"type": "database", "connection": POSTGRES, "table": table})
    stream.start()
    assert [r[1] for r in rows(table)] == values
    assert column_type(table, "value") == "double precision"
    assert column_type(table, "id") == "bigint"


def test_a_string_in_a_numeric_column_fails_the_batch_uncommitted_naming_it(table: str) -> None:
    from xlibrary.pipeline import StreamError

    written = StreamPipeline("numbers", batch_size=2)
    written.add_source("in", [{"id": 1, "value": 10}, {"id": 2, "value": 20}])
    written.add_sink("rows", {"type": "database", "connection": POSTGRES, "table": table})
    written.start()
    stream = StreamPipeline("a_string", batch_size=2)
    stream.add_source("in", [{"id": 3, "value": 30}, {"id": 4, "value": "12"}])
    stream.add_sink("rows", {"type": "database", "connection": POSTGRES, "table": table})
    with pytest.raises(StreamError) as caught:
        stream.start()
    message = str(caught.value)
    for part in (repr(table), "'value'", "'12'", "str", "integer", "not committed"):
        assert part in message, message
    assert rows(table) == [(1, 10), (2, 20)]  # nothing of the failed batch, id 3 neither


def test_a_declared_integer_column_is_not_widened(table: str) -> None:
    from xlibrary.pipeline import StreamError

    sink = {"type": "database", "connection": POSTGRES, "table": table,
            "schema": {"id": "integer", "value": "integer"}}  # fmt: skip
    stream = StreamPipeline("declared_ints", batch_size=10)
    stream.add_source("in", [{"id": 1, "value": 1}, {"id": 2, "value": 3.7}])
    stream.add_sink("rows", sink)
    with pytest.raises(StreamError, match=r"'value' .*declared 'integer'.*3\.7 \(float\)"):
        stream.start()
    assert rows(table) == []
    assert column_type(table, "value") == "bigint"


def test_a_column_is_not_widened_when_doubles_would_round_its_integers(table: str) -> None:
    from xlibrary.pipeline import StreamError

    big = 2**53 + 1
    stream = StreamPipeline("big_ints", batch_size=2)
    records = [{"id": 1, "value": big}, {"id": 2, "value": 1}, {"id": 3, "value": 0.5}]
    stream.add_source("in", records)
    stream.add_sink("rows", {"type": "database", "connection": POSTGRES, "table": table})
    with pytest.raises(StreamError, match=rf"'value' of table '{table}' .*round its integer {big}"):
        stream.start()
    assert rows(table) == [(1, big), (2, 1)]
    assert column_type(table, "value") == "bigint"


def column_type(table: str, column: str) -> str:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test") as conn:
        found = conn.execute(
            "select data_type from information_schema.columns "
            "where table_name = %s and column_name = %s",
            (table, column),
        ).fetchone()
    assert found is not None, f"no column {column!r} in {table!r}"
    return str(found[0])

"""Streams against the real services: Kafka (Tansu) -> stages -> PostgreSQL, at-least-once
across a crash between the sink and the commit, and Redis Streams end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from examples.stream_processing import Aggregator, DataProcessor  # the guide's two stages
from tests.brokers import (  # noqa: F401 - fixtures
    KAFKA_TEST_CONSUMER,
    create_topic,
    kafka_bootstrap_fixture,
    produce,
    redis_stream_url_fixture,
)
from tests.conftest import ROOT
from xlibrary.pipeline import StreamPipeline

DSN = "host=127.0.0.1 port=5432 dbname=test"


@pytest.fixture
def table() -> Iterator[str]:
    import psycopg

    name = f"delivery_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'drop table if exists "{name}"')


def query(sql: str, dsn: str = DSN) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        try:
            return conn.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


SCRIPT = textwrap.dedent(
    """
    import os, sys
    from xlibrary.pipeline import StreamPipeline, StreamTask
    from xlibrary.pipeline.stream.database import DatabaseSink

    class Enrich(StreamTask):
        def process_batch(self, batch):
            return [{"id": r["id"], "value": r["value"], "double": r["value"] * 2} for r in batch]

    class CrashAfter(DatabaseSink):
        # writes a batch for good, then dies before the stream can commit it
        def __init__(self, after, **config):
            super().__init__("rows", {"type": "database", **config})
            self.after, self.written = after, 0

        def write(self, records):
            super().write(records)
            self.written += 1
            if self.written == self.after:
                os._exit(3)

    crash = int(os.environ.get("CRASH_AFTER", "0"))
    config = {"connection": "postgresql://127.0.0.1:5432/test", "table": os.environ["TABLE"]}
    if os.environ.get("UPSERT"):
        config["upsert_key"] = "id"
    sink = CrashAfter(crash, **config) if crash else {"type": "database", **config}
    stream = StreamPipeline("delivery", batch_size=10, batch_timeout=0.2, max_in_flight=1)
    stream.add_source("in", {"type": "kafka", "topic": os.environ["TOPIC"],
                             "bootstrap_servers": os.environ["BOOTSTRAP"],
                             "group_id": os.environ["GROUP"]})
    stream.add_stage(Enrich(), parallelism=2)
    stream.add_sink("rows", sink)  # a config, or the crashing sink itself
    print("started", flush=True)
    stream.start()
    """
)


def run_stream(env: dict[str, str], *, crash_after: int = 0) -> subprocess.Popen[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    if crash_after:
        full["CRASH_AFTER"] = str(crash_after)
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_rows(table: str, count: int, timeout: float = 60) -> list[tuple]:
    deadline = time.time() + timeout
    rows: list[tuple] = []
    while time.time() < deadline:
        rows = query(f'select id from "{table}" order by id')
        if len(rows) >= count:
            break
        time.sleep(0.1)
    return rows


def interrupt(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)  # start() drains what is in flight and returns
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the stream did not stop on SIGINT")


@pytest.mark.parametrize("upsert", [True, False])
def test_no_record_is_lost_when_the_process_dies_between_sink_and_commit(
    kafka_bootstrap: str, table: str, upsert: bool
) -> None:
    topic, n = f"delivery-{uuid.uuid4().hex[:6]}", 100
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, [{"id": i, "value": i} for i in range(n)])
    env = {"TOPIC": topic, "BOOTSTRAP": kafka_bootstrap, "GROUP": f"g-{topic}", "TABLE": table}
    if upsert:
        env["UPSERT"] = "1"

    first = run_stream(env, crash_after=3)
    assert first.wait(60) == 3, first.stderr.read() if first.stderr else ""
    written = query(f'select id from "{table}" order by id')
    assert [r[0] for r in written] == list(range(30))  # 3 batches written, none committed after

    second = run_stream(env)
    rows = wait_rows(table, n + (0 if upsert else 10))
    interrupt(second)
    ids = [r[0] for r in rows]
    assert set(ids) == set(range(n))  # nothing lost
    if upsert:
        assert ids == list(range(n))  # the replayed batch replaced its rows: no duplicates
    else:
        assert len(ids) == n + 10 and sorted(set(ids)) == list(range(n))  # batch 3 came twice
    doubles = query(f'select id, double from "{table}" where id = 42')
    assert doubles[0] == (42, 84)


def test_redis_stream_to_postgres(redis_stream_url: str, table: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_stream_url)
    for i in range(250):
        client.xadd("sensors", {"data": f'{{"id": {i}, "value": {i}}}'})
    stream = StreamPipeline("redis_to_pg", batch_size=50, batch_timeout=0.2)
    stream.add_source("in", {"type": "redis", "stream": "sensors", "url": redis_stream_url})
    stream.add_stage(DataProcessor(), parallelism=2)
    stream.add_stage(Aggregator())
    stream.add_sink(
        "rows", {"type": "database", "connection": "postgresql://127.0.0.1/test", "table": table}
    )
    run = stream.start(background=True)
    deadline = time.time() + 30
    while run.metrics()["records_read"] < 250 and time.time() < deadline:
        time.sleep(0.05)
    run.stop(30)
    assert run.error is None
    last = query(f'select average, count from "{table}" order by count desc limit 1')[0]
    assert last[1] == 250 and last[0] == pytest.approx(sum(i * 1.1 for i in range(250)) / 250)
    assert run.metrics()["consumer_lag"] == 0
    pending = client.xpending("sensors", "xlibrary-in")
    assert pending["pending"] == 0  # every entry acknowledged after the sink had it


def test_kafka_sink_round_trip(kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer

    topic = f"out-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    stream = StreamPipeline("to_kafka", batch_size=20)
    stream.add_source("in", [{"id": i, "value": i} for i in range(60)])
    stream.add_stage(DataProcessor(), parallelism=2)
    stream.add_sink("out", {"type": "kafka", "topic": topic, "bootstrap_servers": kafka_bootstrap})
    stream.start()
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{topic}",
         "auto.offset.reset": "earliest", **KAFKA_TEST_CONSUMER}
    )  # fmt: skip
    consumer.subscribe([topic])
    got: list[int] = []
    deadline = time.time() + 30
    import json

    while len(got) < 60 and time.time() < deadline:
        for message in consumer.consume(60, timeout=1):
            if not message.error():
                got.append(json.loads(message.value())["id"])
    consumer.close()
    assert got == list(range(60))

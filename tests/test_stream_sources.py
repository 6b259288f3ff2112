"""Kafka and Redis Streams sources (and the Kafka sink) against a real broker and Redis.

The contract tests run over both sources: what is put comes out in order, in bounded batches;
a batch read but not committed is read again after a restart, a committed one is not; lag
counts what is left; an idle source returns an empty batch in time.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.brokers import (
    KAFKA_TEST_CONSUMER,
    create_topic,
    kafka_bootstrap_fixture,  # noqa: F401  (the kafka_bootstrap fixture)
    produce,
    redis_stream_url_fixture,  # noqa: F401  (the redis_stream_url fixture)
)
from tests.conftest import free_port
from xlibrary.pipeline.errors import MissingExtraError
from xlibrary.pipeline.stream.base import Batch, Source, StreamError
from xlibrary.pipeline.stream.kafka import KafkaSink, KafkaSource
from xlibrary.pipeline.stream.redis_streams import RedisStreamSource

DEADLINE = 15.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Harness:
    """One source kind: ``make()`` builds a source of one group (and consumer); ``put`` adds
    records at the far end. Every source made is closed after the test."""

    kind: str
    build: Callable[[], Source]
    put: Callable[[list[Any]], None]
    opened: list[Source] = field(default_factory=list)

    def make(self) -> Source:
        source = self.build()
        source.open()
        self.opened.append(source)
        return source

    def restart(self, source: Source) -> Source:
        source.close()
        return self.make()


def first_batch(source: Source, max_records: int) -> Batch:
    """The first batch holding records (Kafka needs about a second to join the group)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        batch = source.read(max_records, 0.5)
        assert batch is not None, "Kafka and Redis sources never end"
        if batch.records:
            return batch
    pytest.fail(f"no record within {DEADLINE}s")


def read_records(source: Source, count: int, max_records: int) -> list[Batch]:
    """Batches until ``count`` records have come (and no more)."""
    batches: list[Batch] = []
    deadline = time.monotonic() + DEADLINE
    while sum(len(b.records) for b in batches) < count:
        assert time.monotonic() < deadline, f"only {batches} within {DEADLINE}s"
        batch = source.read(max_records, 0.5)
        assert batch is not None
        if batch.records:
            batches.append(batch)
    assert sum(len(b.records) for b in batches) == count
    return batches


def eventually(check: Callable[[], Any], expected: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (value := check()) != expected:
        assert time.monotonic() < deadline, f"{value!r} != {expected!r} after {within}s"
        time.sleep(0.1)


@pytest.fixture(params=["kafka", "redis"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    name = unique("src")
    if request.param == "kafka":
        bootstrap: str = request.getfixturevalue("kafka_bootstrap")
        topic = unique("topic")
        create_topic(bootstrap, topic)
        config = {"topic": topic, "bootstrap_servers": bootstrap, "consumer": KAFKA_TEST_CONSUMER}
        made = Harness(
            "kafka",
            lambda: KafkaSource(name, config),
            lambda records: produce(bootstrap, topic, records),
        )
    else:
        import redis

        url: str = request.getfixturevalue("redis_stream_url")
        client = redis.Redis.from_url(url)
        stream = unique("stream")

        def put(records: list[Any]) -> None:
            for record in records:
                client.xadd(stream, {"data": json.dumps(record)})

        made = Harness(
            "redis", lambda: RedisStreamSource(name, {"stream": stream, "url": url}), put
        )
    yield made
    for source in made.opened:
        source.close()


# --- the contract: both sources ------------------------------------------------------------


def test_reads_what_was_put_in_order_in_batches_of_at_most_max_records(harness: Harness) -> None:
    harness.put([{"i": i} for i in range(10)])
    source = harness.make()
    batches = read_records(source, 10, max_records=3)
    assert [r["i"] for b in batches for r in b.records] == list(range(10))
    assert all(1 <= len(b.records) <= 3 for b in batches)
    rest = source.read(3, 0.2)
    assert rest is not None and rest.records == []


def test_a_batch_not_committed_is_read_again_after_a_restart_and_a_committed_one_is_not(
    harness: Harness,
) -> None:
    harness.put([{"i": i} for i in range(10)])
    source = harness.make()
    assert first_batch(source, 4).records[0] == {"i": 0}  # not committed

    source = harness.restart(source)
    again = first_batch(source, 4)
    assert again.records[0] == {"i": 0}
    source.commit(again)

    source = harness.restart(source)
    rest = read_records(source, 10 - len(again.records), max_records=10)
    assert [r["i"] for b in rest for r in b.records] == list(range(len(again.records), 10))


def test_lag_counts_the_records_not_yet_read(harness: Harness) -> None:
    harness.put([{"i": i} for i in range(10)])
    source = harness.make()
    batch = first_batch(source, 4)
    eventually(source.lag, 10 - len(batch.records))
    read_records(source, 10 - len(batch.records), max_records=10)
    eventually(source.lag, 0)
    harness.put([{"i": i} for i in range(10, 13)])
    eventually(source.lag, 3)


def test_an_idle_source_returns_an_empty_batch_once_the_timeout_passes(harness: Harness) -> None:
    source = harness.make()
    started = time.monotonic()
    batch = source.read(10, 0.5)
    assert isinstance(batch, Batch) and batch.records == [] and not batch.position
    assert time.monotonic() - started < 3
    source.commit(batch)  # nothing to commit: a no-op


# --- Kafka ---------------------------------------------------------------------------------


def kafka_config(bootstrap: str, topic: str, **extra: Any) -> dict[str, Any]:
    config = {"topic": topic, "bootstrap_servers": bootstrap, "consumer": KAFKA_TEST_CONSUMER}
    return {**config, **extra}


def test_kafka_keeps_order_within_each_partition_and_positions_are_next_offsets(
    kafka_bootstrap: str,
) -> None:
    topic = unique("topic")
    create_topic(kafka_bootstrap, topic, partitions=2)
    for partition in (0, 1):
        records = [{"p": partition, "i": i} for i in range(6)]
        produce(kafka_bootstrap, topic, records, partition=partition)
    source = KafkaSource(unique("src"), kafka_config(kafka_bootstrap, topic))
    source.open()
    try:
        batches = read_records(source, 12, max_records=4)
    finally:
        source.close()
    assert all(len(b.records) <= 4 for b in batches)
    records = [r for b in batches for r in b.records]
    for partition in (0, 1):
        assert [r["i"] for r in records if r["p"] == partition] == list(range(6))
    last: dict[tuple[str, int], int] = {}
    for batch in batches:
        last.update(batch.position)
    assert last == {(topic, 0): 6, (topic, 1): 6}


def test_kafka_sink_writes_records_that_a_consumer_reads_back_with_their_key(
    kafka_bootstrap: str,
) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic = unique("topic")
    create_topic(kafka_bootstrap, topic)
    records = [{"id": "a", "v": 1}, {"id": 7, "v": [2]}, {"id": None, "v": "x"}]
    config = {"type": "kafka", "topic": topic, "bootstrap_servers": kafka_bootstrap, "key": "id"}
    sink = KafkaSink("out", config)
    sink.open()
    sink.write(records)  # returns once the broker has them: no wait below
    sink.close()

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique("check")})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    messages: list[Any] = []
    deadline = time.monotonic() + DEADLINE
    try:
        while len(messages) < len(records) and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    assert [json.loads(m.value() or b"") for m in messages] == records
    assert [m.key() for m in messages] == [b"a", b"7", None]


def test_kafka_sink_raises_when_records_are_not_delivered() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    producer = {"message.timeout.ms": 500}
    sink = KafkaSink("out", {"topic": "t", "bootstrap_servers": nowhere, "producer": producer})
    sink.open()
    try:
        with pytest.raises(StreamError, match=r"2 of 2 records were not delivered to topic 't'"):
            sink.write([{"a": 1}, {"a": 2}])
    finally:
        sink.close()


def test_kafka_sink_delivery_failures_are_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    """A broker out of reach may come back: the stream tries the batch again before it stops
    (every StreamError counted as permanent, so a Kafka delivery failure was never retried)."""
    from xlibrary.pipeline import StreamPipeline

    nowhere = f"127.0.0.1:{free_port()}"
    stream = StreamPipeline(unique("unreachable"))
    stream.add_source("in", [{"a": 1}])
    stream.add_sink(
        "out",
        {"type": "kafka", "topic": "t", "bootstrap_servers": nowhere,
         "producer": {"message.timeout.ms": 300}},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="xlibrary.pipeline.stream"):
        with pytest.raises(StreamError, match=r"1 of 1 records were not delivered to topic 't'"):
            stream.start()
    assert "attempt 3 of 3" in caplog.text


def test_kafka_sink_refuses_records_it_cannot_write_before_sending_any(
    kafka_bootstrap: str,
) -> None:
    sink = KafkaSink("out", {"topic": "t", "bootstrap_servers": kafka_bootstrap, "key": "id"})
    sink.open()
    try:
        with pytest.raises(StreamError, match=r"record 1 of the batch has no field 'id'"):
            sink.write([{"id": 1}, {"other": 2}])
        with pytest.raises(StreamError, match=r"record 0 of the batch cannot be written as JSON"):
            sink.write([{"id": 1, "when": object()}])
    finally:
        sink.close()


def test_kafka_value_that_is_not_json_stops_the_source_unless_format_is_raw(
    kafka_bootstrap: str,
) -> None:
    from confluent_kafka import Producer

    topic = unique("topic")
    create_topic(kafka_bootstrap, topic)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"not json")
    assert producer.flush(10) == 0

    source = KafkaSource(unique("src"), kafka_config(kafka_bootstrap, topic))
    source.open()
    try:
        with pytest.raises(StreamError, match=rf"offset 0 of partition 0 of topic '{topic}'"):
            first_batch(source, 10)
    finally:
        source.close()
    raw = KafkaSource(unique("src"), kafka_config(kafka_bootstrap, topic, format="raw"))
    raw.open()
    try:
        assert first_batch(raw, 10).records == [b"not json"]
    finally:
        raw.close()


def test_kafka_values_are_parsed_one_by_one(kafka_bootstrap: str) -> None:
    """Two broken values that would join into valid JSON are still broken; spaces are fine."""
    from confluent_kafka import Producer

    topic = unique("topic")
    create_topic(kafka_bootstrap, topic)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in (b' {"a": 1}\n', b"1,[2", b"3]"):
        producer.produce(topic, value)
    assert producer.flush(10) == 0
    source = KafkaSource(unique("src"), kafka_config(kafka_bootstrap, topic))
    source.open()
    try:
        with pytest.raises(StreamError, match=rf"offset 1 of partition 0 of topic '{topic}'"):
            first_batch(source, 10)
    finally:
        source.close()


def test_kafka_topic_that_does_not_exist_stops_the_source_naming_it(kafka_bootstrap: str) -> None:
    topic = unique("missing")
    source = KafkaSource(unique("src"), kafka_config(kafka_bootstrap, topic))
    source.open()
    try:
        with pytest.raises(StreamError, match=rf"topic '{topic}'.*Unknown topic or partition"):
            first_batch(source, 10)
    finally:
        source.close()


def polled_lag(source: Source) -> int | None:
    """The lag as the runner reads it: after a read (here one that finds nothing), which is
    when the consumer takes in what it learned meanwhile."""
    batch = source.read(10, 0.2)
    assert batch is not None and batch.records == [], "no record was expected here"
    return source.lag()


def test_kafka_lag_after_a_restart_counts_from_the_groups_offsets(kafka_bootstrap: str) -> None:
    """Four partitions of 5 records, all committed; 3 more in partition 0 after a restart:
    once these are read the lag is 0, partitions 1-3 (none of whose records this consumer
    returns) counted from the group's offsets, not from their start (15) or as unknown."""
    topic = unique("topic")
    create_topic(kafka_bootstrap, topic, partitions=4)
    for partition in range(4):
        produce(kafka_bootstrap, topic, [{"i": i} for i in range(5)], partition=partition)
    config = kafka_config(kafka_bootstrap, topic)
    source = KafkaSource(unique("src"), config)
    source.open()
    try:
        for batch in read_records(source, 20, max_records=20):
            source.commit(batch)
    finally:
        source.close()
    produce(kafka_bootstrap, topic, [{"i": i} for i in range(5, 8)], partition=0)
    again = KafkaSource(source.name, config)
    again.open()
    try:
        batches = read_records(again, 3, max_records=10)
        assert [r["i"] for b in batches for r in b.records] == [5, 6, 7]
        eventually(lambda: polled_lag(again), 0)
    finally:
        again.close()


def test_kafka_lag_answers_from_what_the_consumer_knows_without_waiting_for_the_broker(
    tmp_path: Any,
) -> None:
    """lag() is called on the source thread between reads: with the broker gone it answers at
    once from the consumer's own knowledge (it asked the broker, waiting up to 10 s, about
    each partition it had returned no record of)."""
    from tests.brokers import start_tansu

    topic = unique("topic")
    consumer = {**KAFKA_TEST_CONSUMER, "log_level": 0}  # no log lines about the gone broker
    with start_tansu(tmp_path / "tansu.log") as bootstrap:
        create_topic(bootstrap, topic, partitions=4)
        produce(bootstrap, topic, [{"i": i} for i in range(4)], partition=0)
        config = kafka_config(bootstrap, topic, consumer=consumer)
        source = KafkaSource(unique("src"), config)
        source.open()
        try:
            read_records(source, 4, max_records=10)
            eventually(lambda: polled_lag(source), 0)
        except BaseException:
            source.close()
            raise
    try:
        started = time.monotonic()
        assert source.lag() == 0
        assert time.monotonic() - started < 2.0, "lag() waited for the broker"
    finally:
        source.close()


def test_kafka_stream_lag_and_throughput_once_everything_is_committed(
    kafka_bootstrap: str,
) -> None:
    """20,000 records: once all are read and committed, consumer_lag is 0 within a poll or
    two (it stayed at the first value); throughput counts from the first record read to the
    last written, not the group join before it (seen from outside, the span holding it)."""
    from xlibrary.pipeline import StreamPipeline

    topic, n = unique("topic"), 20_000
    create_topic(kafka_bootstrap, topic, partitions=4)
    produce(kafka_bootstrap, topic, [{"i": i} for i in range(n)])
    stream = StreamPipeline(unique("lag"), batch_size=500, batch_timeout=0.2)
    stream.add_source("in", {"type": "kafka", **kafka_config(kafka_bootstrap, topic)})
    stream.add_sink("out", lambda records: None)
    run = stream.start(background=True)
    try:
        before_first = asked = time.time()
        deadline = time.monotonic() + 60
        while (metrics := run.metrics())["records_written"] < n or metrics["batches_in_flight"]:
            assert run.running and time.monotonic() < deadline, metrics
            if metrics["records_read"] == 0:
                before_first = asked  # no record had come when the metrics were asked for
            time.sleep(0.01)
            asked = time.time()
        all_written = time.time()
        eventually(lambda: run.metrics()["consumer_lag"], 0, within=2.0)
        throughput = run.metrics()["throughput"]
        assert throughput >= n / (all_written - before_first), (throughput, n, before_first)
    finally:
        run.stop(30)
    assert run.error is None


# --- Redis Streams -------------------------------------------------------------------------


@pytest.fixture
def redis_client(redis_stream_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_stream_url)
    yield client
    client.close()


def redis_source(url: str, stream: str, name: str = "src", **extra: Any) -> RedisStreamSource:
    source = RedisStreamSource(name, {"type": "redis", "stream": stream, "url": url, **extra})
    source.open()
    return source


def test_redis_pending_entries_come_back_after_each_restart_until_acknowledged(
    redis_stream_url: str, redis_client: Any
) -> None:
    for i in range(5):
        redis_client.xadd("s", {"data": json.dumps({"i": i})})
    source = redis_source(redis_stream_url, "s")
    first, second = read_records(source, 5, max_records=3)
    source.commit(first)
    source.close()
    for _ in range(2):  # the unacknowledged batch, again and again
        source = redis_source(redis_stream_url, "s")
        assert source.read(10, 0.2).records == second.records == [{"i": 3}, {"i": 4}]
        source.close()
    source = redis_source(redis_stream_url, "s")
    again = source.read(10, 0.2)
    source.commit(again)
    source.close()
    source = redis_source(redis_stream_url, "s")
    assert source.read(10, 0.2).records == []
    source.close()
    assert redis_client.xpending("s", "xlibrary-src")["pending"] == 0


def test_redis_consumers_of_one_group_split_the_entries(
    redis_stream_url: str, redis_client: Any
) -> None:
    for i in range(10):
        redis_client.xadd("s", {"data": json.dumps(i)})
    one = redis_source(redis_stream_url, "s", consumer="one")
    two = redis_source(redis_stream_url, "s", consumer="two")
    seen: dict[str, list[int]] = {"one": [], "two": []}
    for source in itertools.islice(itertools.cycle([one, two]), 10):
        batch = source.read(2, 0.1)
        seen[source.consumer] += batch.records
        source.commit(batch)
    one.close()
    two.close()
    assert seen["one"] and seen["two"]
    assert sorted(seen["one"] + seen["two"]) == list(range(10))
    assert not set(seen["one"]) & set(seen["two"])


def test_redis_entries_without_the_field_become_dicts_of_str(
    redis_stream_url: str, redis_client: Any
) -> None:
    redis_client.xadd("s", {"payload": json.dumps({"a": [1, 2]})})
    redis_client.xadd("s", {"sensor": "s1", "value": 3.5})
    redis_client.xadd("s", {"data": "[1]"})  # not the configured field: a plain entry
    source = redis_source(redis_stream_url, "s", field="payload")
    records = source.read(10, 0.5).records
    source.close()
    assert records == [{"a": [1, 2]}, {"sensor": "s1", "value": "3.5"}, {"data": "[1]"}]


def test_redis_entry_that_is_not_json_stops_the_source_naming_it(
    redis_stream_url: str, redis_client: Any
) -> None:
    entry_id = redis_client.xadd("s", {"data": "{oops"}).decode()
    source = redis_source(redis_stream_url, "s")
    try:
        with pytest.raises(StreamError, match=rf"field 'data' of entry {entry_id} of stream 's'"):
            source.read(10, 0.5)
    finally:
        source.close()


def test_redis_pending_entry_deleted_from_the_stream_is_acknowledged_without_a_record(
    redis_stream_url: str, redis_client: Any
) -> None:
    ids = [redis_client.xadd("s", {"data": json.dumps(i)}) for i in range(3)]
    source = redis_source(redis_stream_url, "s")
    assert source.read(10, 0.5).records == [0, 1, 2]
    source.close()
    redis_client.xdel("s", ids[1])
    source = redis_source(redis_stream_url, "s")
    batch = source.read(10, 0.5)
    assert batch.records == [0, 2]
    assert batch.position == [i.decode() for i in ids]
    source.commit(batch)
    source.close()
    assert redis_client.xpending("s", "xlibrary-src")["pending"] == 0


def test_redis_batch_of_only_deleted_entries_is_acknowledged_by_the_stream(
    redis_stream_url: str, redis_client: Any
) -> None:
    from xlibrary.pipeline import StreamPipeline

    for i in range(3):
        redis_client.xadd("s", {"data": json.dumps(i)})
    source = redis_source(redis_stream_url, "s")
    batch = source.read(10, 0.5)  # read, never acknowledged: pending
    source.close()
    redis_client.xdel("s", *[entry_id.encode() for entry_id in batch.position])
    out: list[Any] = []
    stream = StreamPipeline("deleted_pending", batch_timeout=0.1)
    stream.add_source("src", {"type": "redis", "stream": "s", "url": redis_stream_url})
    stream.add_sink("out", out.extend)
    run = stream.start(background=True)
    deadline = time.monotonic() + 30
    while redis_client.xpending("s", "xlibrary-src")["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    run.stop()
    assert redis_client.xpending("s", "xlibrary-src")["pending"] == 0
    assert out == []


# --- configuration and missing packages ----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        (KafkaSource, {"topik": "t"}, r"unknown key 'topik'; did you mean 'topic'\?"),
        (KafkaSource, {"topic": "t", "group": "g"}, r"'group'; did you mean 'group_id'\?"),
        (KafkaSource, {"format": "json"}, r"'topic' \(the Kafka topic's name\) is required"),
        (KafkaSource, {"topic": "t", "format": "xml"}, r"'format' must be 'json' or 'raw'"),
        (KafkaSource, {"topic": "t", "group_id": 5}, r"'group_id' must be str, got int 5"),
        (
            KafkaSource,
            {"topic": "t", "consumer": {"enable.auto.commit": True}},
            r"cannot turn on 'enable.auto.commit'",
        ),
        (KafkaSink, {"topic": "t", "keys": "id"}, r"unknown key 'keys'; did you mean 'key'\?"),
        (KafkaSink, {"topic": "t", "producer": "acks=1"}, r"'producer' must be dict"),
        (RedisStreamSource, {"steam": "s"}, r"unknown key 'steam'; did you mean 'stream'\?"),
        (RedisStreamSource, {"stream": "s", "feild": "x"}, r"did you mean 'field'\?"),
        (RedisStreamSource, {"url": "redis://x"}, r"'stream' \(the Redis stream's key\) is"),
    ],
)
def test_bad_config_raises_stream_error_naming_the_key(
    kind: type[Any], config: dict[str, Any], message: str
) -> None:
    with pytest.raises(StreamError, match=message):
        kind("s", config)


def test_the_runner_keys_are_accepted() -> None:
    runner_keys = {"type": "kafka", "batch_size": 10, "batch_timeout": 1.0}
    source = KafkaSource("s", {**runner_keys, "topic": "t"})
    assert source.settings["group.id"] == "xlibrary-s"
    assert source.settings["auto.offset.reset"] == "earliest"
    stream_source = RedisStreamSource("s", {**runner_keys, "type": "redis", "stream": "x"})
    assert stream_source.group == "xlibrary-s"
    assert stream_source.consumer == f"s-{socket.gethostname()}"


def test_bootstrap_servers_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XLIBRARY_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert KafkaSource("s", {"topic": "t"}).settings["bootstrap.servers"] == "localhost:9092"
    monkeypatch.setenv("XLIBRARY_KAFKA_BOOTSTRAP_SERVERS", "kafka:29092")
    assert KafkaSink("s", {"topic": "t"}).settings["bootstrap.servers"] == "kafka:29092"


@pytest.mark.parametrize(
    ("kind", "config", "module", "extra"),
    [
        (KafkaSource, {"topic": "t"}, "confluent_kafka", "kafka"),
        (KafkaSink, {"topic": "t"}, "confluent_kafka", "kafka"),
        (RedisStreamSource, {"stream": "s"}, "redis", "redis"),
    ],
)
def test_a_missing_package_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
    kind: type[Any],
    config: dict[str, Any],
    module: str,
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=rf'pip install "xlibrary\[{extra}\]"'):
        kind("s", config)

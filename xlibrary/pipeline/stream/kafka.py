"""Kafka topics as a stream source and sink, through confluent-kafka (``xlibrary[kafka]``).

What they guarantee:

* **At-least-once in**: :class:`KafkaSource` joins the consumer group ``group_id`` and never
  commits on its own (``enable.auto.commit`` is off and cannot be turned on). ``commit(batch)``
  commits exactly the batch's next offsets, one per partition, synchronously; so a batch read but
  not committed is read again by the group's next consumer after a restart or a rebalance.
* **Order within a partition**: records of one partition arrive in offset order, batch after
  batch; there is no order across partitions.
* **A new group starts at the beginning** of the topic (``auto.offset.reset=earliest``).
* **No record is dropped silently**: with ``format: "json"`` (default) a value that is not JSON
  stops the stream with a :class:`StreamError` naming its topic, partition and offset (use
  ``format: "raw"`` to get bytes instead); a null value (a tombstone) becomes ``None``.
* **Durable out**: :meth:`KafkaSink.write` returns only once the broker has acknowledged every
  record (``acks=all``, idempotent producer); if any delivery failed it raises
  :class:`StreamDeliveryError` (the stream tries the batch again, then stops without
  committing it at its source; a batch tried again may reach the topic twice).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .base import Batch, StreamDeliveryError, StreamError, import_extra, not_json
from .config import SinkConfig, SourceConfig, as_config

if TYPE_CHECKING:
    from types import ModuleType

    from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

__all__ = [
    "DEFAULT_BOOTSTRAP_SERVERS",
    "KafkaSink",
    "KafkaSinkConfig",
    "KafkaSource",
    "KafkaSourceConfig",
]

logger = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
BOOTSTRAP_ENV = "XLIBRARY_KAFKA_BOOTSTRAP_SERVERS"
_STATISTICS_MS = 1000
"""How often the consumer reports its partitions' offsets (``statistics.interval.ms``), from
which ``lag()`` learns where a partition not read yet starts, without asking the broker."""
_OFFSETS = ("hi_offset", "lo_offset", "committed_offset")
_raw_decode = json.JSONDecoder().raw_decode
_JSON_SPACE = " \t\n\r"


def _confluent_kafka() -> ModuleType:
    return import_extra(
        "confluent_kafka",
        package="confluent-kafka",
        extra="kafka",
        feature="Kafka sources and sinks",
    )


def _bootstrap(given: str | None) -> str:
    return given or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP_SERVERS


@dataclass(frozen=True)
class KafkaSourceConfig(SourceConfig):
    """Type ``kafka`` as a source: ``topic`` (required); ``bootstrap_servers`` (default
    ``$XLIBRARY_KAFKA_BOOTSTRAP_SERVERS``, else ``localhost:9092``); ``group_id`` (default
    ``xlibrary-<name>``); ``format`` (``"json"`` or ``"raw"``); ``consumer``, extra
    confluent-kafka consumer settings, applied last (``statistics.interval.ms``, 1000 here,
    is how soon ``lag()`` knows the partitions it has not read from; 0 leaves it ``None``;
    a ``stats_cb`` of yours still gets every report)."""

    topic: str = field(metadata={"doc": "the Kafka topic's name"})
    bootstrap_servers: str | None = None
    group_id: str | None = None
    format: Literal["json", "raw"] = "json"
    consumer: dict[str, Any] = field(default_factory=dict)


class KafkaSource:
    """Records from a Kafka topic, read by a consumer group; see the module docstring.

    Config: :class:`KafkaSourceConfig` (``batch_size`` and ``batch_timeout`` belong to the
    stream).

    ::

        source = KafkaSource("orders", {"topic": "orders", "bootstrap_servers": "kafka:9092"})
        source.open()
        batch = source.read(500, timeout=1.0)   # records: decoded JSON values
        ...                                     # the sinks write them durably
        source.commit(batch)                    # this group will not read them again
        source.close()
    """

    config_type = KafkaSourceConfig

    def __init__(self, name: str, config: KafkaSourceConfig | Mapping[str, Any]) -> None:
        config = as_config(KafkaSourceConfig, name, config)
        self.name = name
        self.topic = config.topic
        self.format: str = config.format
        self.settings: dict[str, Any] = {
            "bootstrap.servers": _bootstrap(config.bootstrap_servers),
            "group.id": config.group_id or f"xlibrary-{name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # a stream notices a dead consumer (and hands its partitions over) in seconds, not
            # librdkafka's 45 s; 6000 ms is the least a Kafka broker accepts by default
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            **config.consumer,
        }
        if str(self.settings["enable.auto.commit"]).lower() not in ("false", "0"):
            raise StreamError(
                f"source {name!r}: 'consumer' cannot turn on 'enable.auto.commit': offsets are "
                "committed only once the sinks hold the batch"
            )
        self._ck = _confluent_kafka()  # fail here, not at open(), when the extra is missing
        self._consumer: Consumer | None = None
        self._committed: dict[tuple[str, int], int] = {}
        self._commit_error: str | None = None
        self._partitions: dict[int, dict[str, Any]] = {}
        """The topic's partitions as the consumer's latest statistics describe them."""
        self.settings["on_commit"] = self._on_commit
        self.settings.setdefault("statistics.interval.ms", _STATISTICS_MS)
        self._user_stats_cb = self.settings.get("stats_cb")
        self.settings["stats_cb"] = self._on_statistics

    def open(self) -> None:
        ck = self._ck
        try:
            consumer = ck.Consumer(self.settings)
            consumer.subscribe([self.topic])
        except ck.KafkaException as exc:
            raise StreamError(
                f"source {self.name!r}: cannot start a Kafka consumer: {exc}"
            ) from exc
        self._consumer = consumer

    def read(self, max_records: int, timeout: float) -> Batch:
        """Up to ``max_records`` records: a full batch as soon as there is one, else what came
        within ``timeout`` seconds (the batch timeout). Never ``None``: a topic does not end."""
        consumer = self._open_consumer()
        ck = self._ck
        deadline = time.monotonic() + max(timeout, 0.0)
        messages: list[Message] = []
        try:
            while len(messages) < max_records:
                left = deadline - time.monotonic()
                if left <= 0 and messages:
                    break
                got = consumer.consume(
                    num_messages=max_records - len(messages), timeout=max(left, 0)
                )
                messages += got
                if not got and left <= 0:
                    break
        except ck.KafkaException as exc:
            raise StreamError(f"source {self.name!r}: reading topic {self.topic!r}: {exc}") from exc
        usable = [m for m in messages if m.error() is None or self._usable(m, ck)]
        position: dict[tuple[str, int], int] = {}
        for message in usable:  # in order: the last offset of each partition wins
            position[(message.topic(), message.partition())] = message.offset() + 1  # type: ignore[index,operator]
        return Batch(self._decode_all(usable), position=position)

    def _decode_all(self, messages: list[Message]) -> list[Any]:
        """The records of ``messages``: each value parsed on its own (joining them into one
        array would let two broken values pass as two good ones), by the C scanner directly;
        a value it does not take whole goes through ``_decode``, which names a bad record."""
        if self.format == "raw":
            return [message.value() for message in messages]
        out: list[Any] = []
        for message in messages:
            value = message.value()
            try:
                text = value.decode().strip(_JSON_SPACE)  # type: ignore[union-attr]
                record, end = _raw_decode(text)
                if end == len(text):
                    out.append(record)
                    continue
            except (AttributeError, UnicodeDecodeError, ValueError):
                pass
            out.append(self._decode(value, message.topic(), message.partition(), message.offset()))  # type: ignore[arg-type]
        return out

    def _usable(self, message: Message, ck: ModuleType) -> bool:
        """True for a record; False for an event to skip; raises on a real error."""
        error: KafkaError | None = message.error()
        if error is None:
            return True
        if error.code() == ck.KafkaError._PARTITION_EOF:
            return False
        if error.retriable() and not error.fatal():
            logger.warning("source %r: Kafka reports %s; retrying", self.name, error.str())
            return False
        raise StreamError(
            f"source {self.name!r}: Kafka error on topic {self.topic!r}: {error.str()} "
            f"({error.name()})"
        )

    def _decode(self, value: bytes | None, topic: str, partition: int, offset: int) -> Any:
        if self.format == "raw" or value is None:
            return value
        try:
            return json.loads(value)
        except ValueError as exc:
            what = (
                f"source {self.name!r}: the record at offset {offset} of partition {partition} "
                f"of topic {topic!r}"
            )
            raise not_json(what, exc, "use format 'raw' to read bytes") from exc

    def commit(self, batch: Batch) -> None:
        """Commit the batch's offsets, without waiting for the broker's answer.

        Commits are sent in order, each covering everything before it, and ``close()`` commits
        the last ones again and waits: a commit lost to a crash only means those records come
        again (at-least-once), never that a record is skipped. An answer that reports a failure
        is raised by the next commit or by ``close()``.
        """
        self._raise_failed_commit()
        if not batch.position:
            return
        consumer = self._open_consumer()
        ck = self._ck
        self._committed.update(batch.position)
        try:
            consumer.commit(offsets=self._offsets(batch.position), asynchronous=True)
        except ck.KafkaException as exc:
            raise StreamError(f"source {self.name!r}: committing {batch.position}: {exc}") from exc

    def _offsets(self, position: Mapping[tuple[str, int], int]) -> list[Any]:
        ck = self._ck
        return [ck.TopicPartition(t, p, offset) for (t, p), offset in position.items()]

    def _on_commit(self, error: KafkaError | None, partitions: list[Any]) -> None:
        failed = [tp for tp in partitions or [] if tp.error is not None]
        if error is not None or failed:
            self._commit_error = str(error or failed[0].error)

    def _raise_failed_commit(self) -> None:
        if self._commit_error is not None:
            error, self._commit_error = self._commit_error, None
            raise StreamError(
                f"source {self.name!r}: a commit of topic {self.topic!r} failed: {error}"
            )

    def _commit_for_good(self, consumer: Consumer) -> None:
        """Commit the last positions and wait for the broker (before leaving the group)."""
        if not self._committed:
            return
        ck = self._ck
        try:
            committed = consumer.commit(offsets=self._offsets(self._committed), asynchronous=False)
        except ck.KafkaException as exc:
            raise StreamError(f"source {self.name!r}: committing {self._committed}: {exc}") from exc
        failed = [tp for tp in committed or [] if tp.error is not None]
        if failed:
            raise StreamError(
                f"source {self.name!r}: committing partition {failed[0].partition} of "
                f"{failed[0].topic!r} failed: {failed[0].error}"
            )

    def lag(self) -> int | None:
        """Records of this consumer's partitions not yet read: high watermark - position.

        Answered from what the consumer already knows, never by asking the broker (it is
        called on the source thread, between reads): the high watermarks of its latest
        fetches, its positions, and for a partition it has returned no record of yet, where
        the group starts it (its committed offset, else the reset point), from the consumer's
        statistics (every ``statistics.interval.ms``, 1 s by default). ``None`` until then,
        and before the group has assigned partitions.
        """
        consumer = self._consumer
        if consumer is None:
            return None
        ck = self._ck
        try:
            assigned = consumer.assignment()
            if not assigned:
                return None
            lags = [self._partition_lag(consumer, tp) for tp in consumer.position(assigned)]
        except ck.KafkaException as exc:
            logger.debug("source %r: lag unknown: %s", self.name, exc)
            return None
        return None if None in lags else sum(lag for lag in lags if lag is not None)

    def _partition_lag(self, consumer: Consumer, tp: TopicPartition) -> int | None:
        low, high = consumer.get_watermark_offsets(tp, cached=True)  # no broker round trip
        known = self._partitions.get(tp.partition, {})
        high = high if high >= 0 else known.get("hi_offset", -1)
        if high < 0:
            return None
        position = tp.offset
        if position < 0 and known.get("fetch_state") == "active":  # none of it read yet
            position = known.get("committed_offset", -1)
            if position < 0:  # the group has no offset here: it starts where reset points
                reset = str(self.settings["auto.offset.reset"]).lower()
                latest = reset in ("latest", "largest", "end")
                position = high if latest else low if low >= 0 else known.get("lo_offset", -1)
        return max(0, high - position) if position >= 0 else None

    def _on_statistics(self, text: str) -> None:
        """The consumer's statistics (a JSON document, served by ``consume``): keep what
        ``lag()`` needs of this topic's partitions."""
        try:
            partitions = json.loads(text)["topics"][self.topic]["partitions"]
            self._partitions = {
                int(number): {
                    "fetch_state": partition.get("fetch_state"),
                    **{key: int(partition.get(key, -1)) for key in _OFFSETS},
                }
                for number, partition in partitions.items()
                if int(number) >= 0  # -1: librdkafka's unassigned partition
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # no partition of the topic assigned yet
        if self._user_stats_cb is not None:
            self._user_stats_cb(text)

    def close(self) -> None:
        """Commit for good what was committed, then leave the group."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                self._commit_for_good(consumer)
                self._raise_failed_commit()
            finally:
                consumer.close()

    def _open_consumer(self) -> Consumer:
        if self._consumer is None:
            raise StreamError(f"source {self.name!r}: call open() before reading or committing")
        return self._consumer


@dataclass(frozen=True)
class KafkaSinkConfig(SinkConfig):
    """Type ``kafka`` as a sink: ``topic`` (required); ``bootstrap_servers`` (as for
    :class:`KafkaSourceConfig`); ``key``, a record field whose value becomes the message key
    (so records with one key stay in one partition, in order); ``producer``, extra
    confluent-kafka producer settings, applied last (``message.timeout.ms`` bounds how long a
    write waits for an unreachable broker)."""

    topic: str = field(metadata={"doc": "the Kafka topic's name"})
    bootstrap_servers: str | None = None
    key: str | None = None
    producer: dict[str, Any] = field(default_factory=dict)


class KafkaSink:
    """Writes each record as one JSON message to a Kafka topic; see the module docstring.

    Config: :class:`KafkaSinkConfig`.

    ::

        sink = KafkaSink("alerts", {"topic": "alerts", "key": "sensor_id"})
        sink.open()
        sink.write([{"sensor_id": "s1", "level": 3}])   # returns once the broker has it
        sink.close()
    """

    config_type = KafkaSinkConfig

    def __init__(self, name: str, config: KafkaSinkConfig | Mapping[str, Any]) -> None:
        config = as_config(KafkaSinkConfig, name, config)
        self.name = name
        self.topic = config.topic
        self.key = config.key
        self.settings: dict[str, Any] = {
            "bootstrap.servers": _bootstrap(config.bootstrap_servers),
            "acks": "all",
            "enable.idempotence": True,
            **config.producer,
        }
        self._ck = _confluent_kafka()
        self._producer: Producer | None = None

    def open(self) -> None:
        ck = self._ck
        try:
            self._producer = ck.Producer(self.settings)
        except ck.KafkaException as exc:
            raise StreamError(f"sink {self.name!r}: cannot start a Kafka producer: {exc}") from exc

    def write(self, records: list[Any]) -> None:
        """Produce every record, then wait until the broker has acknowledged all of them."""
        if self._producer is None:
            raise StreamError(f"sink {self.name!r}: call open() before writing")
        producer = self._producer
        ck = self._ck
        messages = [(self._key_of(r, i), self._encode(r, i)) for i, r in enumerate(records)]
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error)

        try:
            for key, value in messages:
                self._produce(producer, key, value, delivered)
            unsent = producer.flush()
        except ck.KafkaException as exc:
            raise StreamError(f"sink {self.name!r}: producing to {self.topic!r}: {exc}") from exc
        if failures or unsent:
            cause = failures[0].str() if failures else "flush gave up"
            # a broker out of reach, a timeout: worth trying again; a fatal producer error is not
            error = StreamError if any(f.fatal() for f in failures) else StreamDeliveryError
            raise error(
                f"sink {self.name!r}: {len(failures) + unsent} of {len(records)} records were "
                f"not delivered to topic {self.topic!r}: {cause}"
            )

    def _produce(
        self, producer: Producer, key: bytes | None, value: bytes, on_delivery: Any
    ) -> None:
        while True:
            try:
                producer.produce(self.topic, value, key, on_delivery=on_delivery)
                return
            except BufferError:  # the local queue is full: serve deliveries to drain it
                producer.poll(0.1)

    def _key_of(self, record: Any, index: int) -> bytes | None:
        if self.key is None:
            return None
        if not isinstance(record, Mapping) or self.key not in record:
            raise StreamError(
                f"sink {self.name!r}: record {index} of the batch has no field {self.key!r} "
                f"(the sink's 'key'): {record!r:.200}"
            )
        value = record[self.key]
        if value is None or isinstance(value, bytes):
            return value
        return (value if isinstance(value, str) else json.dumps(value)).encode()

    def _encode(self, record: Any, index: int) -> bytes:
        try:
            return json.dumps(record, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise StreamError(
                f"sink {self.name!r}: record {index} of the batch cannot be written as JSON: {exc}"
            ) from exc

    def close(self) -> None:
        """Deliver what is still queued, then let the producer go."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush()

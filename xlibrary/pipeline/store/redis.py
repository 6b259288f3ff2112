"""Cache entries in Redis (``cache_type: "redis"``): shared by processes and machines.

Each entry is one hash, ``xlibrary:cache:<key>`` with fields ``h`` (header) and ``p``
(payload), written with its expiry in one MULTI/EXEC transaction, so a reader sees the whole
entry or none, and Redis drops it when its TTL ends.

Every operation waits at most ``timeout`` seconds for the server (to connect, and between
bytes of an answer) and is not retried: a hung server costs one short wait per operation, and
the :class:`~.cache.Cache` over it stops asking after a few failures in a row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import missing_extra
from ..redact import redact_url
from .breaker import DEFAULT_TIMEOUT

__all__ = ["DEFAULT_REDIS_URL", "RedisCacheBackend"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PREFIX = "xlibrary:cache:"
NOTE_PREFIX = "xlibrary:cache-note:"


class RedisCacheBackend:
    """Keeps cache entries in Redis; connects on first use."""

    @classmethod
    def open(
        cls, url: str, storage_options: Mapping[str, Any], timeout: float
    ) -> RedisCacheBackend:
        """The cache in Redis at ``url``, each operation waiting at most ``timeout`` seconds."""
        return cls(url, timeout=timeout)

    def __init__(self, url: str = DEFAULT_REDIS_URL, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._client: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_backend, (self.url, self.timeout))

    def __repr__(self) -> str:
        return f"RedisCacheBackend({redact_url(self.url)!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry
            except ImportError as exc:
                raise missing_extra("redis", "redis", 'cache_type "redis"') from exc
            self._client = redis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # a failure is counted by the cache, not hidden
            )
        return self._client

    def read_header(self, key: str) -> bytes | None:
        value: bytes | None = self.client.hget(PREFIX + key, "h")
        return value

    def read(self, key: str) -> tuple[bytes, bytes] | None:
        header, payload = self.client.hmget(PREFIX + key, ["h", "p"])
        if header is None or payload is None:
            return None
        return header, payload

    def write(self, key: str, header: bytes, payload: bytes, ttl: float | None) -> None:
        name = PREFIX + key
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(name)
            pipe.hset(name, mapping={"h": header, "p": payload})
            if ttl is not None:
                pipe.pexpire(name, max(1, math.ceil(ttl * 1000)))
            pipe.execute()

    def delete(self, key: str) -> bool:
        return bool(self.client.delete(PREFIX + key))

    def keys(self) -> Iterator[str]:
        for name in self.client.scan_iter(match=PREFIX + "*", count=500):
            yield name.decode()[len(PREFIX) :]

    def write_note(self, name: str, data: bytes) -> None:
        self.client.set(NOTE_PREFIX + name, data)

    def read_note(self, name: str) -> bytes | None:
        value: bytes | None = self.client.get(NOTE_PREFIX + name)
        return value


def _backend(url: str, timeout: float) -> RedisCacheBackend:
    return RedisCacheBackend(url, timeout=timeout)

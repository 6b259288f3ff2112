"""Stream source and sink types by name, and what ``add_source``/``add_sink`` accept.

``sources`` and ``sinks`` are :class:`~xlibrary.pipeline.registry.Registry` objects: a
config dict's ``type`` names a class in them. The built-in types are registered by path, so
their optional dependencies are imported only when a stream uses them; a type of yours is
registered the same way, by class or by path, and is then usable from a config dict::

    from xlibrary.pipeline.stream import sources

    sources.register("mqtt", MqttSource)                              # the class itself
    sources.register("mqtt", "my_package.mqtt:MqttSource", extra="mqtt", clobber=True)
    stream.add_source("readings", {"type": "mqtt", "topic": "sensors"})

A registered class is called as ``cls(name, config)``. With a ``config_type`` (a
:class:`~.config.SourceConfig` or :class:`~.config.SinkConfig` dataclass) ``config`` is the dict
read into it, once, when the stream is declared; without one it is the dict itself (read-only).
It is constructed once then, to check it, and again for every run: connect in ``open()``, not
in ``__init__``. Besides a dict, ``add_source`` takes a :class:`~.base.Source` or an iterable
of records, and ``add_sink`` a :class:`~.base.Sink` or a callable taking a list of records.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import Registry
from .base import Sink, Source, StreamError
from .config import SourceOptions, StreamConfig
from .inprocess import CallableSink, CallableSinkConfig, IterableSource, IterableSourceConfig

__all__ = ["SinkSpec", "SourceSpec", "sink_spec", "sinks", "source_spec", "sources"]

sources: Registry[Source] = Registry("stream source", error=StreamError)
"""Source types by name: a config dict's ``type``."""
sinks: Registry[Sink] = Registry("stream sink", error=StreamError)
"""Sink types by name: a config dict's ``type``."""

_HERE = "xlibrary.pipeline.stream"
sources.register("file", f"{_HERE}.files:FileSource")
sources.register("iterable", f"{_HERE}.inprocess:IterableSource")
sources.register("kafka", f"{_HERE}.kafka:KafkaSource", extra="kafka", package="confluent-kafka")
sources.register(
    "redis", f"{_HERE}.redis_streams:RedisStreamSource", extra="redis", package="redis"
)
sinks.register("callable", f"{_HERE}.inprocess:CallableSink")
sinks.register("database", f"{_HERE}.database:DatabaseSink", extra="sql", package="sqlalchemy")
sinks.register("file", f"{_HERE}.files:FileSink")
sinks.register("kafka", f"{_HERE}.kafka:KafkaSink", extra="kafka", package="confluent-kafka")


@dataclass(frozen=True)
class SourceSpec:
    """A source as ``add_source`` was given it, checked: ``make()`` builds it for a run."""

    name: str
    make: Callable[[], Source]
    options: SourceOptions


@dataclass(frozen=True)
class SinkSpec:
    """A sink as ``add_sink`` was given it, checked: ``make()`` builds it for a run."""

    name: str
    make: Callable[[], Sink]


def source_spec(name: str, given: Any) -> SourceSpec:
    """What ``add_source(name, given)`` describes: a config dict, a Source, or an iterable."""
    options = SourceOptions()
    make: Callable[[], Source]
    if isinstance(given, Source):
        make = functools.partial(_same, given)
    elif isinstance(given, Mapping):
        kind = _registered(sources, "source", name, given)
        options = SourceOptions.from_mapping(name, given)
        make = functools.partial(kind, name, _read(kind, name, given))
    elif isinstance(given, Iterable) and not isinstance(given, str | bytes):
        make = functools.partial(IterableSource, name, IterableSourceConfig(records=given))
    else:
        raise StreamError(
            f"source {name!r} must be a config dict with a 'type' ({', '.join(sources)}), a "
            f"Source, or an iterable of records, got {type(given).__name__}"
            f"{_lacks(given, 'Source')}"
        )
    make()  # checks it now (a missing extra, settings that cannot work); connects at start
    return SourceSpec(name, make, options)


def sink_spec(name: str, given: Any) -> SinkSpec:
    """What ``add_sink(name, given)`` describes: a config dict, a Sink, or a callable."""
    make: Callable[[], Sink]
    if isinstance(given, Sink):
        make = functools.partial(_same, given)
    elif isinstance(given, Mapping):
        kind = _registered(sinks, "sink", name, given)
        make = functools.partial(kind, name, _read(kind, name, given))
    elif callable(given):
        make = functools.partial(CallableSink, name, CallableSinkConfig(function=given))
    else:
        raise StreamError(
            f"sink {name!r} must be a config dict with a 'type' ({', '.join(sinks)}), a Sink, "
            f"or a callable taking a list of records, got {type(given).__name__}"
            f"{_lacks(given, 'Sink')}"
        )
    make()
    return SinkSpec(name, make)


_MEMBERS = {
    "Source": ("name", "open", "read", "commit", "lag", "close"),
    "Sink": ("name", "open", "write", "close"),
}


def _lacks(given: Any, protocol: str) -> str:
    """For an object that is nearly a Source (or Sink): the members it lacks, else ""."""
    members = _MEMBERS[protocol]
    missing = [m for m in members if not hasattr(given, m)]
    if not missing or len(missing) > len(members) // 2:  # not trying to be one
        return ""
    return f" (a {protocol} needs {', '.join(missing)} too)"


def _same(part: Any) -> Any:
    return part


def _registered(
    registry: Registry[Any], role: str, name: str, config: Mapping[str, Any]
) -> Callable[..., Any]:
    kind = config.get("type")
    if not isinstance(kind, str):
        raise StreamError(
            f"{role} {name!r} needs a 'type': one of {', '.join(registry)}, got {kind!r}"
        )
    try:
        return registry.get(kind)
    except StreamError as exc:
        raise StreamError(f"{role} {name!r}: {exc}") from None


def _read(kind: Callable[..., Any], name: str, config: Mapping[str, Any]) -> Any:
    """``config`` read into the type's ``config_type`` (once, here), or as a read-only dict."""
    config_type = getattr(kind, "config_type", None)
    if config_type is None:
        return types.MappingProxyType(dict(config))
    if not (isinstance(config_type, type) and issubclass(config_type, StreamConfig)):
        raise StreamError(
            f"{getattr(kind, '__name__', kind)}.config_type must be a SourceConfig or "
            f"SinkConfig dataclass, got {config_type!r}"
        )
    return config_type.from_mapping(name, config)

"""Source and sink configs: a dict checked once, when the stream is declared, into a value object.

A source or sink type lists its keys as a frozen dataclass (a :class:`SourceConfig` or
:class:`SinkConfig`) and names it in its ``config_type``. ``add_source``/``add_sink`` read the
dict into it there and then: an unknown key raises :class:`StreamError` with the closest valid
one, a value of the wrong type names the key and the type expected, a missing required key
says what it is. The running stream reads only the value object::

    @dataclass(frozen=True)
    class MqttConfig(SourceConfig):
        topic: str = field(metadata={"doc": "the MQTT topic"})   # no default: required
        qos: Literal[0, 1, 2] = 1

    class MqttSource:
        config_type = MqttConfig

        def __init__(self, name: str, config: MqttConfig) -> None: ...

Types understood: ``str``, ``int``, ``float`` (an int is taken), ``bool``, ``Literal[...]``,
``dict[str, ...]`` (copied: changing the dict later changes nothing), ``tuple[X, ...]`` (a
list, or one ``X``), ``list[...]``, ``Iterable[...]``, ``Callable[...]``, ``Any``, a class,
and ``X | None``. A field marked ``metadata={"secret": True}`` (and every ``dict`` field,
where credentials live) never shows its value in a message.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

from ..errors import StreamError, did_you_mean

__all__ = [
    "SinkConfig",
    "SourceConfig",
    "SourceOptions",
    "StreamConfig",
    "as_config",
    "read_config",
]

C = TypeVar("C")
S = TypeVar("S", bound="StreamConfig")


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """Base of a source's or sink's config: ``from_mapping`` reads a dict into it."""

    role: ClassVar[str] = "stream part"
    stream_keys: ClassVar[tuple[str, ...]] = ("type",)
    """Keys of the dict that belong to the stream: accepted, not fields here."""

    @classmethod
    def from_mapping(cls, name: str, config: Mapping[str, Any]) -> typing.Self:
        """``config`` checked into this type, for the source or sink ``name``."""
        return read_config(cls, config, f"{cls.role} {name!r}", passed=cls.stream_keys)


@dataclasses.dataclass(frozen=True)
class SourceConfig(StreamConfig):
    """Base of a source type's config. ``type``, ``batch_size`` and ``batch_timeout`` belong
    to the stream (:class:`SourceOptions`): accepted in the dict, not fields here."""

    role: ClassVar[str] = "source"
    stream_keys: ClassVar[tuple[str, ...]] = ("type", "batch_size", "batch_timeout")


@dataclasses.dataclass(frozen=True)
class SinkConfig(StreamConfig):
    """Base of a sink type's config (``type`` belongs to the stream)."""

    role: ClassVar[str] = "sink"


def as_config(kind: type[S], name: str, config: S | Mapping[str, Any]) -> S:
    """``config`` as it is when it is a ``kind`` already, else a dict read into one: what a
    source's or sink's constructor does with what it was given."""
    if isinstance(config, kind):
        return config
    if isinstance(config, Mapping):
        return kind.from_mapping(name, config)
    raise StreamError(
        f"{kind.role} {name!r}: the config must be a dict or a {kind.__name__}, got "
        f"{type(config).__name__}"
    )


@dataclasses.dataclass(frozen=True)
class SourceOptions:
    """The keys of a source's config that shape its micro-batches (the stream's, not the
    source's): ``None`` leaves the stream's own setting (``StreamPipeline(batch_size=...)``)."""

    batch_size: int | None = None
    batch_timeout: float | None = None

    @classmethod
    def from_mapping(cls, name: str, config: Mapping[str, Any]) -> SourceOptions:
        mine = {key: config[key] for key in ("batch_size", "batch_timeout") if key in config}
        options = read_config(cls, mine, f"source {name!r}")
        if options.batch_size is not None and options.batch_size < 1:
            raise StreamError(f"source {name!r}: 'batch_size' must be 1 or more")
        if options.batch_timeout is not None and options.batch_timeout <= 0:
            raise StreamError(f"source {name!r}: 'batch_timeout' must be more than 0 seconds")
        return options


@dataclasses.dataclass(frozen=True)
class _Field:
    hint: Any
    required: bool
    doc: str
    secret: bool


@functools.cache
def _fields(kind: type) -> dict[str, _Field]:
    hints = typing.get_type_hints(kind)
    return {
        f.name: _Field(
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            str(f.metadata.get("doc", "")),
            bool(f.metadata.get("secret")) or typing.get_origin(hints[f.name]) is dict,
        )
        for f in dataclasses.fields(kind)
        if f.init
    }


def read_config(
    kind: type[C], config: Mapping[str, Any], where: str, *, passed: Iterable[str] = ()
) -> C:
    """``config`` checked against the fields of the dataclass ``kind``; keys in ``passed``
    are accepted and left out (they belong to someone else). ``where`` starts each message."""
    if not isinstance(config, Mapping):
        raise StreamError(f"{where}: the config must be a dict, got {type(config).__name__}")
    fields, passed = _fields(kind), tuple(passed)  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in config.items():
        field = fields.get(key)
        if field is None:
            if key in passed:
                continue
            valid = sorted([*fields, *passed])
            raise StreamError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), valid)} "
                f"(valid keys: {', '.join(valid)})"
            )
        if field.required and (value is None or (isinstance(value, str) and not value)):
            continue  # reported as missing below
        try:
            values[key] = _check(value, field.hint)
        except _Mismatch:
            shown = "" if field.secret else f" {value!r:.80}"
            hint = did_you_mean(value, _choices(field.hint)) if isinstance(value, str) else ""
            raise StreamError(
                f"{where}: {key!r} must be {_describe(field.hint)}, got "
                f"{type(value).__name__}{shown}{hint}"
            ) from None
    for key, field in fields.items():
        if field.required and key not in values:
            doc = f" ({field.doc})" if field.doc else ""
            raise StreamError(f"{where}: {key!r}{doc} is required")
    return kind(**values)


class _Mismatch(Exception):
    pass


def _check(value: Any, hint: Any) -> Any:
    """``value`` as the field of type ``hint`` keeps it; raises _Mismatch."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is not type(None):
                try:
                    return _check(value, option)
                except _Mismatch:
                    continue
        raise _Mismatch
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise _Mismatch
    if origin is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise _Mismatch
    if origin is tuple:
        item = args[0]
        if isinstance(value, list | tuple):
            return tuple(_check(v, item) for v in value)
        return (_check(value, item),)  # one item stands for a list of one
    if origin is list:
        if isinstance(value, list):
            return value
        raise _Mismatch
    if origin is collections.abc.Iterable:
        if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
            return value
        raise _Mismatch
    if origin is collections.abc.Callable:
        if callable(value):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is int and isinstance(value, bool):
        raise _Mismatch
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _Mismatch


def _choices(hint: Any) -> list[str]:
    """The str values a ``Literal`` in ``hint`` allows (for a did-you-mean)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return [a for a in args if isinstance(a, str)]
    if origin is typing.Union or origin is types.UnionType:
        return [choice for a in args for choice in _choices(a)]
    return []


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is Literal:
        choices = [repr(a) for a in args]
        return " or ".join(choices) if len(choices) < 3 else "one of " + ", ".join(choices)
    if origin is tuple:
        item = _describe(args[0])
        return f"{item} or list of {item}"
    if origin is dict:
        return "dict (with str keys)"
    if origin is collections.abc.Iterable:
        return "an iterable (not a str or dict)"
    if origin is collections.abc.Callable:
        return "callable"
    if origin is not None:
        return str(getattr(origin, "__name__", origin))
    return str(getattr(hint, "__name__", hint))

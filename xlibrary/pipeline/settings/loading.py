"""Reading a config dict into :class:`~.sections.Settings`: keys checked (did-you-mean for a
misspelt one), values converted to their declared types, the environment's defaults filled
in, then every section's ranges checked (:mod:`.checks`)."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from ..errors import ConfigError, did_you_mean
from .checks import check_ranges
from .sections import INFINITE_MEANS_NONE, Settings

__all__ = ["SCHEDULER_ADDRESS_ENV", "SECRET_ENV", "STORE_ENV", "load_settings"]

SCHEDULER_ADDRESS_ENV = "XLIBRARY_SCHEDULER_ADDRESS"
STORE_ENV = "XLIBRARY_STORE"
SECRET_ENV = "XLIBRARY_CACHE_SECRET"


def load_settings(config: Mapping[str, Any] | Settings | None = None) -> Settings:
    """Check ``config`` against the guide's keys and return typed settings.

    >>> load_settings({"fault_tolerance": {"max_retries": 3}}).fault_tolerance.max_retries
    3
    """
    if isinstance(config, Settings):
        return config
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"config must be a dict of settings, got {type(config).__name__}; "
            'for example PipelineManager({"distributed_mode": True})'
        )
    values = dict(config)
    if "scheduler_address" not in values and os.environ.get(SCHEDULER_ADDRESS_ENV):
        values["scheduler_address"] = os.environ[SCHEDULER_ADDRESS_ENV]
    values = _from_env(values, "store", "url", STORE_ENV)
    values = _from_env(values, "caching", "secret", SECRET_ENV)
    return _build(Settings, values, "")


def _from_env(values: dict[str, Any], section: str, key: str, env: str) -> dict[str, Any]:
    """Fill ``section.key`` from the environment variable ``env`` when the config does not."""
    found = os.environ.get(env)
    current = values.get(section)
    if not found or (isinstance(current, Mapping) and current.get(key) is not None):
        return values
    if current is not None and not isinstance(current, Mapping):
        return values  # the type error is reported by _build
    return {**values, section: {**(current or {}), key: found}}


_T = typing.TypeVar("_T")


def _build(cls: type[_T], values: Mapping[str, Any], prefix: str) -> _T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(_unknown_key_message(dotted, str(key), list(fields), prefix))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key {dotted!r} must be a dict of settings, got "
                    f"{type(value).__name__} {value!r}"
                )
            kwargs[key] = _build(hint, value, f"{dotted}.")  # type: ignore[arg-type]
            continue
        if dotted in INFINITE_MEANS_NONE and _is_plus_infinity(value):
            value = None
        kwargs[key] = _checked(dotted, _convert(dotted, value, hint), hint)
    settings = cls(**kwargs)
    check_ranges(settings, prefix)
    return settings


def _is_plus_infinity(value: Any) -> bool:
    return isinstance(value, float) and math.isinf(value) and value > 0


def _checked(dotted: str, value: Any, hint: Any) -> Any:
    """The general rules: numbers are finite, strings are not empty."""
    optional = type(None) in typing.get_args(hint)
    if isinstance(value, float) and not math.isfinite(value):
        none = " (or null)" if optional else ""
        raise ConfigError(f"config key {dotted!r} must be a finite number{none}, got {value}")
    if isinstance(value, str) and not value.strip():
        raise ConfigError(
            f"config key {dotted!r} must not be empty; give a value, or leave the key out for "
            "its default"
        )
    return value


def _unknown_key_message(dotted: str, key: str, valid: list[str], prefix: str) -> str:
    where = f"section {prefix[:-1]!r}" if prefix else "the config"
    hint = did_you_mean(key, valid).replace("mean '", f"mean '{prefix}", 1)
    return (
        f"unknown config key {dotted!r}{hint} (valid keys of {where}: {', '.join(sorted(valid))})"
    )


def _convert(dotted: str, value: Any, hint: Any) -> Any:
    """Return ``value`` checked against the type ``hint``, or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(dotted, value, option)
            except ConfigError:
                continue
        raise ConfigError(_type_message(dotted, value, hint))
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"config key {dotted!r} must be one of {', '.join(map(repr, choices))}, "
                f"got {value!r}{did_you_mean(str(value), map(str, choices))}"
            )
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(_type_message(dotted, value, hint))
        return dict(value)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(_type_message(dotted, value, hint))
        return tuple(_convert(f"{dotted}[{i}]", item, item_type) for i, item in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str and isinstance(value, str):
        return value
    raise ConfigError(_type_message(dotted, value, hint))


def _type_message(dotted: str, value: Any, hint: Any) -> str:
    expected = _describe(hint)
    return f"config key {dotted!r} must be {expected}, got {type(value).__name__} {value!r}"


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin is dict:
        return "a dict"
    if hint is type(None):
        return "null (None)"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))

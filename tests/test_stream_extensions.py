"""Stream extension points: source and sink types registered by name (by class or by path),
instances taken directly, and configs parsed once into typed value objects."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xlibrary.pipeline import MissingExtraError, StreamError, StreamPipeline
from xlibrary.pipeline.stream import Batch, SinkConfig, SourceConfig, sinks, sources


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class CountingConfig(SourceConfig):
    count: int
    start: int = 0


class CountingSource:
    """``count`` records from ``start``: a custom source type with a typed config."""

    config_type = CountingConfig

    def __init__(self, name: str, config: CountingConfig) -> None:
        assert isinstance(config, CountingConfig), config  # parsed once, at add_source
        self.name = name
        self.records: Iterator[int] = iter(range(config.start, config.start + config.count))

    def open(self) -> None:
        pass

    def read(self, max_records: int, timeout: float) -> Batch | None:
        chunk = [{"i": i} for _, i in zip(range(max_records), self.records, strict=False)]
        return Batch(chunk) if chunk else None

    def commit(self, batch: Batch) -> None:
        pass

    def lag(self) -> int | None:
        return None

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ListConfig(SinkConfig):
    into: list[Any]


class ListSink:
    """Appends every record to a list: a custom sink type with a typed config."""

    config_type = ListConfig

    def __init__(self, name: str, config: ListConfig) -> None:
        self.name = name
        self.into = config.into

    def open(self) -> None:
        pass

    def write(self, records: list[Any]) -> None:
        self.into.extend(records)

    def close(self) -> None:
        pass


class PlainSink:
    """A sink type without a config type: it is given the config as a dict."""

    collected: list[Any] = []

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.prefix = config["prefix"]

    def open(self) -> None:
        pass

    def write(self, records: list[Any]) -> None:
        PlainSink.collected.extend(f"{self.prefix}{r['i']}" for r in records)

    def close(self) -> None:
        pass


class HalfSource:
    """Nearly a source: no lag(), no close()."""

    name = "half"

    def open(self) -> None:
        pass

    def read(self, max_records: int, timeout: float) -> Batch | None:
        return None

    def commit(self, batch: Batch) -> None:
        pass


def test_a_source_and_a_sink_registered_by_class_are_used_from_a_config_dict() -> None:
    source_type, sink_type = unique("counting"), unique("listing")
    sources.register(source_type, CountingSource)
    sinks.register(sink_type, ListSink)
    out: list[Any] = []
    stream = StreamPipeline("custom", batch_size=4)
    stream.add_source("numbers", {"type": source_type, "count": 10, "start": 5})
    stream.add_sink("out", {"type": sink_type, "into": out})
    metrics = stream.start()
    assert [r["i"] for r in out] == list(range(5, 15))
    assert metrics["records_written"] == 10
    with pytest.raises(StreamError, match=r"source 'x': unknown key 'cuont'; did you mean 'count'"):
        StreamPipeline("bad").add_source("x", {"type": source_type, "cuont": 3})
    with pytest.raises(StreamError, match=r"source 'x': 'count' must be int, got str '3'"):
        StreamPipeline("bad").add_source("x", {"type": source_type, "count": "3"})
    with pytest.raises(StreamError, match=r"sink 'x': 'into' is required"):
        StreamPipeline("bad").add_sink("x", {"type": sink_type})


def test_a_source_and_a_sink_registered_by_path_are_imported_on_first_use() -> None:
    source_type, sink_type = unique("counting"), unique("plain")
    sources.register(source_type, f"{__name__}:CountingSource")
    sinks.register(sink_type, f"{__name__}:PlainSink")
    PlainSink.collected = []
    stream = StreamPipeline("by_path", batch_size=2)
    stream.add_source("numbers", {"type": source_type, "count": 3, "batch_size": 2})
    stream.add_sink("out", {"type": sink_type, "prefix": "n"})
    stream.start()
    assert PlainSink.collected == ["n0", "n1", "n2"]
    assert source_type in sources.names() and sink_type in sinks


def test_an_unknown_type_says_the_closest_and_the_known_ones() -> None:
    with pytest.raises(
        StreamError,
        match=r"source 'x': unknown stream source type 'kafak'; did you mean 'kafka'\? "
        r"\(known: .*file, iterable, kafka, redis",
    ):
        StreamPipeline("bad").add_source("x", {"type": "kafak", "topic": "t"})
    with pytest.raises(
        StreamError,
        match=r"sink 'x': unknown stream sink type 'databse'; did you mean 'database'\? "
        r"\(known: callable, database, file, kafka",
    ):
        StreamPipeline("bad").add_sink("x", {"type": "databse"})
    with pytest.raises(StreamError, match=r"source 'x' needs a 'type': one of .*kafka, redis"):
        StreamPipeline("bad").add_source("x", {"topic": "t"})


def test_a_type_registered_by_path_whose_module_is_missing_names_the_extra() -> None:
    source_type, sink_type = unique("mqtt"), unique("mqtt")
    sources.register(source_type, "xlibrary_no_such_mqtt.source:MqttSource", extra="mqtt")
    sinks.register(sink_type, "xlibrary_no_such_mqtt.sink:MqttSink", extra="mqtt")
    with pytest.raises(MissingExtraError, match=r'pip install "xlibrary\[mqtt\]"'):
        StreamPipeline("missing").add_source("in", {"type": source_type, "topic": "t"})
    with pytest.raises(MissingExtraError, match=r'pip install "xlibrary\[mqtt\]"'):
        StreamPipeline("missing").add_sink("out", {"type": sink_type, "topic": "t"})


def test_the_built_in_types_are_registered_by_path_with_their_extras() -> None:
    assert {"kafka", "redis", "file", "iterable"} <= set(sources.names())
    assert {"database", "kafka", "file", "callable"} <= set(sinks.names())


def test_add_source_and_add_sink_take_instances() -> None:
    source = CountingSource("counted", CountingConfig(count=7))
    out: list[Any] = []
    sink = ListSink("listed", ListConfig(into=out))
    stream = StreamPipeline("instances", batch_size=3)
    stream.add_source("numbers", source)
    stream.add_sink("out", sink)
    stream.start()
    assert [r["i"] for r in out] == list(range(7))


def test_a_config_is_parsed_once_when_added(tmp_path: Path) -> None:
    """What add_source/add_sink were given is checked and kept as a value object: changing
    the dict afterwards changes nothing."""
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    source = {"type": "file", "path": str(tmp_path / "in.jsonl")}
    sink = {"type": "file", "path": str(tmp_path / "out")}
    stream = StreamPipeline("once")
    stream.add_source("in", source)
    stream.add_sink("out", sink)
    source["path"] = str(tmp_path / "nothing-here-*.jsonl")
    sink["format"] = "xml"
    stream.start()
    assert [p.read_text() for p in (tmp_path / "out").glob("part-*.jsonl")] == [
        '{"id": 1}\n{"id": 2}\n'
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda s: s.add_source("x", {"type": "iterable", "records": [], "batch_size": "10"}),
            r"source 'x': 'batch_size' must be int, got str '10'",
        ),
        (
            lambda s: s.add_source("x", {"type": "file", "path": ["a", "b"]}),
            r"source 'x': 'path' must be str, got list \['a', 'b'\]",
        ),
        (
            lambda s: s.add_source("x", {"type": "file", "path": "a", "batch_timout": 1}),
            r"unknown key 'batch_timout'; did you mean 'batch_timeout'\?",
        ),
        (
            lambda s: s.add_sink("x", {"type": "file", "path": "a", "format": "jsnl"}),
            r"sink 'x': 'format' must be 'jsonl' or 'parquet', got str 'jsnl'; did you mean "
            r"'jsonl'",
        ),
        (
            lambda s: s.add_sink("x", {"type": "database", "connection": "sqlite://",
                                       "upsert_key": 5}),
            r"sink 'x': 'upsert_key' must be str or list of str, got int 5",
        ),
        (
            lambda s: s.add_sink("x", {"type": "database", "connection": "sqlite://",
                                       "tabel": "t"}),
            r"sink 'x': unknown key 'tabel'; did you mean 'table'\?",
        ),
        (
            lambda s: s.add_sink("x", {"type": "callable", "function": "print"}),
            r"sink 'x': 'function' must be callable, got str 'print'",
        ),
        (
            lambda s: s.add_source("x", HalfSource()),
            r"source 'x' must be .*, got HalfSource \(a Source needs lag, close too\)",
        ),
        (
            lambda s: s.add_sink("x", 42),
            r"sink 'x' must be a config dict with a 'type' .*, got int",
        ),
    ],
)  # fmt: skip
def test_config_values_of_the_wrong_type_name_the_key_and_the_type(call, message) -> None:
    with pytest.raises(StreamError, match=message):
        call(StreamPipeline("bad"))


def test_a_bad_dead_letter_config_fails_when_the_stream_is_declared() -> None:
    with pytest.raises(StreamError, match=r"sink 'dead_letter': unknown key 'pth'"):
        StreamPipeline("bad", on_error="dead_letter", dead_letter={"type": "file", "pth": "x"})


def test_stream_error_is_defined_with_the_other_errors() -> None:
    from xlibrary.pipeline import PipelineError, errors
    from xlibrary.pipeline import stream as stream_package

    assert errors.StreamError is StreamError is stream_package.StreamError
    assert issubclass(StreamError, PipelineError)
    assert "StreamError" in errors.__all__ and "StreamError" in (errors.__doc__ or "")

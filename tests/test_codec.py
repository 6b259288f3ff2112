"""Entries: formats that round-trip exactly, and every way an entry can be bad."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from xlibrary.pipeline.store import codec
from xlibrary.pipeline.store.codec import BadEntry, SerializationError


def roundtrip(value, secret=None):
    header, header_bytes, payload = codec.encode_entry("k", value, task="t", secret=secret)
    got_header, got = codec.decode_entry(header_bytes, payload, secret=secret)
    assert got_header == header
    return header.format, got


FRAMES = {
    "numbers": pd.DataFrame({"a": np.arange(5), "b": np.linspace(0, 1, 5)}),
    "strings": pd.DataFrame({"s": pd.array(["x", None, "z"], dtype="string")}),
    "nullable": pd.DataFrame(
        {"i": pd.array([1, None, 3], dtype="Int64"), "b": [True, False, True]}
    ),
    "times": pd.DataFrame(
        {
            "t": pd.date_range("2024-01-01", periods=3, tz="UTC"),
            "d": pd.to_timedelta([1, 2, 3], "s"),
        }
    ),
    "category": pd.DataFrame({"c": pd.Categorical(["a", "b", "a"])}),
    "index": pd.DataFrame({"v": [1, 2]}, index=pd.Index([10, 20], name="id")),
    "multiindex": pd.DataFrame(
        {"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])
    ),
}


@pytest.mark.parametrize("name", FRAMES)
def test_dataframes_use_arrow_and_round_trip_exactly(name: str) -> None:
    frame = FRAMES[name]
    fmt, got = roundtrip(frame)
    assert fmt == "arrow"
    pd.testing.assert_frame_equal(got, frame)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({1: [1, 2]}),  # non-string column names
        pd.DataFrame({"o": [{"a": 1}, [1]]}),  # objects
        pd.DataFrame({"m": [1, "a"]}, dtype=object),  # mixed
        pd.DataFrame({"c": [1 + 2j]}),  # complex
    ],
)
def test_frames_arrow_cannot_round_trip_are_pickled(frame: pd.DataFrame) -> None:
    fmt, got = roundtrip(frame)
    assert fmt == "pickle"
    pd.testing.assert_frame_equal(got, frame)


def test_frame_attrs_are_kept() -> None:
    frame = pd.DataFrame({"a": [1]})
    frame.attrs["source"] = "db"
    fmt, got = roundtrip(frame)
    assert fmt == "pickle" and got.attrs == {"source": "db"}


def test_arrays() -> None:
    fmt, got = roundtrip(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert fmt == "npy" and got.dtype == np.float32 and got.shape == (3, 4)
    fmt, got = roundtrip(np.array([{"a": 1}], dtype=object))
    assert fmt == "pickle" and got[0] == {"a": 1}


def test_everything_else_is_cloudpickled() -> None:
    value = {"when": dt.date(2024, 1, 1), "f": lambda x: x + 1}
    fmt, got = roundtrip(value)
    assert fmt == "pickle" and got["when"] == dt.date(2024, 1, 1) and got["f"](1) == 2


def test_unserializable_value_names_the_task_and_type() -> None:
    import threading

    with pytest.raises(SerializationError, match=r"task 'load' returned a _thread.lock"):
        codec.encode_entry("k", threading.Lock(), task="load")


def _entry(value=b"x" * 100, secret=None):
    _, header_bytes, payload = codec.encode_entry("k", value, secret=secret)
    return header_bytes, payload


def test_truncated_payload() -> None:
    header, payload = _entry()
    with pytest.raises(BadEntry, match="header says"):
        codec.decode_entry(header, payload[:-5])


def test_corrupt_payload() -> None:
    header, payload = _entry()
    flipped = bytes([payload[-1] ^ 0xFF])
    with pytest.raises(BadEntry, match="checksum"):
        codec.decode_entry(header, payload[:-1] + flipped)


def test_foreign_blob() -> None:
    with pytest.raises(BadEntry, match="magic"):
        codec.split(b"PK\x03\x04 a zip file")
    with pytest.raises(BadEntry, match="unreadable"):
        codec.decode_entry(b"{not json", b"")


def test_signed_entries_refuse_tampering_and_unsigned() -> None:
    secret = b"s3cret"
    assert roundtrip([1, 2], secret=secret)[1] == [1, 2]
    header, payload = _entry(secret=secret)
    import json

    data = json.loads(header)
    data["expires"] = 4102444800.0  # someone extends the entry's life
    with pytest.raises(BadEntry, match="signature"):
        codec.decode_entry(json.dumps(data).encode(), payload, secret=secret)
    with pytest.raises(BadEntry, match=r"another secret|tampered"):
        codec.decode_entry(header, payload, secret=b"other")
    unsigned_header, unsigned_payload = _entry()
    with pytest.raises(BadEntry, match="not signed"):
        codec.decode_entry(unsigned_header, unsigned_payload, secret=secret)


def test_tampered_payload_with_matching_checksum_is_refused_when_signed() -> None:
    import json
    import zlib

    header, _ = _entry(value=[1, 2, 3], secret=b"k")
    evil = codec.encode_value([6, 6, 6])[1]
    data = json.loads(header)
    data.update(size=len(evil), crc32=zlib.crc32(evil))
    with pytest.raises(BadEntry, match="signature"):
        codec.decode_entry(json.dumps(data).encode(), evil, secret=b"k")


class _Touch:
    """Unpickling it creates a file: proof that a payload was loaded."""

    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_an_entry_of_another_key_is_refused_before_its_payload_loads(tmp_path) -> None:
    marker = tmp_path / "loaded"
    _, header, payload = codec.encode_entry("price_usd", _Touch(marker), secret=b"k")
    marker.unlink(missing_ok=True)
    with pytest.raises(BadEntry, match="'price_usd', not 'price_eur'"):
        codec.decode_entry(header, payload, secret=b"k", expect={"key": "price_eur"})
    assert not marker.exists()
    codec.decode_entry(header, payload, secret=b"k", expect={"key": "price_usd"})
    assert marker.exists()

"""Entries: a value, serialized, framed with a header that says what it is and proves it whole.

An entry is one blob: ``MAGIC | header length (4 bytes) | header (JSON) | payload``. The header
carries the format, the task and key, when it was created and when it expires, the payload's
size and CRC-32, the library and Python versions and, when a secret is configured, an
HMAC-SHA256 over the whole header (the key included) and the payload. :func:`decode_entry`
checks all of it, and that the entry is the one asked for (its key, task and pipeline), before
it loads anything: a short, corrupt, foreign or tampered entry, or a whole one moved under
another key, raises :class:`BadEntry`, which callers treat as a cache miss.

Formats, chosen per value by :func:`encode_value` (measured in ``benchmarks/bench_store.py``):

* ``arrow``: a pandas DataFrame whose columns and index have types Arrow round-trips exactly,
  as an Arrow IPC file: faster than pickle to write and read, and loading it runs no code.
* ``npy``: a NumPy array of a non-object dtype, ``numpy.save`` without pickle: the same.
* ``pickle``: anything else, with cloudpickle. Loading pickled data runs code: a store that
  others can write to must be protected with a secret (``caching.secret``).
* ``collection``: a Dask collection the workers wrote beside the entry (a partitioned parquet
  directory, a zarr store, ``.npy`` chunks): the entry holds only its format and its path in
  the store (:class:`StoredCollection`), and loading it reads nothing of the data. A Dask
  collection itself is never pickled (its graph would be, not its data):
  :func:`encode_value` refuses one.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
from dask.base import is_dask_collection

from .._version import __version__
from ..errors import BadEntry, SerializationError

__all__ = [
    "MAGIC",
    "BadEntry",
    "EntryHeader",
    "SerializationError",
    "StoredCollection",
    "decode_entry",
    "decode_value",
    "encode_entry",
    "encode_value",
    "read_header",
]

MAGIC = b"XLPIPE\x01"
_LENGTH = struct.Struct(">I")
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _library_version() -> str:
    return __version__


@dataclass(frozen=True)
class EntryHeader:
    """What an entry holds, without its payload."""

    key: str
    format: str
    size: int
    crc32: int
    created: float
    expires: float | None = None
    task: str | None = None
    pipeline: str | None = None
    entry_id: str = ""
    """Unique per write: downstream cache keys use it to stand for this value."""
    library_version: str = ""
    python: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form facts about the entry (the code fingerprint and input token of the task)."""
    hmac: str | None = None

    @property
    def ttl(self) -> float | None:
        return None if self.expires is None else self.expires - self.created

    def expired(self, now: float | None = None) -> bool:
        return (
            self.expires is not None and (now if now is not None else time.time()) >= self.expires
        )

    def to_json(self) -> dict[str, Any]:
        data = {
            "key": self.key,
            "format": self.format,
            "size": self.size,
            "crc32": self.crc32,
            "created": self.created,
            "expires": self.expires,
            "task": self.task,
            "pipeline": self.pipeline,
            "entry_id": self.entry_id,
            "library_version": self.library_version,
            "python": self.python,
            "meta": self.meta,
        }
        if self.hmac is not None:
            data["hmac"] = self.hmac
        return data


@dataclass(frozen=True)
class StoredCollection:
    """A Dask collection written by the workers into the store: its dataset ``format``
    (``parquet``, ``zarr``, ``npy``) and its ``path`` relative to the store's root. Entries
    keep only these two; whoever reads one fills in ``url`` and ``storage_options`` from the
    store it read it from (credentials are never written into an entry)."""

    format: str
    path: str
    url: str = ""
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, str]:
        return {"format": self.format, "path": self.path}


# -- values -----------------------------------------------------------------------------------
def encode_value(value: Any, *, task: str | None = None) -> tuple[str, bytes]:
    """``(format, payload)`` for ``value``; raises :class:`SerializationError` naming the task."""
    if isinstance(value, StoredCollection):
        return "collection", json.dumps(value.to_json()).encode()
    if is_dask_collection(value):
        who = f"task {task!r} returned" if task else "got"
        raise SerializationError(
            f"{who} a Dask collection ({type(value).__module__}.{type(value).__qualname__}), "
            "which is not pickled into the store (its graph would be, not its data): the "
            "engine has the workers write a dask DataFrame as parquet and a dask array as "
            "zarr or npy chunks; other collections (bags, delayed) are not stored: compute "
            "them in the task, or turn off caching/saving for it"
        )
    try:
        if _is_plain_ndarray(value):
            return "npy", _encode_npy(value)
        if _is_arrow_safe_frame(value):
            return "arrow", _encode_arrow(value)
        return "pickle", cloudpickle.dumps(value, protocol=5)
    except Exception as exc:
        who = f"task {task!r} returned" if task else "got"
        raise SerializationError(
            f"{who} a {type(value).__module__}.{type(value).__qualname__} that cannot be "
            f"serialized for the store: {exc}; return plain data (dicts, lists, DataFrames, "
            "arrays) or turn off caching/saving for this task"
        ) from exc


def decode_value(fmt: str, payload: bytes) -> Any:
    if fmt == "pickle":
        return cloudpickle.loads(payload)
    if fmt == "collection":
        data = json.loads(payload)
        return StoredCollection(format=str(data["format"]), path=str(data["path"]))
    if fmt == "npy":
        import numpy as np

        return np.load(io.BytesIO(payload), allow_pickle=False)
    if fmt == "arrow":
        import pyarrow as pa

        with pa.ipc.open_file(pa.BufferReader(payload)) as reader:
            return reader.read_all().to_pandas()
    raise BadEntry(f"unknown entry format {fmt!r}")


def _is_plain_ndarray(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return (
        numpy is not None
        and type(value) is numpy.ndarray
        and not value.dtype.hasobject
        and value.dtype.kind != "V"
    )


_ARROW_KINDS = set("iufbMm")  # ints, unsigned, floats, bools, datetimes, timedeltas


def _is_arrow_safe_frame(value: Any) -> bool:
    pandas = sys.modules.get("pandas")
    if pandas is None or type(value) is not pandas.DataFrame or value.attrs:
        return False
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    columns = value.columns
    if type(columns) is not pandas.Index or not columns.is_unique:
        return False
    if not all(type(name) is str for name in columns):
        return False
    if not all(_arrow_safe_dtype(pandas, dtype) for dtype in value.dtypes):
        return False
    index = value.index
    if type(index) is pandas.RangeIndex:
        return True
    if type(index) is pandas.MultiIndex:
        return all(_arrow_safe_dtype(pandas, level.dtype) for level in index.levels)
    return type(index) in (pandas.Index, pandas.DatetimeIndex) and _arrow_safe_dtype(
        pandas, index.dtype
    )


def _arrow_safe_dtype(pandas: Any, dtype: Any) -> bool:
    kind = getattr(dtype, "kind", None)
    if isinstance(dtype, pandas.CategoricalDtype):
        return _arrow_safe_dtype(pandas, dtype.categories.dtype)
    if isinstance(dtype, pandas.StringDtype | pandas.DatetimeTZDtype):
        return True
    if pandas.api.types.is_extension_array_dtype(dtype):
        # nullable Int64 / Float64 / boolean round-trip through pandas metadata
        return type(dtype).__name__ in {
            "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
            "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
            "Float32Dtype", "Float64Dtype", "BooleanDtype",
        }  # fmt: skip
    return kind in _ARROW_KINDS and getattr(dtype, "byteorder", "=") in "=|<"


def _encode_npy(array: Any) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _encode_arrow(frame: Any) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


# -- entries ----------------------------------------------------------------------------------
def encode_entry(
    key: str,
    value: Any,
    *,
    ttl: float | None = None,
    task: str | None = None,
    pipeline: str | None = None,
    meta: dict[str, Any] | None = None,
    secret: bytes | None = None,
    entry_id: str | None = None,
) -> tuple[EntryHeader, bytes, bytes]:
    """Serialize ``value`` as an entry: ``(header, header bytes, payload)``; ``entry_id``
    (default: a new one) when it was handed out before the entry is written."""
    fmt, payload = encode_value(value, task=task)
    created = time.time()
    header = EntryHeader(
        key=key,
        format=fmt,
        size=len(payload),
        crc32=zlib.crc32(payload),
        created=created,
        expires=None if ttl is None else created + ttl,
        task=task,
        pipeline=pipeline,
        entry_id=entry_id or new_entry_id(),
        library_version=_library_version(),
        python=PYTHON,
        meta=dict(meta or {}),
    )
    core = _canonical(header.to_json())
    if secret is not None:
        signature = hmac.new(secret, core + payload, hashlib.sha256).hexdigest()
        header = EntryHeader(**{**header.to_json(), "hmac": signature})
        core = _canonical(header.to_json())
    return header, core, payload


def new_entry_id() -> str:
    """A fresh entry id: unique per write."""
    return uuid.uuid4().hex


def frame(header_bytes: bytes, payload: bytes) -> bytes:
    """The single blob of an entry, for stores that keep one object per entry."""
    return b"".join((MAGIC, _LENGTH.pack(len(header_bytes)), header_bytes, payload))


def split(blob: bytes) -> tuple[bytes, bytes]:
    """``(header bytes, payload)`` of a framed entry; raises BadEntry if it is not one."""
    prefix = len(MAGIC) + _LENGTH.size
    if len(blob) < prefix or not blob.startswith(MAGIC):
        raise BadEntry("not an xlibrary.pipeline entry (wrong magic bytes)")
    (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
    if len(blob) < prefix + length:
        raise BadEntry("entry is truncated inside its header")
    return blob[prefix : prefix + length], blob[prefix + length :]


def header_length(prefix: bytes) -> int:
    """The header length from the first ``len(MAGIC) + 4`` bytes of a framed entry."""
    if len(prefix) < len(MAGIC) + _LENGTH.size or not prefix.startswith(MAGIC):
        raise BadEntry("not an xlibrary.pipeline entry (wrong magic bytes)")
    return int(_LENGTH.unpack_from(prefix, len(MAGIC))[0])


PREFIX_SIZE = len(MAGIC) + _LENGTH.size


def read_header(header_bytes: bytes) -> EntryHeader:
    """Parse a header; raises BadEntry when it is not one of ours."""
    try:
        data = json.loads(header_bytes)
        return EntryHeader(**data)
    except (ValueError, TypeError) as exc:
        raise BadEntry(f"entry header is unreadable: {exc}") from exc


def decode_entry(
    header_bytes: bytes,
    payload: bytes,
    *,
    secret: bytes | None = None,
    expect: Mapping[str, str | None] | None = None,
) -> tuple[EntryHeader, Any]:
    """Check an entry whole and return ``(header, value)``; raises BadEntry otherwise.

    ``expect`` holds the header fields the entry must have (``{"key": ...}``): a valid entry
    copied over another one's place is refused before its payload is loaded.
    """
    header = read_header(header_bytes)
    if len(payload) != header.size:
        raise BadEntry(f"entry payload is {len(payload)} bytes, its header says {header.size}")
    if zlib.crc32(payload) != header.crc32:
        raise BadEntry("entry payload does not match its checksum (corrupt)")
    if secret is not None:
        if header.hmac is None:
            raise BadEntry("entry is not signed, and a secret is configured")
        unsigned = _canonical({k: v for k, v in header.to_json().items() if k != "hmac"})
        expected = hmac.new(secret, unsigned + payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, header.hmac):
            raise BadEntry("entry signature does not match (tampered, or another secret)")
    check_header(header, expect)
    if header.format == "pickle" and header.python != PYTHON:
        raise BadEntry(f"entry was pickled by Python {header.python}, this is {PYTHON}")
    try:
        return header, decode_value(header.format, payload)
    except BadEntry:
        raise
    except Exception as exc:
        raise BadEntry(f"entry payload cannot be loaded: {type(exc).__name__}: {exc}") from exc


def check_header(header: EntryHeader, expect: Mapping[str, str | None] | None) -> None:
    """Raise BadEntry unless ``header`` has the fields of ``expect`` (the entry asked for)."""
    for name, wanted in (expect or {}).items():
        found = getattr(header, name)
        if found != wanted:
            raise BadEntry(
                f"entry belongs to {name} {found!r}, not {wanted!r}: it was moved or copied "
                "from another place"
            )


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()

"""The identity of a dataset's files, so that a changed file always misses the cache.

A :class:`Fingerprint` lists every file a URL stands for (the file; each match of a glob; each
file under a directory, such as a partitioned parquet dataset), each with what the file system
says about it without reading it:

* a **checksum** when the file system gives one with its listing (an object store's ETag,
  GCS's ``md5Hash`` or ``crc32c``); object stores give a new one to every new content;
* else its **size and modification time**. On a local disk that is ``os.stat``'s
  ``st_size`` and ``st_mtime_ns``: a rewrite changes the time even when the size stays (at
  the clock's granularity, a few milliseconds at worst).

Nothing is read or hashed, so a fingerprint costs one ``stat`` per local file (a listing on an
object store). :meth:`Fingerprint.token` is the part of a cache key; :func:`describe_change`
says which files were added, removed or changed, for ``explain_cache``. Hidden files (names
starting with ``.``, such as the temporary files of a write in progress) are left out.
"""

from __future__ import annotations

import datetime as dt
import glob as globlib
import hashlib
import os
import posixpath
import stat as statmod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..redact import redact_url

__all__ = ["FileState", "Fingerprint", "describe_change", "has_magic"]

_CHECKSUM_KEYS = ("ETag", "etag", "md5Hash", "crc32c", "checksum", "md5")
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
_MAX_NAMED = 10


def has_magic(path: str) -> bool:
    """Whether ``path`` is a glob pattern (``*``, ``?`` or ``[``), as fsspec decides it."""
    return any(c in path for c in "*?[")


@dataclass(frozen=True)
class FileState:
    """One file as the file system describes it: ``modified`` is UTC, to the nanosecond
    where the file system says so (``2026-11-30T05:49:16.654915123Z``)."""

    path: str
    size: int | None
    modified: str | None = None
    checksum: str | None = None

    @property
    def identity(self) -> str:
        if self.checksum is not None:
            return f"checksum={self.checksum} size={self.size}"
        return f"size={self.size} modified={self.modified}"

    def difference(self, new: FileState) -> str:
        """How ``new`` differs from this state of the same file: ``size 10 → 12 bytes``."""
        parts = []
        if self.checksum != new.checksum and (self.checksum or new.checksum):
            parts.append(f"checksum {self.checksum} → {new.checksum}")
        if self.size != new.size:
            parts.append(f"size {self.size} → {new.size} bytes")
        if self.modified != new.modified and self.checksum is None:
            parts.append(f"modified {self.modified} → {new.modified}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Fingerprint:
    """The files a URL stands for, sorted by path. ``url`` is shown with secrets hidden."""

    url: str
    files: tuple[FileState, ...]

    @classmethod
    def of(cls, url: str, *, storage_options: Mapping[str, Any] | None = None) -> Fingerprint:
        """The fingerprint of ``url`` (a file, a glob or a directory) now; no files match:
        an empty one."""
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return cls.of_path(fs, path, url=url)

    @classmethod
    def of_path(cls, fs: Any, path: str, *, url: str) -> Fingerprint:
        """The fingerprint of ``path`` on the fsspec file system ``fs``."""
        states = _local_states(path) if isinstance(fs, LocalFileSystem) else _states(fs, path)
        return cls(redact_url(url), tuple(sorted(states, key=lambda s: s.path)))

    @property
    def token(self) -> str:
        """A hex digest of every file's path and identity: the part of a cache key."""
        digest = hashlib.sha256()
        for state in self.files:
            digest.update(f"{state.path}\0{state.identity}\n".encode())
        return digest.hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, to keep beside a cache entry; :meth:`from_dict` reads it back."""
        return {
            "url": self.url,
            "files": [[s.path, s.size, s.modified, s.checksum] for s in self.files],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        files = tuple(FileState(str(p), s, m, c) for p, s, m, c in data["files"])
        return cls(str(data["url"]), files)

    def __str__(self) -> str:
        return f"{self.url}: {len(self.files)} file(s), {self.token}"


def describe_change(old: Fingerprint, new: Fingerprint) -> str | None:
    """Which files were added, removed or changed from ``old`` to ``new`` (``None``: none).

    >>> describe_change(before, after)
    "/data/companies.csv changed (size 120 → 121 bytes); /data/extra.csv was added"
    """
    before = {s.path: s for s in old.files}
    after = {s.path: s for s in new.files}
    changed = [
        f"{path} changed ({before[path].difference(after[path])})"
        for path in sorted(before.keys() & after.keys())
        if before[path].identity != after[path].identity
    ]
    added = [f"{path} was added" for path in sorted(after.keys() - before.keys())]
    removed = [f"{path} was removed" for path in sorted(before.keys() - after.keys())]
    parts = _first(changed, "changed") + _first(added, "added") + _first(removed, "removed")
    if old.url != new.url:
        parts.insert(0, f"the URL changed from {old.url} to {new.url}")
    return "; ".join(parts) or None


def _first(items: list[str], verb: str) -> list[str]:
    if len(items) <= _MAX_NAMED:
        return items
    return [*items[:_MAX_NAMED], f"{len(items) - _MAX_NAMED} more files {verb}"]


def _hidden(path: str, base: str) -> bool:
    return any(part.startswith(".") for part in posixpath.relpath(path, base).split("/"))


def _ns_text(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


def _local_states(path: str) -> list[FileState]:
    """``os.stat`` of each file: the file, each glob match, each file under a directory."""
    matches = globlib.glob(path, recursive=True) if has_magic(path) else [path]
    states: list[FileState] = []
    for match in matches:  # glob leaves hidden names out, as we want
        try:
            stat = os.stat(match)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if statmod.S_ISDIR(stat.st_mode):
            states.extend(_local_tree(match))
        else:
            states.append(FileState(match, stat.st_size, _ns_text(stat.st_mtime_ns)))
    return states


def _local_tree(root: str) -> Iterable[FileState]:
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                full = os.path.join(directory, name)
                stat = os.stat(full)
                yield FileState(full, stat.st_size, _ns_text(stat.st_mtime_ns))


def _states(fs: Any, path: str) -> list[FileState]:
    """From fsspec's listings: ``glob``/``find`` with details, or one ``info``."""
    if has_magic(path):
        found = fs.glob(path, detail=True).items()
        infos = {p: i for p, i in found if not posixpath.basename(p).startswith(".")}
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return []
        infos = {path: info}
    states: list[FileState] = []
    for name, info in infos.items():
        if info.get("type") == "directory":
            found = fs.find(name, detail=True)
            states.extend(_state(p, i) for p, i in found.items() if not _hidden(p, name))
        else:
            states.append(_state(name, info))
    return states


def _state(path: str, info: Mapping[str, Any]) -> FileState:
    checksum = next((str(info[k]).strip('"') for k in _CHECKSUM_KEYS if info.get(k)), None)
    stamp = next((info[k] for k in _TIME_KEYS if info.get(k) is not None), None)
    size = info.get("size")
    return FileState(path, None if size is None else int(size), _time_text(stamp), checksum)


def _time_text(stamp: Any) -> str | None:
    """A listing's time as UTC text; floats and datetimes to the microsecond (the precision
    both forms share, so a glob's float and an ``info``'s datetime agree)."""
    if stamp is None:
        return None
    if isinstance(stamp, dt.datetime):
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        stamp = stamp.timestamp()
    if isinstance(stamp, (int, float)):
        return _ns_text(round(float(stamp) * 1_000_000) * 1000)
    return str(stamp)

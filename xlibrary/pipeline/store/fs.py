"""The result store: one fsspec URL holding cache entries, saved intermediates and run records.

Writes are atomic: on a local disk the bytes go to a temporary file in the same directory,
which ``os.replace`` then renames over the target, so a reader (in this process or another)
sees the old entry or the new one, never half of one. On object stores (``s3://``, ``gs://``)
one ``pipe_file`` is one PUT, which becomes visible whole. ``memory://`` is per process: for
tests and the embedded backend only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import stat
import tempfile
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import StorePathError
from ..redact import redact_text, redact_url

__all__ = ["FsStore", "default_store_url", "open_store"]

DEFAULT_DIRECTORY = ".xlibrary-pipeline"


def default_store_url() -> str:
    """``./.xlibrary-pipeline`` under the working directory, as an absolute path."""
    return os.path.abspath(DEFAULT_DIRECTORY)


class FsStore:
    """Bytes under relative paths of one fsspec URL, written atomically."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **self.storage_options)
        except (ImportError, ValueError) as exc:
            from ..errors import ConfigError

            raise ConfigError(
                f"cannot open the store {redact_url(url)!r}: {redact_text(str(exc), url)}; "
                "for s3:// install s3fs, for gs:// "
                "gcsfs, or use a local directory"
            ) from exc
        self._local = isinstance(self.fs, LocalFileSystem)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FsStore, (self.url, self.storage_options))

    def __repr__(self) -> str:
        return f"FsStore({redact_url(self.url)!r})"

    def path(self, relative: str) -> str:
        """The full path of ``relative``; raises StorePathError unless it stays in the root."""
        parts = relative.split("/")
        if relative.startswith("/") or any(
            part in ("", ".", "..") or "\\" in part or "\x00" in part for part in parts
        ):
            raise StorePathError(
                f"{relative[:100]!r} is not a path inside the store (it would lead outside its "
                "root, or is not a plain relative path)"
            )
        return posixpath.join(self.root, relative)

    def write(self, relative: str, data: bytes) -> None:
        """Write ``data`` at ``relative`` atomically, replacing what was there."""
        path = self.path(relative)
        if self._local:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return
        parent = posixpath.dirname(path)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        self.fs.pipe_file(path, data)

    def read(self, relative: str) -> bytes | None:
        """The bytes at ``relative``, or ``None`` when there are none."""
        try:
            if self._local:  # the hot path of cache hits: skip fsspec's file objects
                with open(self.path(relative), "rb") as handle:
                    return handle.read()
            data: bytes = self.fs.cat_file(self.path(relative))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return data

    def read_prefix(self, relative: str, size: int) -> bytes | None:
        """The first ``size`` bytes at ``relative`` (fewer if shorter), or ``None``."""
        try:
            if self._local:
                with open(self.path(relative), "rb") as handle:
                    return handle.read(size)
            with self.fs.open(self.path(relative), "rb") as handle:
                data: bytes = handle.read(size)
                return data
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def delete(self, relative: str) -> bool:
        try:
            self.fs.rm_file(self.path(relative))
        except FileNotFoundError:
            return False
        return True

    def url_of(self, relative: str) -> str:
        """The URL of ``relative`` that fsspec (and Dask's readers and writers) open with
        this store's ``storage_options``: a plain path on a local disk."""
        path = self.path(relative)
        return path if self._local else str(self.fs.unstrip_protocol(path))

    def remove_tree(self, relative: str) -> bool:
        """Delete the directory ``relative`` and everything in it; whether there was one."""
        try:
            self.fs.rm(self.path(relative), recursive=True)
        except FileNotFoundError:
            return False
        return True

    def files(self, prefix: str) -> list[str]:
        """Relative paths of every file under ``prefix``, temporary files left out."""
        base = self.path(prefix)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root.rstrip("/")
        out = []
        for full in found:
            full = (
                full if full.startswith("/") or not root.startswith("/") else "/" + full.lstrip("/")
            )
            relative = posixpath.relpath(full, root) if root else full
            if not posixpath.basename(relative).startswith(".tmp-"):
                out.append(relative)
        return sorted(out)

    def listdir(self, relative: str) -> list[str]:
        """Names of the entries directly under ``relative`` (files and folders)."""
        path = self.path(relative)
        try:
            if self._local:
                return sorted(os.listdir(path))
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def writable_by_others(self) -> str | None:
        """A directory of this local store that other users can write to (group- or
        world-writable), or ``None``; object stores answer ``None`` (their ACLs decide)."""
        if not self._local:
            return None
        root = str(self.root)
        for path in (root, *(os.path.join(root, d) for d in ("cache", "runs"))):
            try:
                mode = os.stat(path).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode) and mode & (stat.S_IWGRP | stat.S_IWOTH):
                return path
        return None

    def exists(self, relative: str) -> bool:
        return bool(self.fs.exists(self.path(relative)))


def open_store(url: str, storage_options: Mapping[str, Any] | None = None) -> FsStore:
    """The store at ``url``: one object per process for the same arguments."""
    return _store(url, tuple(sorted((storage_options or {}).items())))


@functools.lru_cache(maxsize=32)
def _store(url: str, options: tuple[tuple[str, Any], ...]) -> FsStore:
    return FsStore(url, dict(options))

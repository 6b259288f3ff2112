"""Atomic writes of datasets: a file lands whole or not at all, a directory replaces the old
one in one rename (see :mod:`.dataset`); :class:`LazySave`, a Dask collection's save whose
parts the workers write first and whose commit renames them into place."""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from fsspec.implementations.local import LocalFileSystem

from ..errors import DatasetError

__all__ = ["LazySave", "atomic_file", "put_in_place"]


@dataclass(frozen=True, kw_only=True)
class LazySave:
    """A Dask collection's save, prepared by :meth:`Dataset.save_lazily`: once its lazy
    write has put the parts in ``temporary``, ``commit()``; or ``abandon()``."""

    version: str | None
    fs: Any = field(compare=False)
    temporary: str
    path: str
    versioned: bool = False

    def commit(self) -> None:
        """Put the written directory in place of what the target held (atomically on a
        local disk); a version is never overwritten (one saved since: DatasetError)."""
        if not self.fs.exists(self.temporary):
            raise DatasetError(f"nothing was written to {self.temporary}: cannot commit it")
        if self.versioned and self.fs.exists(self.path):
            raise DatasetError(
                f"version {self.version!r} of {self.path} was saved meanwhile, and a version "
                "is never overwritten"
            )
        put_in_place(self.fs, self.temporary, self.path)

    def abandon(self) -> None:
        """Remove what a failed or unwanted write left; the target is untouched."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.temporary, recursive=True)


@contextlib.contextmanager
def atomic_file(fs: Any, path: str, compression: str | None) -> Iterator[IO[bytes]]:
    """A binary file whose bytes land at ``path`` whole, or not at all (see the module)."""
    if isinstance(fs, LocalFileSystem):
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
        try:
            with open(temporary, "xb") as raw, _compressed(raw, compression) as file:
                yield file
            put_in_place(fs, temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return
    buffer = io.BytesIO()
    with _compressed(buffer, compression) as file:
        yield file
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if fs.isdir(path):
        fs.rm(path, recursive=True)
    fs.pipe_file(path, buffer.getvalue())


@contextlib.contextmanager
def _compressed(raw: IO[bytes], compression: str | None) -> Iterator[IO[bytes]]:
    if compression is None:
        yield raw
        return
    from fsspec.compression import compr

    with compr[compression](raw, mode="wb") as file:
        yield file


def put_in_place(fs: Any, temporary: str, path: str) -> None:
    """Move ``temporary`` (a file or a directory) to ``path``, replacing what is there."""
    if not isinstance(fs, LocalFileSystem):
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.mv(temporary, path, recursive=True)
        return
    if not (os.path.isdir(temporary) or os.path.isdir(path)) or not os.path.lexists(path):
        os.replace(temporary, path)  # one rename: atomic
        return
    parent, name = os.path.split(path)
    aside = os.path.join(parent, f".old-{uuid.uuid4().hex[:12]}-{name}")
    os.rename(path, aside)  # a directory cannot be renamed over: move the old one aside
    try:
        os.rename(temporary, path)
    except BaseException:  # the old one goes back: the target is never left empty
        os.rename(aside, path)
        raise
    if os.path.isdir(aside):
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.unlink(aside)

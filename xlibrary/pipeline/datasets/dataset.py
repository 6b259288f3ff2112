"""A dataset: data at an fsspec URL, in a format, loaded and saved with the same arguments.

:class:`Dataset` is a frozen spec (it travels to workers by value) with four verbs: ``load``,
``save``, ``exists`` and ``fingerprint``. The URL is anything fsspec opens (a local path,
``memory://``, ``s3://``, ...), a glob of files (loaded as one table), or a directory (a
partitioned parquet dataset, a zarr store). The format comes from the extension unless given
(:mod:`.formats`).

Saving is atomic, as the result store is: on a local disk a file is written under a temporary
name in the same directory and renamed over the target, and a directory (a Dask collection,
written by the workers) is written beside the target and renamed into place; on an object
store one file is one PUT. A reader sees the old data or the new, never half.

``versioned=True`` keeps every save, as Kedro's versioned datasets do:
``<url>/<version>/<file name>``, the version being a run id (:func:`~..store.names.new_run_id`,
which sorts by time) unless given. ``load`` reads the latest version (the highest id holding
the file) unless asked for another; a version is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import DatasetError, DatasetNotFoundError, MissingExtraError, missing_extra
from ..redact import redact_text, redact_url
from ..store.names import new_run_id
from .atomic import LazySave, atomic_file, put_in_place
from .fingerprint import Fingerprint, has_magic
from .formats import (
    DatasetFormat,
    compression_of,
    format_for_path,
    formats,
    get_format,
    hidden,
)

__all__ = ["Dataset", "LazySave"]

_MAX_VERSION = 200


@dataclass(frozen=True)
class Dataset:
    """Data at ``url`` in ``format`` (from the extension unless given).

    ::

        companies = Dataset("data/01_raw/companies.csv")
        frame = companies.load()
        model_input = Dataset("s3://bucket/model_input.parquet", versioned=True)
        model_input.save(frame)                     # .../model_input.parquet/<run id>/...
        Dataset("data/events-*.parquet", lazy=True).load()   # one dask DataFrame

    ``load_args`` go to the reader (``pandas.read_csv``, ...), ``save_args`` to the writer
    (``DataFrame.to_csv``, ...), over the format's defaults; ``storage_options`` to fsspec.
    ``lazy=True`` loads a Dask collection (parquet, csv, json, jsonl, npy, zarr). ``name``
    is the dataset's name in messages.
    """

    url: str
    _: KW_ONLY
    format: str | None = None
    load_args: Mapping[str, Any] = field(default_factory=dict)
    save_args: Mapping[str, Any] = field(default_factory=dict)
    versioned: bool = False
    lazy: bool = False
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, (str, os.PathLike)) or not str(self.url):
            raise DatasetError(f"a dataset needs a URL or a path, got {self.url!r}")
        url = os.fspath(self.url)
        if "://" not in url and "::" not in url:  # a local path: fixed now, not per process
            url = os.path.abspath(os.path.expanduser(url))
        object.__setattr__(self, "url", url)
        for name in ("load_args", "save_args", "storage_options"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise DatasetError(f"{self._what()}: {name} must be a dict, got {value!r}")
            object.__setattr__(self, name, dict(value))
        fmt = self.format if self.format is not None else format_for_path(url)
        if fmt is None:
            raise DatasetError(
                f"{self._what()}: cannot tell its format from the extension of "
                f"{posixpath.basename(url.rstrip('/'))!r}; pass format= one of "
                f"{', '.join(formats.names())} (or register your own with register_format)"
            )
        try:
            fmt_class = formats.get(fmt)
        except DatasetError as exc:  # an unknown name: the known ones, the closest first
            raise DatasetError(f"{self._what()}: {exc}") from None
        object.__setattr__(self, "format", fmt)
        if self.versioned and self.is_glob:
            raise DatasetError(f"{self._what()}: a glob cannot be versioned; drop versioned=True")
        if self.lazy and not fmt_class.loads_lazily():
            lazy = [n for n in formats.names() if formats.get(n).loads_lazily()]
            raise DatasetError(
                f"{self._what()}: the {fmt} format cannot load lazily (as a Dask collection); "
                f"lazy=True works with {', '.join(lazy)}"
            )

    def __repr__(self) -> str:
        shown = [repr(redact_url(self.url)), f"format={self.format!r}"]
        shown += [
            f"{k}={getattr(self, k)!r}" for k in ("load_args", "save_args") if getattr(self, k)
        ]
        shown += [f"{k}=True" for k in ("versioned", "lazy") if getattr(self, k)]
        if self.storage_options:
            shown.append(f"storage_options=<{', '.join(sorted(self.storage_options))}>")
        if self.name is not None:
            shown.append(f"name={self.name!r}")
        return f"Dataset({', '.join(shown)})"

    def __hash__(self) -> int:
        return hash((self.url, self.format, self.versioned, self.lazy, self.name))

    @property
    def token(self) -> str:
        """A digest of what the dataset reads and writes (URL, format, arguments, versioning,
        laziness) for a cache key; not ``storage_options``, which say how to reach the data
        (credentials among them), not what it is. The data's own identity: ``fingerprint``."""
        from dask.base import tokenize

        fields = (self.url, self.format, self.load_args, self.save_args, self.versioned, self.lazy)
        return str(tokenize(*fields))

    @property
    def is_glob(self) -> bool:
        """Whether the URL is a pattern (``*``, ``?``, ``[...]``) matching many files."""
        return bool(has_magic(self.url))

    # -- the four verbs ---------------------------------------------------------------------

    def load(self, *, version: str | None = None) -> Any:
        """The data: a value, or a Dask collection with ``lazy=True``. A versioned dataset
        reads its latest version, or ``version``. Nothing there: DatasetNotFoundError."""
        fmt = self._format()
        fs, path = self._fs_path()
        path = self._load_path(fs, path, version)
        args = {**fmt.default_load_args, **self.load_args}
        try:
            if has_magic(path):
                return self._load_glob(fmt, fs, path, args)
            try:
                kind = fs.info(path)["type"]
            except FileNotFoundError:
                raise self._not_found(path) from None
            if self.lazy:
                paths = [path]
                if kind == "directory" and not fmt.lazy_directories:
                    paths = _files_under(fs, path)  # dask reads files (and globs) only
                urls = [self._url_of(fs, p) for p in paths]
                return fmt.load_lazy(urls, self.storage_options, **args)
            if kind == "directory":
                url = self._url_of(fs, path)
                return fmt.read_directory(fs, path, url, self.storage_options, **args)
            return _read_file(fmt, fs, path, args)
        except (DatasetError, MissingExtraError):
            raise
        except FileNotFoundError as exc:
            raise self._not_found(path) from exc
        except Exception as exc:
            raise self._failed("load", exc) from exc

    def save(self, value: Any, *, version: str | None = None) -> str | None:
        """Write ``value`` atomically; returns the version written (``None`` unless
        versioned). A Dask collection is written by the workers: a dask DataFrame as a
        partitioned parquet directory, a dask array as zarr or one ``.npy`` per chunk."""
        fmt, fs, path, version, args, collection = self._target(value, version)
        try:
            if collection or fmt.directory:
                self._write_directory(fmt, value, fs, path, args)
            else:
                with atomic_file(fs, path, compression_of(path)) as file:
                    fmt.write(value, file, **args)
        except (DatasetError, MissingExtraError):
            raise
        except Exception as exc:
            raise self._failed("save", exc) from exc
        return version

    def save_lazily(self, value: Any, *, version: str | None = None) -> tuple[Any, LazySave]:
        """Prepare the save of Dask collection ``value`` without computing anything: returns
        the lazy write, which puts the parts in a directory beside the target when computed
        (by whoever computes it: the workers of a cluster), and the :class:`LazySave` whose
        ``commit()`` then renames it into place, as :meth:`save` does (``abandon()`` removes
        a write that failed). What ``save`` refuses is refused here, before anything is
        written. The ``LazySave`` holds no data: it may travel."""
        fmt, fs, path, version, args, collection = self._target(value, version)
        if not collection:
            raise DatasetError(f"{self._what()}: save_lazily takes a Dask collection; use save")
        parent, name = posixpath.split(path)
        temporary = posixpath.join(parent, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
        try:
            if parent:
                fs.makedirs(parent, exist_ok=True)
            url = self._url_of(fs, temporary)
            lazy = fmt.write_collection(
                value, fs, temporary, url, self.storage_options, compute=False, **args
            )
        except (DatasetError, MissingExtraError):
            raise
        except Exception as exc:
            raise self._failed("save", exc) from exc
        done = LazySave(
            version=version, fs=fs, temporary=temporary, path=path, versioned=self.versioned
        )
        return lazy, done

    def _target(
        self, value: Any, version: str | None
    ) -> tuple[DatasetFormat, Any, str, str | None, dict[str, Any], bool]:
        """Where and how ``value`` is saved: its format, filesystem, path, version, save
        arguments and whether it is a Dask collection; raises what makes it unsavable."""
        if self.is_glob:
            raise DatasetError(f"{self._what()}: cannot save to a glob; give one file's URL")
        fmt = self._format()
        from dask.base import is_dask_collection

        collection = is_dask_collection(value)
        if collection and not fmt.writes_collections():
            raise DatasetError(f"{self._what()}: {_collection_advice(value, fmt.name)}")
        problem = fmt.check(value)
        if problem is not None:
            raise DatasetError(f"{self._what()}: {problem}")
        fs, path = self._fs_path()
        if self.versioned:
            version = _check_version(new_run_id() if version is None else version, self)
            path = posixpath.join(path, version, posixpath.basename(path))
            if fs.exists(path):
                raise DatasetError(
                    f"{self._what()}: version {version!r} exists already, and a version is "
                    "never overwritten; save without version= to make a new one"
                )
        elif version is not None:
            raise DatasetError(f"{self._what()}: version= needs a versioned dataset")
        return fmt, fs, path, version, {**fmt.default_save_args, **self.save_args}, collection

    def exists(self) -> bool:
        """Whether there is data to load (a file, a match of the glob, a saved version)."""
        fs, path = self._fs_path()
        if self.versioned:
            return self._latest(fs, path) is not None
        if has_magic(path):
            return bool(fs.glob(path))
        return bool(fs.exists(path))

    def fingerprint(self, *, version: str | None = None) -> Fingerprint:
        """The identity of the files ``load`` reads (:mod:`.fingerprint`): a changed file
        gives another one. Nothing there: DatasetNotFoundError."""
        fs, path = self._fs_path()
        path = self._load_path(fs, path, version)
        found = Fingerprint.of_path(fs, path, url=self._url_of(fs, path))
        if not found.files:
            raise self._not_found(path)
        return found

    def versions(self) -> list[str]:
        """The saved versions, oldest first (a versioned dataset only)."""
        if not self.versioned:
            raise DatasetError(f"{self._what()}: not versioned, so it has no versions")
        fs, path = self._fs_path()
        name = posixpath.basename(path)
        return [v for v in _version_dirs(fs, path) if fs.exists(posixpath.join(path, v, name))]

    # -- helpers ----------------------------------------------------------------------------

    def _what(self) -> str:
        url = redact_url(os.fspath(self.url))
        return f"dataset {self.name!r} ({url})" if self.name else f"dataset {url}"

    def _format(self) -> DatasetFormat:
        assert self.format is not None
        fmt = get_format(self.format)
        if fmt.requires is not None:
            package, extra = fmt.requires
            import importlib.util

            if importlib.util.find_spec(package) is None:
                raise missing_extra(package, extra, f"the {fmt.name} format of {self._what()}")
        return fmt

    def _fs_path(self) -> tuple[Any, str]:
        try:
            fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise DatasetError(
                f"{self._what()}: cannot open its file system: {redact_text(str(exc), self.url)}"
                " (s3:// needs s3fs, gs:// gcsfs, az:// adlfs)"
            ) from exc
        return fs, path

    def _url_of(self, fs: Any, path: str) -> str:
        return path if isinstance(fs, LocalFileSystem) else str(fs.unstrip_protocol(path))

    def _load_path(self, fs: Any, path: str, version: str | None) -> str:
        if not self.versioned:
            if version is not None:
                raise DatasetError(f"{self._what()}: version= needs a versioned dataset")
            return path
        if version is None:
            version = self._latest(fs, path)
            if version is None:
                raise DatasetNotFoundError(
                    f"{self._what()}: no version has been saved yet (none under "
                    f"{redact_url(self._url_of(fs, path))}); save one first"
                )
        return posixpath.join(path, _check_version(version, self), posixpath.basename(path))

    def _latest(self, fs: Any, path: str) -> str | None:
        name = posixpath.basename(path)
        for version in reversed(_version_dirs(fs, path)):
            if fs.exists(posixpath.join(path, version, name)):
                return version
        return None

    def _load_glob(self, fmt: DatasetFormat, fs: Any, path: str, args: dict[str, Any]) -> Any:
        matches = sorted(p for p in fs.glob(path) if not posixpath.basename(p).startswith("."))
        if not matches:
            raise self._not_found(path)
        if self.lazy:
            urls = [self._url_of(fs, p) for p in matches]
            return fmt.load_lazy(urls, self.storage_options, **args)
        return fmt.combine([_read_file(fmt, fs, p, args) for p in matches])

    def _write_directory(
        self, fmt: DatasetFormat, value: Any, fs: Any, path: str, args: dict[str, Any]
    ) -> None:
        parent, name = posixpath.split(path)
        temporary = posixpath.join(parent, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
        if parent:
            fs.makedirs(parent, exist_ok=True)
        try:
            url = self._url_of(fs, temporary)
            fmt.write_collection(value, fs, temporary, url, self.storage_options, **args)
            put_in_place(fs, temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(temporary, recursive=True)
            raise

    def _not_found(self, path: str) -> DatasetNotFoundError:
        what = "no file matches" if has_magic(path) else "nothing is at"
        fs_url = redact_url(self.url)
        return DatasetNotFoundError(
            f"{self._what()}: {what} {fs_url}; check the path (relative paths are from the "
            f"directory the dataset was declared in) or save the dataset first"
        )

    def _failed(self, verb: str, exc: Exception) -> DatasetError:
        detail = redact_text(f"{type(exc).__name__}: {exc}", self.url)
        return DatasetError(f"{self._what()}: cannot {verb} it as {self.format}: {detail}")


def _files_under(fs: Any, path: str) -> list[str]:
    """The data files of a directory: hidden ones and ``_SUCCESS``-like markers left out."""
    found = (p for p in sorted(fs.find(path)) if not hidden(posixpath.relpath(p, path)))
    return list(found)


def _read_file(fmt: DatasetFormat, fs: Any, path: str, args: dict[str, Any]) -> Any:
    compression = compression_of(path)
    if isinstance(fs, LocalFileSystem) and compression is None:
        return fmt.read_local(path, **args)
    with fs.open(path, "rb", compression=compression) as file:
        return fmt.read(file, **args)


def _version_dirs(fs: Any, path: str) -> list[str]:
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = (posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")
    return sorted(n for n in names if not n.startswith("."))


def _check_version(version: object, dataset: Dataset) -> str:
    if (
        not isinstance(version, str)
        or not 0 < len(version) <= _MAX_VERSION
        or version.startswith(".")
        or any(c in version for c in "/\\") or not version.isprintable()
    ):  # fmt: skip
        raise DatasetError(
            f"{dataset._what()}: {str(version)[:100]!r} cannot name a version: use a run id "
            f"(as save() makes them) or another single directory name, not starting with '.'"
        )
    return version


def _collection_advice(value: Any, fmt: str) -> str:
    if hasattr(value, "to_parquet"):
        return (
            f"a dask DataFrame is saved as a partitioned parquet directory by the workers (a "
            f"Dask collection is never pickled), not as {fmt}: give the dataset a .parquet URL "
            "(or format='parquet')"
        )
    if hasattr(value, "to_zarr"):
        return (
            f"a dask array is saved as zarr or as one .npy file per chunk by the workers (a "
            f"Dask collection is never pickled), not as {fmt}: give the dataset a .zarr or .npy "
            "URL (or format='zarr' / 'npy')"
        )
    return (
        f"the {fmt} format cannot save a Dask collection ({type(value).__name__}); compute it first"
    )

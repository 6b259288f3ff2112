"""Dataset file formats: how a value becomes a file (or a directory) and comes back.

A format is a small class: its ``name``, the file extensions it owns, how it reads and writes
one file through a binary file object, and, where Dask can, how it saves a Dask collection
(written by the workers, never pickled as a graph) and loads one lazily. The built-in ones:

========  =================  =========================================  =====================
name      extensions         value                                      lazy load
========  =================  =========================================  =====================
csv       .csv               pandas DataFrame (or Series)               ``dd.read_csv``
parquet   .parquet .pq       DataFrame; a dask DataFrame becomes a      ``dd.read_parquet``
                             partitioned directory (``to_parquet``)
json      .json              DataFrame (or Series)                      ``dd.read_json``
jsonl     .jsonl .ndjson     DataFrame, one record a line               ``dd.read_json``
xlsx      .xlsx              DataFrame, or ``{sheet name: DataFrame}``  no
feather   .feather           DataFrame                                  no
pickle    .pkl .pickle       anything but a Dask collection             no
txt       .txt               str                                        no
bytes     .bin .bytes        bytes                                      no
npy       .npy               NumPy array; a dask array becomes one      ``dask.array``
                             ``.npy`` file per chunk in a directory
zarr      .zarr              NumPy or dask array (a directory)          ``da.from_zarr``
========  =================  =========================================  =====================

A compression suffix after the extension (``companies.csv.gz``; gzip, bz2, xz, lzma) is
undone and redone by fsspec on the way. ``xlsx`` needs openpyxl and ``zarr`` needs zarr, both
in the ``datasets`` extra. Register your own format with :func:`register_format`::

    class TsvFormat(DatasetFormat):
        name = "tsv"
        extensions = (".tsv",)
        def read(self, file, **load_args):
            return pd.read_csv(file, sep="\\t", **load_args)
        def write(self, value, file, **save_args):
            value.to_csv(file, sep="\\t", index=False, **save_args)

    register_format("tsv", TsvFormat)
"""

from __future__ import annotations

import importlib.util
import posixpath
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any, ClassVar

from ..errors import DatasetError
from ..registry import Registry

__all__ = [
    "COMPRESSIONS",
    "DatasetFormat",
    "compression_of",
    "format_for_path",
    "format_for_value",
    "formats",
    "get_format",
    "register_format",
]

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".lzma": "lzma"}
"""Compression suffixes that fsspec undoes on reading and applies on writing."""


class DatasetFormat:
    """How one kind of file is read and written. Subclass it and override what you need:
    ``read`` and ``write`` for single files; ``read_directory``, ``write_collection`` and
    ``load_lazy`` for directories and Dask collections (left out, they are refused with a
    message that says so)."""

    name: ClassVar[str] = ""
    extensions: ClassVar[tuple[str, ...]] = ()
    default_load_args: ClassVar[Mapping[str, Any]] = {}
    default_save_args: ClassVar[Mapping[str, Any]] = {}
    requires: ClassVar[tuple[str, str] | None] = None
    """``(import name, extra)`` of an optional dependency, checked before any use."""
    directory: ClassVar[bool] = False
    """Whether every value is written as a directory (zarr), not only Dask collections."""
    lazy_directories: ClassVar[bool] = False
    """Whether ``load_lazy`` reads a directory itself; else it is given the files in it."""

    def check(self, value: Any) -> str | None:
        """Why ``value`` cannot be saved in this format, or ``None``: asked before writing."""
        return None

    def read(self, file: IO[bytes], **load_args: Any) -> Any:
        raise DatasetError(f"the {self.name} format does not read files")

    def read_local(self, path: str, **load_args: Any) -> Any:
        """Read a local file; formats whose library reads a path faster override this."""
        with open(path, "rb") as file:
            return self.read(file, **load_args)

    def write(self, value: Any, file: IO[bytes], **save_args: Any) -> None:
        raise DatasetError(f"the {self.name} format does not write files")

    def combine(self, values: list[Any]) -> Any:
        """One value from the files of a glob or a directory; tables are concatenated."""
        return _concat_frames(values, self.name)

    def read_directory(
        self, fs: Any, path: str, url: str, options: Mapping[str, Any], **load_args: Any
    ) -> Any:
        """Read a directory (a dataset saved from a Dask collection): every file in it."""
        parts = [p for p in sorted(fs.find(path)) if not hidden(posixpath.relpath(p, path))]
        values = []
        for part in parts:
            with fs.open(part, "rb") as file:
                values.append(self.read(file, **load_args))
        return self.combine(values)

    def write_collection(
        self,
        value: Any,
        fs: Any,
        path: str,
        url: str,
        options: Mapping[str, Any],
        *,
        compute: bool = True,
        **save_args: Any,
    ) -> Any:
        """Write ``value`` (a Dask collection, or any value of a directory format) as the
        directory ``url``; the workers compute and write the parts. With ``compute=False``
        nothing is written yet: returns the lazy write (computed later, by whoever holds it)."""
        raise DatasetError(
            f"the {self.name} format does not save Dask collections or directories; save a "
            "computed value, or choose a format that does (parquet, npy, zarr)"
        )

    def load_lazy(self, urls: Sequence[str], options: Mapping[str, Any], **load_args: Any) -> Any:
        """A Dask collection reading ``urls`` (files or directories) when it is computed."""
        raise DatasetError(
            f"the {self.name} format does not load lazily; load it with lazy=False, or choose "
            "a format that does (csv, parquet, json, jsonl, npy, zarr)"
        )

    @classmethod
    def loads_lazily(cls) -> bool:  # the base's load_lazy refuses: overridden, it does
        return cls.load_lazy is not DatasetFormat.load_lazy

    @classmethod
    def writes_collections(cls) -> bool:
        return cls.write_collection is not DatasetFormat.write_collection


def hidden(relative: str) -> bool:
    """Files a directory dataset holds beside its data: ``.tmp-*``, ``_metadata``, ``_SUCCESS``."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _is_frame(value: Any) -> bool:
    import pandas as pd

    return isinstance(value, (pd.DataFrame, pd.Series))


def _concat_frames(values: list[Any], name: str) -> Any:
    import pandas as pd

    if not all(isinstance(v, pd.DataFrame) for v in values):
        raise TypeError(
            f"the {name} format loads a glob or a directory only when each file holds a table"
        )
    if not values:
        return pd.DataFrame()
    default = all(isinstance(v.index, pd.RangeIndex) and v.index.start == 0 for v in values)
    return pd.concat(values, ignore_index=default)


def _is_dask_frame(value: Any) -> bool:
    from dask.base import is_dask_collection

    return is_dask_collection(value) and hasattr(value, "to_parquet")


formats: Registry[DatasetFormat] = Registry("dataset file", error=DatasetError)
"""The formats by name; an unknown name reads "unknown dataset file type 'csvv'; did you mean
'csv'?" and lists the known ones."""

_extensions: dict[str, str] = {}
_lock = threading.Lock()


def register_format(
    name: str,
    target: type[DatasetFormat] | str,
    *,
    extensions: Sequence[str] | None = None,
    clobber: bool = False,
) -> None:
    """Add a format: ``target`` is a :class:`DatasetFormat` subclass (or its
    ``"package.module:Class"`` path); ``extensions`` (default: the class's own) pick it for
    URLs that end with them. A taken name or extension needs ``clobber=True``."""
    if extensions is None:
        extensions = target.extensions if isinstance(target, type) else ()
    wanted = [ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions]
    with _lock:
        for ext in wanted:
            owner = _extensions.get(ext)
            if owner is not None and owner != name and not clobber:
                raise DatasetError(
                    f"the extension {ext!r} belongs to the {owner!r} format already; pass "
                    "clobber=True to give it to the new one, or pick other extensions"
                )
        formats.register(name, target, clobber=clobber)
        for ext in wanted:
            _extensions[ext] = name


def get_format(name: str) -> DatasetFormat:
    """An instance of the format registered as ``name`` (DatasetError lists the known ones)."""
    return formats.get(name)()


def compression_of(path: str) -> str | None:
    """The fsspec compression of ``path``'s last suffix (``gzip`` for ``.gz``), or ``None``."""
    return COMPRESSIONS.get(posixpath.splitext(path.rstrip("/"))[1].lower())


def format_for_path(path: str) -> str | None:
    """The format owning ``path``'s extension (a compression suffix skipped), or ``None``."""
    if "://" in path:  # a URL's query is not part of the file name
        path = path.partition("?")[0]
    base = posixpath.basename(path.rstrip("/"))
    stem, ext = posixpath.splitext(base)
    if ext.lower() in COMPRESSIONS:
        ext = posixpath.splitext(stem)[1]
    return _extensions.get(ext.lower())


def format_for_value(value: Any) -> str:
    """The format the engine picks to store ``value`` itself (a cache entry, a ``save_to``
    without an extension): parquet for tables and dask DataFrames, zarr for dask arrays
    (npy chunks when zarr is not installed), npy for NumPy arrays, else pickle."""
    from dask.base import is_dask_collection

    if is_dask_collection(value):
        if _is_dask_frame(value):
            return "parquet"
        if hasattr(value, "chunks") and hasattr(value, "dtype"):
            return "zarr" if importlib.util.find_spec("zarr") is not None else "npy"
        return "pickle"  # refused by the pickle format, with the reason
    module = type(value).__module__.partition(".")[0]
    if module == "pandas" and _is_frame(value):
        return "parquet"
    if module == "numpy" and hasattr(value, "dtype") and not value.dtype.hasobject:
        return "npy"
    return "pickle"


_BUILT_IN = {
    "csv": ("tables:CsvFormat", (".csv",)),
    "parquet": ("tables:ParquetFormat", (".parquet", ".pq")),
    "json": ("tables:JsonFormat", (".json",)),
    "jsonl": ("tables:JsonLinesFormat", (".jsonl", ".ndjson")),
    "xlsx": ("tables:ExcelFormat", (".xlsx",)),
    "feather": ("tables:FeatherFormat", (".feather",)),
    "pickle": ("files:PickleFormat", (".pkl", ".pickle")),
    "txt": ("files:TextFormat", (".txt",)),
    "bytes": ("files:BytesFormat", (".bin", ".bytes")),
    "npy": ("files:NpyFormat", (".npy",)),
    "zarr": ("files:ZarrFormat", (".zarr",)),
}
for _name, (_where, _extensions_of) in _BUILT_IN.items():
    register_format(_name, f"xlibrary.pipeline.datasets.{_where}", extensions=_extensions_of)

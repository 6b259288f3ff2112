"""The table formats of datasets: csv, parquet, json, jsonl, xlsx and feather, through pandas
(and Dask, for collections and lazy loads). Registered by name in :mod:`.formats`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import IO, Any, ClassVar

from .formats import DatasetFormat, _is_dask_frame, _is_frame

__all__ = [
    "CsvFormat",
    "ExcelFormat",
    "FeatherFormat",
    "JsonFormat",
    "JsonLinesFormat",
    "ParquetFormat",
]


def _needs_frame(value: Any, name: str) -> str | None:
    if _is_frame(value):
        return None
    return (
        f"the {name} format saves a pandas DataFrame, not {type(value).__name__}; "
        "use format='pickle' for other values"
    )


class _Table(DatasetFormat):
    """A pandas table read by ``pandas.read_<reader>`` and written by ``DataFrame.to_<reader>``."""

    reader: ClassVar[str] = ""
    dask_reader: ClassVar[str] = ""

    @classmethod
    def loads_lazily(cls) -> bool:
        return bool(cls.dask_reader)

    def check(self, value: Any) -> str | None:
        return _needs_frame(value, self.name)

    def read(self, file: IO[bytes], **load_args: Any) -> Any:
        import pandas as pd

        return getattr(pd, f"read_{self.reader}")(file, **load_args)

    def write(self, value: Any, file: IO[bytes], **save_args: Any) -> None:
        if not hasattr(value, f"to_{self.reader}"):  # a Series, where only frames have it
            value = value.to_frame()
        getattr(value, f"to_{self.reader}")(file, **save_args)

    def load_lazy(self, urls: Sequence[str], options: Mapping[str, Any], **load_args: Any) -> Any:
        if not self.dask_reader:
            return super().load_lazy(urls, options, **load_args)
        import dask.dataframe as dd

        reader = getattr(dd, f"read_{self.dask_reader}")
        return reader(list(urls), storage_options=dict(options) or None, **load_args)


class CsvFormat(_Table):
    name = "csv"
    extensions = (".csv",)
    reader = dask_reader = "csv"
    default_save_args = {"index": False}  # as Kedro's CSVDataset: a round trip adds no column


class JsonFormat(_Table):
    name = "json"
    extensions = (".json",)
    reader = dask_reader = "json"

    def load_lazy(self, urls: Sequence[str], options: Mapping[str, Any], **load_args: Any) -> Any:
        # pandas writes and reads a frame by columns; dask.dataframe.read_json assumes records
        return super().load_lazy(urls, options, **{"orient": "columns", **load_args})


class JsonLinesFormat(_Table):
    name = "jsonl"
    extensions = (".jsonl", ".ndjson")
    reader = dask_reader = "json"
    default_load_args = {"lines": True}
    default_save_args = {"orient": "records", "lines": True}


class FeatherFormat(_Table):
    name = "feather"
    extensions = (".feather",)
    reader = "feather"


class ParquetFormat(_Table):
    name = "parquet"
    extensions = (".parquet", ".pq")
    reader = dask_reader = "parquet"
    lazy_directories = True

    def check(self, value: Any) -> str | None:
        return None if _is_dask_frame(value) else super().check(value)

    def read_local(self, path: str, **load_args: Any) -> Any:
        import pandas as pd

        return pd.read_parquet(path, **load_args)  # Arrow's own reader: no Python file object

    def read_directory(
        self, fs: Any, path: str, url: str, options: Mapping[str, Any], **load_args: Any
    ) -> Any:
        import pandas as pd

        frame = pd.read_parquet(path, filesystem=fs, **load_args)
        if frame.index.name == "__null_dask_index__":  # dask's name for an unnamed index
            frame.index.name = None
        return frame

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
        return value.to_parquet(
            url, storage_options=dict(options) or None, compute=compute, **save_args
        )


class ExcelFormat(_Table):
    name = "xlsx"
    extensions = (".xlsx",)
    reader = "excel"
    requires = ("openpyxl", "datasets")
    default_load_args = {"engine": "openpyxl"}
    default_save_args = {"index": False}  # as Kedro's ExcelDataset

    def check(self, value: Any) -> str | None:
        if isinstance(value, Mapping) and all(_is_frame(v) for v in value.values()):
            return None
        return _needs_frame(value, self.name)

    def write(self, value: Any, file: IO[bytes], **save_args: Any) -> None:
        import pandas as pd

        sheets = value if isinstance(value, Mapping) else {None: value}
        with pd.ExcelWriter(file, engine="openpyxl") as writer:
            for sheet, frame in sheets.items():
                extra = {} if sheet is None else {"sheet_name": sheet}
                frame.to_excel(writer, **extra, **save_args)

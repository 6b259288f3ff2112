"""The other formats of datasets: pickle, txt, bytes, npy and zarr. Registered by name in
:mod:`.formats`."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import IO, Any

import cloudpickle

from .formats import DatasetFormat

__all__ = ["BytesFormat", "NpyFormat", "PickleFormat", "TextFormat", "ZarrFormat"]


class PickleFormat(DatasetFormat):
    """Any value, with cloudpickle (plain ``pickle`` reads it). Loading a pickle runs code:
    read only files that you or your pipeline wrote."""

    name = "pickle"
    extensions = (".pkl", ".pickle")

    def check(self, value: Any) -> str | None:
        from dask.base import is_dask_collection

        if is_dask_collection(value):
            return (
                "a Dask collection is not pickled (its graph would be, not its data); save "
                "a dask DataFrame as parquet and a dask array as zarr or npy"
            )
        return None

    def read(self, file: IO[bytes], **load_args: Any) -> Any:
        return pickle.load(file, **load_args)

    def write(self, value: Any, file: IO[bytes], **save_args: Any) -> None:
        cloudpickle.dump(value, file, **save_args)

    def combine(self, values: list[Any]) -> Any:
        raise TypeError("the pickle format loads one file, not a glob or a directory")


class TextFormat(DatasetFormat):
    name = "txt"
    extensions = (".txt",)
    default_load_args = {"encoding": "utf-8"}
    default_save_args = {"encoding": "utf-8"}

    def check(self, value: Any) -> str | None:
        if isinstance(value, str):
            return None
        return f"the txt format saves a str, not {type(value).__name__}"

    def read(self, file: IO[bytes], **load_args: Any) -> Any:
        return file.read().decode(**load_args)

    def write(self, value: Any, file: IO[bytes], **save_args: Any) -> None:
        file.write(value.encode(**save_args))

    def combine(self, values: list[Any]) -> Any:
        return values


class BytesFormat(DatasetFormat):
    name = "bytes"
    extensions = (".bin", ".bytes")

    def check(self, value: Any) -> str | None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return None
        return f"the bytes format saves bytes, not {type(value).__name__}"

    def read(self, file: IO[bytes], **load_args: Any) -> Any:
        return file.read()

    def write(self, value: Any, file: IO[bytes], **save_args: Any) -> None:
        file.write(value)

    def combine(self, values: list[Any]) -> Any:
        return values


class NpyFormat(DatasetFormat):
    """A NumPy array as one ``.npy`` file (no pickle); a dask array as a directory holding
    one ``.npy`` file per chunk, written by the workers."""

    name = "npy"
    extensions = (".npy",)
    lazy_directories = True

    def check(self, value: Any) -> str | None:
        import numpy as np

        from . import arrays

        if not (isinstance(value, np.ndarray) or arrays.is_dask_array(value)):
            return f"the npy format saves a NumPy or dask array, not {type(value).__name__}"
        if value.dtype.hasobject:
            return "the npy format does not save arrays of Python objects; use pickle"
        return None

    def read(self, file: IO[bytes], **load_args: Any) -> Any:
        import numpy as np

        return np.load(file, allow_pickle=False, **load_args)

    def write(self, value: Any, file: IO[bytes], **save_args: Any) -> None:
        import numpy as np

        np.save(file, value, allow_pickle=False, **save_args)

    def read_directory(
        self, fs: Any, path: str, url: str, options: Mapping[str, Any], **load_args: Any
    ) -> Any:
        from . import arrays

        return arrays.load_npy_chunks(fs, path).compute(scheduler="threads")

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
        from . import arrays

        return arrays.save_npy_chunks(value, fs, path, compute=compute)

    def load_lazy(self, urls: Sequence[str], options: Mapping[str, Any], **load_args: Any) -> Any:
        import fsspec

        from . import arrays

        (url,) = urls
        fs, path = fsspec.core.url_to_fs(url, **options)
        if fs.isdir(path):
            return arrays.load_npy_chunks(fs, path)
        import dask.array as da

        return da.from_array(self.read_fs(fs, path), chunks="auto")  # type: ignore[no-untyped-call]

    def read_fs(self, fs: Any, path: str) -> Any:
        with fs.open(path, "rb") as file:
            return self.read(file)


class ZarrFormat(DatasetFormat):
    """A NumPy or dask array as a zarr store (a directory), written chunk by chunk by the
    workers; needs zarr (the ``datasets`` extra)."""

    name = "zarr"
    extensions = (".zarr",)
    requires = ("zarr", "datasets")
    directory = True
    lazy_directories = True

    def check(self, value: Any) -> str | None:
        import numpy as np

        from . import arrays

        if isinstance(value, np.ndarray) or arrays.is_dask_array(value):
            return None
        return f"the zarr format saves a NumPy or dask array, not {type(value).__name__}"

    def read_directory(
        self, fs: Any, path: str, url: str, options: Mapping[str, Any], **load_args: Any
    ) -> Any:
        return self.load_lazy([url], options, **load_args).compute(scheduler="threads")

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
        import dask.array as da

        from . import arrays

        array = value if arrays.is_dask_array(value) else da.from_array(value, chunks="auto")  # type: ignore[no-untyped-call]
        return array.to_zarr(
            url, storage_options=dict(options) or None, overwrite=True, compute=compute,
            **save_args,
        )  # fmt: skip

    def load_lazy(self, urls: Sequence[str], options: Mapping[str, Any], **load_args: Any) -> Any:
        import dask.array as da

        (url,) = urls
        return da.from_zarr(  # type: ignore[no-untyped-call]
            url, storage_options=dict(options) or None, **load_args
        )

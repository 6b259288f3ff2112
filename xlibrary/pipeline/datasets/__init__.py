"""Data in and out: datasets at fsspec URLs, their fingerprints, and Kedro-style catalogs.

::

    from xlibrary.pipeline.datasets import Catalog, Dataset

    companies = Dataset("data/01_raw/companies.csv")          # format from the extension
    frame = companies.load()
    companies.fingerprint().token                               # changes when the file does
    Dataset("data/03_primary/model_input.parquet", versioned=True).save(frame)
    catalog = Catalog.from_yaml("conf/base/catalog.yml")       # a Kedro catalog as it is

* :mod:`.dataset`: :class:`Dataset`, a frozen spec with ``load``/``save``/``exists``/
  ``fingerprint``; atomic saves; Kedro's versioned layout.
* :mod:`.formats`: the file formats by name and extension (its registry ``formats``);
  :func:`register_format`.
* :mod:`.fingerprint`: :class:`Fingerprint` of a file, glob or directory, and
  :func:`describe_change` naming the files that changed.
* :mod:`.catalog`: :class:`Catalog`, from ``catalog.yml`` or a mapping.
* :mod:`.arrays`: a dask array as one ``.npy`` file per chunk.
"""

from __future__ import annotations

from .atomic import LazySave
from .catalog import Catalog
from .dataset import Dataset
from .fingerprint import FileState, Fingerprint, describe_change
from .formats import (
    DatasetFormat,
    format_for_path,
    format_for_value,
    get_format,
    register_format,
)

__all__ = [
    "Catalog",
    "Dataset",
    "DatasetFormat",
    "FileState",
    "Fingerprint",
    "LazySave",
    "describe_change",
    "format_for_path",
    "format_for_value",
    "get_format",
    "register_format",
]

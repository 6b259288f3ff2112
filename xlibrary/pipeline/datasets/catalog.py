"""A catalog: datasets by name, from a Kedro-style ``catalog.yml`` or a mapping.

A Kedro user brings their catalog as it is::

    # conf/base/catalog.yml
    companies:
      type: pandas.CSVDataset
      filepath: data/01_raw/companies.csv
    model_input_table:
      type: pandas.ParquetDataset
      filepath: data/03_primary/model_input_table.parquet
      versioned: true

    catalog = Catalog.from_yaml("conf/base/catalog.yml")
    catalog["companies"].load()

The types are those of kedro-datasets that read files with pandas (and the older ``DataSet``
spellings, with or without the ``kedro_datasets.`` prefix); an entry's ``filepath``,
``load_args``, ``save_args``, ``versioned``, ``fs_args`` (fsspec storage options),
``metadata`` and the older ``layer`` mean what they mean in Kedro, with Kedro's default
arguments. Relative paths are from the working directory, as in a Kedro project. Not
supported, and said so when used: ``credentials`` (give storage options in ``fs_args``, or the
environment your file system reads, such as ``AWS_PROFILE``), ``${...}`` templating and
dataset factories (``{name}`` patterns). Entries whose names start with ``_`` are YAML
anchors, as in Kedro, and skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from ..errors import DatasetError, UnknownDatasetError, did_you_mean
from .dataset import Dataset

__all__ = ["KEDRO_TYPES", "Catalog"]

KEDRO_TYPES: Mapping[str, tuple[str, bool]] = {
    "pandas.CSVDataset": ("csv", False),
    "pandas.ParquetDataset": ("parquet", False),
    "pandas.ExcelDataset": ("xlsx", False),
    "pandas.JSONDataset": ("json", False),
    "pandas.FeatherDataset": ("feather", False),
    "pickle.PickleDataset": ("pickle", False),
    "text.TextDataset": ("txt", False),
    "dask.ParquetDataset": ("parquet", True),
    "dask.CSVDataset": ("csv", True),
}
"""Kedro dataset type → (our format, lazy)."""

_PREFIXES = ("kedro_datasets.", "kedro.extras.datasets.")
_KEYS = {"type", "filepath", "load_args", "save_args", "versioned", "fs_args", "metadata", "layer"}
"""What an entry may hold; ``metadata`` and ``layer`` (Kedro 0.18's) are for Kedro-Viz: ignored."""
_TYPE_KEYS = {"pickle.PickleDataset": {"backend"}, "pandas.ExcelDataset": {"engine"}}
_ALLOWED = {"backend": ("pickle", "cloudpickle"), "engine": ("openpyxl",)}


class Catalog(Mapping[str, Dataset]):
    """Datasets by name. ``Catalog({"companies": Dataset(...), "shuttles": {...}})`` takes
    datasets or Kedro entries; ``catalog[name]`` is the :class:`Dataset` (its ``name`` set)."""

    def __init__(self, datasets: Mapping[str, Dataset | Mapping[str, Any]] | None = None) -> None:
        self._datasets: dict[str, Dataset] = {}
        for name, entry in (datasets or {}).items():
            if not isinstance(name, str) or not name:
                raise DatasetError(f"a catalog entry needs a name (a string), got {name!r}")
            if name.startswith("_"):
                continue
            if isinstance(entry, Dataset):
                dataset = entry if entry.name else replace(entry, name=name)
            elif isinstance(entry, Mapping):
                dataset = dataset_from_entry(name, entry)
            else:
                raise DatasetError(
                    f"catalog entry {name!r}: expected a Dataset or a mapping with 'type' and "
                    f"'filepath', got {type(entry).__name__}"
                )
            self._datasets[name] = dataset

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
    ) -> Catalog:
        """Read a Kedro ``catalog.yml`` (a local path or an fsspec URL)."""
        import fsspec
        import yaml

        shown = os.fspath(path)
        try:
            with fsspec.open(shown, "rt", encoding="utf-8", **(storage_options or {})) as file:
                config = yaml.safe_load(file)
        except FileNotFoundError as exc:
            raise DatasetError(f"no catalog file at {shown!r}") from exc
        except yaml.YAMLError as exc:
            raise DatasetError(f"the catalog {shown!r} is not valid YAML: {exc}") from exc
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise DatasetError(
                f"the catalog {shown!r} must map dataset names to entries, got "
                f"{type(config).__name__}"
            )
        return cls(config)

    def __getitem__(self, name: str) -> Dataset:
        try:
            return self._datasets[name]
        except KeyError:
            known = ", ".join(sorted(self._datasets)) or "none"
            raise UnknownDatasetError(
                f"the catalog has no dataset {name!r}{did_you_mean(str(name), self._datasets)}"
                f" (known: {known})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._datasets)

    def __len__(self) -> int:
        return len(self._datasets)

    def __repr__(self) -> str:
        return f"Catalog({', '.join(self._datasets)})"

    def load(self, name: str, *, version: str | None = None) -> Any:
        """``catalog[name].load()``, as Kedro's ``DataCatalog.load``."""
        return self[name].load(version=version)

    def save(self, name: str, value: Any) -> str | None:
        """``catalog[name].save(value)``, as Kedro's ``DataCatalog.save``."""
        return self[name].save(value)


def kedro_type(name: str) -> str | None:
    """The canonical spelling of a Kedro type (``pandas.CSVDataset``), or ``None``."""
    for prefix in _PREFIXES:
        name = name.removeprefix(prefix)
    if name.endswith("DataSet"):
        name = name[: -len("DataSet")] + "Dataset"
    return name if name in KEDRO_TYPES else None


def dataset_from_entry(name: str, entry: Mapping[str, Any]) -> Dataset:
    """The :class:`Dataset` of one Kedro catalog entry (see the module for what is read)."""
    where = f"catalog entry {name!r}"
    if "{" in name:
        raise DatasetError(
            f"{where}: dataset factories ({{name}} patterns) are not supported; write one "
            "entry per dataset"
        )
    _refuse_templates(entry, where)
    if "credentials" in entry:
        raise DatasetError(
            f"{where}: 'credentials' are not supported; give the file system's options in "
            "fs_args (its storage options), or configure them where the file system reads "
            "them (AWS_PROFILE or ~/.aws for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://)"
        )
    raw_type = entry.get("type")
    canonical = kedro_type(raw_type) if isinstance(raw_type, str) else None
    if canonical is None:
        supported = ", ".join(KEDRO_TYPES)
        hint = did_you_mean(str(raw_type), KEDRO_TYPES) if isinstance(raw_type, str) else ""
        raise DatasetError(
            f"{where}: unknown dataset type {raw_type!r}{hint}; supported: {supported} "
            "(also spelt ...DataSet, or with the kedro_datasets. prefix)"
        )
    allowed = _KEYS | _TYPE_KEYS.get(canonical, set())
    for key in entry:
        if key not in allowed:
            raise DatasetError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), allowed)} for "
                f"{canonical} (known: {', '.join(sorted(allowed))})"
            )
    for key, values in _ALLOWED.items():
        if key in entry and entry[key] not in values:
            raise DatasetError(
                f"{where}: {key} {entry[key]!r} is not supported; use {' or '.join(values)}"
            )
    filepath = entry.get("filepath")
    if not isinstance(filepath, str) or not filepath:
        raise DatasetError(f"{where}: needs a 'filepath' (a path or an fsspec URL)")
    fmt, lazy = KEDRO_TYPES[canonical]
    return Dataset(
        filepath,
        format=fmt,
        load_args=_mapping(entry, "load_args", where),
        save_args=_mapping(entry, "save_args", where),
        versioned=_flag(entry, "versioned", where),
        lazy=lazy,
        storage_options=_storage_options(_mapping(entry, "fs_args", where), where),
        name=name,
    )


def _mapping(entry: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = entry.get(key) or {}
    if not isinstance(value, Mapping):
        raise DatasetError(f"{where}: {key} must be a mapping, got {value!r}")
    return dict(value)


def _flag(entry: Mapping[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise DatasetError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _storage_options(fs_args: dict[str, Any], where: str) -> dict[str, Any]:
    """Kedro's ``fs_args`` without ``open_args_load``/``open_args_save``: we open files in
    binary mode ourselves, so those may only say ``mode``."""
    for key in ("open_args_load", "open_args_save"):
        extra = set(fs_args.pop(key, None) or {}) - {"mode"}
        if extra:
            raise DatasetError(
                f"{where}: fs_args.{key} may only give 'mode' here (files are opened in "
                f"binary mode); move {', '.join(sorted(extra))} to "
                f"{'load_args' if key.endswith('load') else 'save_args'}"
            )
    return fs_args


def _refuse_templates(value: Any, where: str) -> None:
    if isinstance(value, str) and "${" in value:
        raise DatasetError(
            f"{where}: {value!r} uses ${{...}} templating, which is not supported; write "
            "the value out"
        )
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_templates(item, where)
    elif isinstance(value, list):
        for item in value:
            _refuse_templates(item, where)

"""Declare: datasets in pipelines, as the sources and outputs of tasks.

* ``pipeline.dataset("companies", "data/01_raw/companies.csv")`` declares a **source task**
  named ``companies`` whose function, :class:`LoadDataset`, loads the dataset (it travels to
  the workers by value). Tasks use it with ``depends_on=["companies"]`` like any task. Its
  cache key is the dataset's identity (URL, format, arguments) and the fingerprint of its
  files, taken when a run is planned.
* ``@pipeline.task(..., save_to=URL, versioned=...)`` declares a task's **output**: the
  result is written there after the task succeeds (:mod:`~.outputs`).
* An attached :class:`~.datasets.Catalog` (``pipeline.attach(catalog)``) does both, by name:
  an entry named like a task of the pipeline is that task's output (unless the task gives its
  own ``save_to``); an entry that tasks depend on and no task is named after is a source task.
  Other entries are left alone (a catalog often lists more than one pipeline uses).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

from .datasets import Catalog, Dataset, Fingerprint, describe_change
from .errors import DatasetError, PipelineDefinitionError
from .spec import Task

__all__ = [
    "LoadDataset",
    "PipelineData",
    "dataset_task",
    "output_of",
    "output_problem",
    "output_ref",
    "source_of",
    "with_catalog",
]


class LoadDataset:
    """The function of a dataset's source task: ``dataset.load()``. It takes no parameters,
    and travels to the workers by value (the dataset's spec, not its data)."""

    __slots__ = ("dataset",)

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __call__(self) -> Any:
        return self.dataset.load()

    def __reduce__(self) -> tuple[Any, ...]:
        return (LoadDataset, (self.dataset,))

    def __repr__(self) -> str:
        return f"LoadDataset({self.dataset!r})"


def dataset_task(
    name: str,
    url: str | Dataset,
    *,
    format: str | None,
    load_args: Mapping[str, Any],
    lazy: bool = False,
) -> Task:
    """The source task ``name`` of the dataset at ``url`` (or the :class:`Dataset` given)."""
    if isinstance(url, Dataset):
        if format is not None or load_args or lazy:
            raise PipelineDefinitionError(
                f"dataset {name!r}: give format, lazy and load arguments to the Dataset "
                "itself, not beside it"
            )
        dataset = url if url.name else _named(url, name)
    else:
        dataset = Dataset(url, format=format, load_args=dict(load_args), name=name, lazy=lazy)
    return Task(name=name, func=LoadDataset(dataset), description=f"loads {dataset!r}")


def _named(dataset: Dataset, name: str) -> Dataset:
    return dataclasses.replace(dataset, name=name)


def source_of(spec: Task) -> Dataset | None:
    """The dataset a source task loads, or ``None`` for other tasks."""
    func = spec.func
    return func.dataset if type(func) is LoadDataset else None


def output_of(spec: Task, catalog: Catalog | None) -> Dataset | None:
    """Where ``spec``'s result is written after it succeeds: its ``save_to``, else the
    catalog's entry of its name (see the module docstring), else nowhere."""
    if isinstance(spec.save_to, str):  # (by output: its output tasks have one each)
        return Dataset(spec.save_to, versioned=spec.versioned, name=spec.name)
    if catalog is not None and spec.name in catalog and source_of(spec) is None:
        return catalog[spec.name]
    return None


def with_catalog(specs: Mapping[str, Task], catalog: Catalog) -> dict[str, Task]:
    """``specs`` and a source task for each catalog entry that tasks depend on and no task
    is named after."""
    merged = dict(specs)
    for spec in specs.values():
        for dep in spec.depends_on:
            if dep not in merged and dep in catalog:
                merged[dep] = dataset_task(dep, catalog[dep], format=None, load_args={})
    return merged


# -- saved outputs in the cache ----------------------------------------------------------------
# A task with an output and a cache key keeps, as its cache entry, not its value but where the
# value was written: the version and the fingerprint of what was written. While the output
# still has that fingerprint, the task is cached from there.

_REF = "xlibrary.output"


def output_ref(dataset: Dataset, version: str | None) -> dict[str, Any]:
    """The cache entry of an output just written (``version``: a versioned one's)."""
    found = dataset.fingerprint(version=version)
    return {_REF: 1, "version": version, "fingerprint": found.to_dict()}


def output_problem(dataset: Dataset, ref: object) -> str | None:
    """Why the output an entry ``ref`` points at cannot stand for the task's result now, or
    ``None`` when it is as it was written."""
    if not isinstance(ref, Mapping) or ref.get(_REF) != 1:
        return "its cache entry is not one of a saved output"
    version = ref.get("version")
    try:
        now = dataset.fingerprint(version=version)
    except DatasetError as exc:
        return f"its saved output is gone ({exc})"
    old = Fingerprint.from_dict(ref["fingerprint"])
    if old.token == now.token:
        return None
    return f"its saved output changed since it was written: {describe_change(old, now)}"


class PipelineData:
    """The data a :class:`~.pipeline.Pipeline` declares besides its tasks: parameter values,
    datasets and a catalog."""

    name: str
    _version: int
    _params: dict[str, Any]
    _catalog: Catalog | None

    @abc.abstractmethod
    def add(self, task: Task) -> Task:
        """Add a task spec: :meth:`~.pipeline.Pipeline.add`."""

    def dataset(
        self,
        name: str,
        url: str | Dataset,
        *,
        format: str | None = None,
        lazy: bool = False,
        **load_args: Any,
    ) -> Dataset:
        """Declare a source task ``name`` that loads the dataset at ``url`` (a path or any
        fsspec URL; a glob loads every match as one table) with pandas, in the ``format`` of
        its extension unless given; ``load_args`` go to the reader. With ``lazy=True`` it
        loads as a Dask collection (``dask.dataframe.read_parquet``, ``read_csv``, ...,
        ``dask.array.from_zarr``) whose partitions the workers read. Tasks use it with
        ``depends_on=[name]``; a changed file changes their cache keys. ``url`` may be a
        :class:`~xlibrary.pipeline.datasets.Dataset`. Returns the dataset::

            pipeline.dataset("companies", "data/01_raw/companies.csv")
            pipeline.dataset("trips", "s3://bucket/trips/*.parquet", lazy=True)
        """
        spec = self.add(dataset_task(name, url, format=format, lazy=lazy, load_args=load_args))
        dataset = source_of(spec)
        assert dataset is not None
        return dataset

    def attach(self, catalog: Catalog | Mapping[str, Any]) -> Catalog:
        """Use ``catalog`` (``Catalog.from_yaml("conf/base/catalog.yml")``, or a mapping of
        Kedro entries) by name: an entry named like a task is that task's output (unless it
        has ``save_to``); an entry tasks depend on, and no task is named after, is a source
        task (see the module docstring). Returns the catalog."""
        self._catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
        self._version += 1
        return self._catalog

    @property
    def catalog(self) -> Catalog | None:
        """The catalog attached with :meth:`attach`, if any."""
        return self._catalog

    @property
    def params(self) -> Mapping[str, Any]:
        """Parameter values given with ``Pipeline(name, params=...)``, over those of included
        pipelines (``"<namespace>.<name>"``: :meth:`include`); runs may override them."""
        included: Mapping[str, Any] = getattr(self, "included_params", {})
        return {**included, **self._params}

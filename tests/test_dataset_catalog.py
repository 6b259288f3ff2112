"""A Kedro catalog.yml loads as it is: the pandas dataset types, their arguments and
versioning; what is not supported is an error that says so."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from xlibrary.pipeline.datasets import Catalog, Dataset
from xlibrary.pipeline.errors import DatasetError, UnknownDatasetError

FRAME = pd.DataFrame({"id": [1, 2], "name": ["a", "b"]})

KEDRO_CATALOG = """
    # conf/base/catalog.yml, as the spaceflights starter writes it
    _csv: &csv
      type: pandas.CSVDataset

    companies:
      <<: *csv
      filepath: data/01_raw/companies.csv
      load_args:
        sep: ";"
      save_args:
        sep: ";"

    reviews:
      type: kedro_datasets.pandas.CSVDataSet   # the older spelling, fully qualified
      filepath: data/01_raw/reviews.csv
      layer: raw                               # Kedro 0.18's place for the layer

    shuttles:
      type: pandas.ExcelDataset
      filepath: data/01_raw/shuttles.xlsx
      load_args:
        engine: openpyxl

    preprocessed:
      type: pandas.ParquetDataset
      filepath: data/02_intermediate/preprocessed.parquet
      versioned: true
      metadata:
        kedro-viz:
          layer: intermediate

    features:
      type: pandas.JSONDataset
      filepath: data/04_feature/features.json
      save_args:
        orient: records
      load_args:
        orient: records

    regressor:
      type: pickle.PickleDataset
      filepath: data/06_models/regressor.pickle
      versioned: true
      backend: pickle

    events:
      type: dask.ParquetDataset
      filepath: data/01_raw/events.parquet
"""


def _catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "catalog.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.skipif(
    importlib.util.find_spec("openpyxl") is None,
    reason="openpyxl (the datasets extra) is not installed",
)
def test_a_kedro_catalog_with_the_five_types_loads_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths are from the project's root, as in Kedro
    catalog = Catalog.from_yaml(_catalog(tmp_path, KEDRO_CATALOG))
    assert sorted(catalog) == [
        "companies",
        "events",
        "features",
        "preprocessed",
        "regressor",
        "reviews",
        "shuttles",
    ]
    assert "_csv" not in catalog
    companies = catalog["companies"]
    assert companies.name == "companies" and companies.format == "csv"
    assert companies.url == str(tmp_path / "data/01_raw/companies.csv")
    assert companies.load_args == {"sep": ";"}
    assert catalog["reviews"].format == "csv"
    assert catalog["shuttles"].format == "xlsx"
    assert catalog["preprocessed"].versioned and catalog["preprocessed"].format == "parquet"
    assert catalog["features"].format == "json"
    assert catalog["regressor"].format == "pickle" and catalog["regressor"].versioned
    assert catalog["events"].lazy

    for name in ("companies", "reviews", "shuttles", "preprocessed", "features"):
        catalog.save(name, FRAME)
        pd.testing.assert_frame_equal(catalog.load(name), FRAME)
    assert (tmp_path / "data/01_raw/companies.csv").read_text().startswith("id;name\n1;a")
    catalog.save("regressor", {"coef": [1.0, 2.0]})
    assert catalog.load("regressor") == {"coef": [1.0, 2.0]}
    assert len(catalog["regressor"].versions()) == 1


def test_an_unknown_type_names_the_supported_ones(tmp_path: Path) -> None:
    path = _catalog(
        tmp_path,
        """
        scores:
          type: pandas.SQLTableDataset
          table_name: scores
        """,
    )
    with pytest.raises(DatasetError) as info:
        Catalog.from_yaml(path)
    message = str(info.value)
    assert "catalog entry 'scores': unknown dataset type 'pandas.SQLTableDataset'" in message
    for supported in (
        "pandas.CSVDataset",
        "pandas.ParquetDataset",
        "pandas.ExcelDataset",
        "pandas.JSONDataset",
        "pickle.PickleDataset",
    ):
        assert supported in message
    with pytest.raises(DatasetError, match=r"did you mean 'pandas\.CSVDataset'\?"):
        Catalog({"x": {"type": "pandas.CSVDatset", "filepath": "x.csv"}})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"type": "pandas.CSVDataset", "filepath": "s3://b/x.csv", "credentials": "dev_s3"},
            r"'credentials' are not supported; give the file system's options in fs_args",
        ),
        (
            {"type": "pandas.CSVDataset", "filepath": "${base}/x.csv"},
            r"\$\{\.\.\.\} templating, which is not supported",
        ),
        ({"type": "pandas.CSVDataset", "filpath": "x.csv"}, r"did you mean 'filepath'\?"),
        ({"type": "pandas.CSVDataset"}, r"needs a 'filepath'"),
        ({"type": "pickle.PickleDataset", "filepath": "m.pkl", "backend": "joblib"}, "joblib"),
        (
            {
                "type": "pandas.CSVDataset",
                "filepath": "x.csv",
                "fs_args": {"open_args_load": {"encoding": "latin-1"}},
            },
            r"move encoding to load_args",
        ),
        ({"type": "pandas.CSVDataset", "filepath": "x.csv", "versioned": "yes"}, "true or false"),
    ],
)
def test_what_is_not_supported_says_so(entry: dict[str, object], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        Catalog({"companies": entry})


def test_a_dataset_factory_is_refused() -> None:
    with pytest.raises(DatasetError, match="dataset factories"):
        Catalog({"{name}_csv": {"type": "pandas.CSVDataset", "filepath": "{name}.csv"}})


def test_fs_args_become_storage_options_and_mode_is_accepted() -> None:
    catalog = Catalog(
        {
            "boats": {
                "type": "pandas.CSVDataset",
                "filepath": "memory://catalog/boats.csv.gz",
                "fs_args": {"open_args_load": {"mode": "rb"}, "skip_instance_cache": True},
            }
        }
    )
    assert catalog["boats"].storage_options == {"skip_instance_cache": True}
    catalog.save("boats", FRAME)
    pd.testing.assert_frame_equal(catalog.load("boats"), FRAME)


def test_a_missing_name_is_a_key_error_with_a_hint() -> None:
    catalog = Catalog({"companies": Dataset("memory://catalog/companies.csv")})
    assert catalog["companies"].name == "companies"
    with pytest.raises(UnknownDatasetError, match=r"no dataset 'companis'; did you mean"):
        catalog["companis"]
    with pytest.raises(KeyError):
        catalog["companis"]
    assert catalog.get("nothing") is None
    assert "companies" in catalog and "nothing" not in catalog


def test_a_bad_catalog_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no catalog file at"):
        Catalog.from_yaml(tmp_path / "missing.yml")
    with pytest.raises(DatasetError, match="is not valid YAML"):
        Catalog.from_yaml(_catalog(tmp_path, "a: [b"))
    with pytest.raises(DatasetError, match="must map dataset names to entries"):
        Catalog.from_yaml(_catalog(tmp_path, "- a\n- b\n"))
    assert len(Catalog.from_yaml(_catalog(tmp_path, "# nothing yet\n"))) == 0

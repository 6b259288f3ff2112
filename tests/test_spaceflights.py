"""The Kedro "spaceflights" shape, ported node for node, with data files the test writes: a
Kedro catalog.yml (CSV, Excel, parquet and a versioned pickle) and parameters.yml.

With caching on, a run never returns a stale value: change a CSV and the dataset and
everything downstream of it recompute; change a parameter and the tasks that use it and
their dependants recompute while the others stay cached; change nothing and nothing runs.
Every cached answer is checked against a run without any cache.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from xlibrary.pipeline import Catalog, Pipeline, PipelineManager, PipelineResult

pytest.importorskip("openpyxl")

FEATURES = [
    "engines",
    "passenger_capacity",
    "crew",
    "d_check_complete",
    "moon_clearance_complete",
    "iata_approved",
    "company_rating",
    "review_scores_rating",
]


def write_data(root: Path, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    raw = root / "data" / "01_raw"
    raw.mkdir(parents=True, exist_ok=True)
    companies = pd.DataFrame(
        {
            "id": range(12),
            "company_rating": [f"{r}%" for r in rng.integers(40, 100, 12)],
            "iata_approved": rng.choice(["t", "f"], 12),
        }
    )
    companies.to_csv(raw / "companies.csv", index=False)
    shuttles = pd.DataFrame(
        {
            "id": range(60),
            "company_id": rng.integers(0, 12, 60),
            "engines": rng.integers(1, 5, 60),
            "passenger_capacity": rng.integers(2, 9, 60),
            "crew": rng.integers(1, 6, 60),
            "d_check_complete": rng.choice(["t", "f"], 60),
            "moon_clearance_complete": rng.choice(["t", "f"], 60),
        }
    )
    shuttles["price"] = [
        f"${p:,.1f}"
        for p in 800
        + 150 * shuttles["engines"]
        + 40 * shuttles["passenger_capacity"]
        + rng.normal(0, 60, 60)
    ]
    shuttles.to_excel(raw / "shuttles.xlsx", index=False)
    reviews = pd.DataFrame(
        {"shuttle_id": range(60), "review_scores_rating": rng.integers(60, 100, 60)}
    )
    reviews.to_csv(raw / "reviews.csv", index=False)
    write_catalog(root)
    write_params(root, test_size=0.2)


def write_catalog(root: Path) -> None:
    raw = root / "data" / "01_raw"
    catalog = {
        "companies": {"type": "pandas.CSVDataset", "filepath": str(raw / "companies.csv")},
        "reviews": {"type": "pandas.CSVDataset", "filepath": str(raw / "reviews.csv")},
        "shuttles": {"type": "pandas.ExcelDataset", "filepath": str(raw / "shuttles.xlsx")},
        "preprocessed_companies": {
            "type": "pandas.ParquetDataset",
            "filepath": str(root / "data/02_intermediate/preprocessed_companies.parquet"),
        },
        "preprocessed_shuttles": {
            "type": "pandas.ParquetDataset",
            "filepath": str(root / "data/02_intermediate/preprocessed_shuttles.parquet"),
        },
        "model_input_table": {
            "type": "pandas.ParquetDataset",
            "filepath": str(root / "data/03_primary/model_input_table.parquet"),
        },
        "regressor": {
            "type": "pickle.PickleDataset",
            "filepath": str(root / "data/06_models/regressor.pickle"),
            "versioned": True,
        },
    }
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf" / "catalog.yml").write_text(yaml.safe_dump(catalog))


def write_params(root: Path, **changes: Any) -> None:
    params = {"test_size": 0.2, "random_state": 3, "features": FEATURES, **changes}
    (root / "conf" / "parameters.yml").write_text(yaml.safe_dump(params))


def params_of(root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((root / "conf" / "parameters.yml").read_text())
    return loaded


def spaceflights(root: Path) -> Pipeline:
    p = Pipeline("spaceflights")
    p.attach(Catalog.from_yaml(root / "conf" / "catalog.yml"))

    def _is_true(column: pd.Series) -> pd.Series:
        return column == "t"

    @p.task("preprocessed_companies", depends_on=["companies"])
    def preprocess_companies(companies: pd.DataFrame) -> pd.DataFrame:
        companies = companies.copy()
        companies["iata_approved"] = _is_true(companies["iata_approved"])
        companies["company_rating"] = (
            companies["company_rating"].str.replace("%", "").astype(float) / 100
        )
        return companies

    @p.task("preprocessed_shuttles", depends_on=["shuttles"])
    def preprocess_shuttles(shuttles: pd.DataFrame) -> pd.DataFrame:
        shuttles = shuttles.copy()
        for column in ("d_check_complete", "moon_clearance_complete"):
            shuttles[column] = _is_true(shuttles[column])
        shuttles["price"] = (
            shuttles["price"].str.replace("$", "").str.replace(",", "").astype(float)
        )
        return shuttles

    @p.task(
        "model_input_table",
        depends_on=["preprocessed_shuttles", "preprocessed_companies", "reviews"],
    )
    def create_model_input_table(
        shuttles: pd.DataFrame, companies: pd.DataFrame, reviews: pd.DataFrame
    ) -> pd.DataFrame:
        table = shuttles.merge(reviews, left_on="id", right_on="shuttle_id")
        table = table.merge(companies, left_on="company_id", right_on="id")
        return table.dropna().reset_index(drop=True)

    @p.task("split", depends_on=["model_input_table"])
    def split_data(
        data: pd.DataFrame, *, test_size: float = 0.2, random_state: int = 3, features: list[str]
    ) -> dict[str, Any]:
        order = np.random.default_rng(random_state).permutation(len(data))
        cut = round(len(data) * (1 - test_size))
        x = data[features].astype(float).to_numpy()
        y = data["price"].to_numpy()
        train, test = order[:cut], order[cut:]
        return {"X_train": x[train], "X_test": x[test], "y_train": y[train], "y_test": y[test]}

    @p.task("regressor", depends_on=["split"])
    def train_model(parts: dict[str, Any]) -> np.ndarray:
        x = np.column_stack([parts["X_train"], np.ones(len(parts["X_train"]))])
        coefficients, *_ = np.linalg.lstsq(x, parts["y_train"], rcond=None)
        return coefficients

    @p.task("score", depends_on=["regressor", "split"])
    def evaluate_model(coefficients: np.ndarray, parts: dict[str, Any]) -> float:
        x = np.column_stack([parts["X_test"], np.ones(len(parts["X_test"]))])
        predicted = x @ coefficients
        y = parts["y_test"]
        return float(1 - ((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum())

    return p


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_data(tmp_path)
    return tmp_path


def uncached_score(root: Path) -> float:
    """The score of a run without any cache, on a copy of the project's raw data."""
    fresh = root / f"fresh-{time.monotonic_ns()}"
    shutil.copytree(root / "data" / "01_raw", fresh / "data" / "01_raw")
    write_catalog(fresh)
    with PipelineManager(
        {"store": {"url": str(fresh / "store")}, "caching": {"enabled": False}}
    ) as pm:
        result = pm.execute_pipeline(spaceflights(fresh), params=params_of(root))
    assert result.success, result.error
    return float(result.final_result)


def ran(result: PipelineResult) -> set[str]:
    return {name for name, status in result.states.items() if status == "succeeded"}


@pytest.fixture
def cached_pm(project: Path) -> Iterator[PipelineManager]:
    config = {"store": {"url": str(project / "store")}, "caching": {"cache_results": True}}
    with PipelineManager(config) as pm:
        yield pm


def test_spaceflights_never_returns_a_stale_score(
    project: Path, cached_pm: PipelineManager
) -> None:
    p = spaceflights(project)
    first = cached_pm.execute_pipeline(p, params=params_of(project))
    assert first.success, first.error
    assert first.final_result == pytest.approx(uncached_score(project))
    assert (project / "data/03_primary/model_input_table.parquet").exists()
    assert len(list((project / "data/06_models/regressor.pickle").iterdir())) == 1

    # unchanged: nothing runs, the score comes from the cache
    same = cached_pm.execute_pipeline(p, params=params_of(project))
    assert ran(same) == set()
    assert same.states["score"] == "cached"
    assert same.final_result == first.final_result

    # a parameter changes: the tasks using it and their dependants recompute
    write_params(project, test_size=0.3)
    explained = cached_pm.explain_cache(p, params=params_of(project))
    assert "test_size: 0.2 → 0.3" in explained["split"].reason
    changed = cached_pm.execute_pipeline(p, params=params_of(project))
    assert ran(changed) == {"split", "regressor", "score"}
    assert changed.states["model_input_table"] == "cached"
    assert changed.final_result == pytest.approx(uncached_score(project))
    assert changed.final_result != pytest.approx(first.final_result)

    # a file changes: the dataset and everything downstream of it recompute
    time.sleep(0.01)
    companies = pd.read_csv(project / "data/01_raw/companies.csv")
    companies.loc[0, "company_rating"] = "1%"
    companies.loc[1:3, "iata_approved"] = "t"
    companies.to_csv(project / "data/01_raw/companies.csv", index=False)
    explained = cached_pm.explain_cache(p, params=params_of(project))
    assert "companies.csv changed" in explained["preprocessed_companies"].reason
    edited = cached_pm.execute_pipeline(p, params=params_of(project))
    assert ran(edited) == {
        "companies",
        "reviews",
        "preprocessed_companies",
        "model_input_table",
        "split",
        "regressor",
        "score",
    }
    assert edited.states["preprocessed_shuttles"] == "cached"  # from its parquet output
    assert edited.tasks["preprocessed_shuttles"].source.startswith("dataset:")
    assert edited.states["shuttles"] == "skipped"
    assert edited.final_result == pytest.approx(uncached_score(project))

    again = cached_pm.execute_pipeline(p, params=params_of(project))
    assert ran(again) == set() and again.final_result == edited.final_result
    assert len(list((project / "data/06_models/regressor.pickle").iterdir())) == 3


def test_spaceflights_on_a_local_cluster(project: Path) -> None:
    """Parameters reach tasks on worker processes, the outputs are written there, and the
    fingerprints are taken on the client: a changed file is seen by the next run."""
    config = {
        "distributed_mode": True,
        "worker_nodes": 2,
        "store": {"url": str(project / "store")},
        "caching": {"cache_results": True},
    }
    expected = uncached_score(project)
    with PipelineManager(config) as pm:
        p = spaceflights(project)
        first = pm.execute_pipeline(p, params=params_of(project))
        assert first.success, first.error
        assert first.final_result == pytest.approx(expected)
        assert pm.execute_pipeline(p, params=params_of(project)).states["score"] == "cached"
        time.sleep(0.01)
        reviews = pd.read_csv(project / "data/01_raw/reviews.csv")
        reviews["review_scores_rating"] = reviews["review_scores_rating"][::-1].to_numpy()
        reviews.to_csv(project / "data/01_raw/reviews.csv", index=False)
        edited = pm.execute_pipeline(p, params=params_of(project))
        assert "model_input_table" in ran(edited) and "preprocessed_companies" not in ran(edited)
    assert edited.final_result == pytest.approx(uncached_score(project))

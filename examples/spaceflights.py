"""Composing and selecting, built like Kedro's spaceflights project.

Three sub-pipelines, each declared on its own: ``data_processing`` cleans the companies and
shuttles and joins them with the reviews; ``data_science`` splits the model input (four named
outputs), trains a price model and evaluates it; ``reporting`` summarises the shuttles.
``data_science`` and ``reporting`` depend on tasks of ``data_processing`` by name; composed,
the three are one pipeline. Then part of it runs: a targeted run, a run from a middle task
(its inputs from the latest run's saved results) and a run of the tasks tagged ``reporting``.

    python examples/spaceflights.py
    xlibrary-pipeline run examples/spaceflights.py:spaceflights --target evaluate_model
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xlibrary.pipeline import Pipeline, PipelineManager

# Results are saved so that a later run can start from a middle task; reports go through a
# pool of one place (say, one database connection).
pm = PipelineManager({"save_intermediate_results": True, "pools": {"warehouse": 1}})

# -- data_processing ---------------------------------------------------------------------------
data_processing = Pipeline("data_processing")


@data_processing.task("companies", tags=["processing"])
def companies() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "id": range(40),
            "company_rating": [f"{r}%" for r in rng.integers(50, 100, 40)],
            "iata_approved": rng.choice(["t", "f"], 40),
        }
    )


@data_processing.task("shuttles", tags=["processing"])
def shuttles() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return pd.DataFrame(
        {
            "id": range(200),
            "company_id": rng.integers(0, 40, 200),
            "shuttle_type": rng.choice(["Type V5", "Type F5", "Type A3"], 200),
            "passenger_capacity": rng.integers(2, 10, 200),
            "engines": rng.integers(1, 4, 200),
            "price": [f"${p:,}" for p in rng.integers(1_000, 9_000, 200)],
        }
    )


@data_processing.task("preprocess_companies", depends_on=["companies"], tags=["processing"])
def preprocess_companies(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["company_rating"] = out["company_rating"].str.rstrip("%").astype(float) / 100
    out["iata_approved"] = out["iata_approved"] == "t"
    return out


@data_processing.task("preprocess_shuttles", depends_on=["shuttles"], tags=["processing"])
def preprocess_shuttles(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["price"] = out["price"].str.replace("[$,]", "", regex=True).astype(float)
    return out


@data_processing.task(
    "model_input_table",
    depends_on=["preprocess_shuttles", "preprocess_companies"],
    tags=["processing"],
)
def model_input_table(shuttles: pd.DataFrame, companies: pd.DataFrame) -> pd.DataFrame:
    table = shuttles.merge(companies, left_on="company_id", right_on="id")
    # a price the model can learn: capacity, engines and the company's rating drive it
    noise = np.random.default_rng(5).normal(0, 300, len(table))
    table["price"] = (
        500 * table["passenger_capacity"]
        + 800 * table["engines"]
        + 2000 * table["company_rating"]
        + noise
    )
    return table.dropna()


# -- data_science ------------------------------------------------------------------------------
data_science = Pipeline("data_science")
FEATURES = ["passenger_capacity", "engines", "company_rating"]


@data_science.task(
    "split_data",
    depends_on=["model_input_table"],  # a task of data_processing
    outputs=["X_train", "X_test", "y_train", "y_test"],
    tags=["science"],
)
def split_data(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    train = table.sample(frac=0.8, random_state=3)
    test = table.drop(train.index)
    return train[FEATURES], test[FEATURES], train["price"], test["price"]


@data_science.task(
    "train_model", depends_on=["split_data.X_train", "split_data.y_train"], tags=["science"]
)
def train_model(x: pd.DataFrame, y: pd.Series) -> np.ndarray:
    design = np.column_stack([x.to_numpy(), np.ones(len(x))])
    coefficients, *_ = np.linalg.lstsq(design, y.to_numpy(), rcond=None)
    return coefficients


@data_science.task(
    "evaluate_model",
    depends_on=["train_model", "split_data.X_test", "split_data.y_test"],
    tags=["science"],
)
def evaluate_model(coefficients: np.ndarray, x: pd.DataFrame, y: pd.Series) -> float:
    predicted = np.column_stack([x.to_numpy(), np.ones(len(x))]) @ coefficients
    residual = ((y.to_numpy() - predicted) ** 2).sum()
    total = ((y.to_numpy() - y.mean()) ** 2).sum()
    return round(float(1 - residual / total), 3)


# -- reporting ---------------------------------------------------------------------------------
reporting = Pipeline("reporting")


@reporting.task(
    "passenger_capacity_report",
    depends_on=["preprocess_shuttles"],
    tags=["reporting"],
    pool="warehouse",
)
def passenger_capacity_report(shuttles: pd.DataFrame) -> dict[str, float]:
    means = shuttles.groupby("shuttle_type")["passenger_capacity"].mean()
    return {name: round(float(value), 2) for name, value in means.items()}


@reporting.task(
    "price_report", depends_on=["model_input_table"], tags=["reporting"], pool="warehouse"
)
def price_report(table: pd.DataFrame) -> float:
    return round(float(table["price"].median()), 2)


# -- composed ----------------------------------------------------------------------------------
spaceflights = Pipeline("spaceflights").include(data_processing)
spaceflights.include(data_science).include(reporting)


def tasks_that(result, status: str) -> str:  # type: ignore[no-untyped-def]
    """The tasks of a run in ``status`` (output tasks, such as split_data.X_train, left out)."""
    return ", ".join(n for n, t in result.tasks.items() if t.status == status and "." not in n)


if __name__ == "__main__":
    full = pm.execute_pipeline(spaceflights)
    print(f"Full run: {full.status}, {len(full.tasks)} tasks, R2 {full.results['evaluate_model']}")

    targeted = pm.execute_pipeline(spaceflights, targets=["evaluate_model"])
    print(f"Targeted run of evaluate_model: R2 {targeted.final_result}")
    print(f"  not selected: {tasks_that(targeted, 'not_selected')}")

    middle = pm.execute_pipeline(spaceflights, from_tasks=["train_model"])
    print(f"Run from train_model: ran {tasks_that(middle, 'succeeded')}")
    runs = {full.run_id: "the full run", targeted.run_id: "the targeted run"}
    for name, task in middle.tasks.items():
        if task.source is not None and task.source.startswith("run:"):
            print(f"  input {name}: the result saved by {runs[task.source[4:]]}")

    reports = pm.execute_pipeline(spaceflights, tags=["reporting"])
    print(f"Reporting run: {reports.final_result}")
    pm.close()

"""Parameters and data: the Kedro "spaceflights" shape in miniature.

Two CSV datasets, a parameter (``test_size``) and two saved outputs (one versioned). With
``cache_results`` on, a run recomputes exactly what a changed file or parameter touches:

    python examples/params_and_data.py
    xlibrary-pipeline run examples/params_and_data.py --param test_size=0.3

The data lives in $XLIBRARY_EXAMPLE_DATA (default: <temp dir>/xlibrary-spaceflights), written
on first use.
"""

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xlibrary.pipeline import Pipeline, PipelineManager

DATA = Path(
    os.environ.get("XLIBRARY_EXAMPLE_DATA") or Path(tempfile.gettempdir()) / "xlibrary-spaceflights"
)


def write_raw_data(*, again: bool = False) -> None:
    """Write companies.csv and shuttles.csv (only when missing, unless ``again``)."""
    raw = DATA / "01_raw"
    if (raw / "shuttles.csv").exists() and not again:
        return
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {"id": range(10), "company_rating": [f"{r}%" for r in rng.integers(40, 100, 10)]}
    ).to_csv(raw / "companies.csv", index=False)
    engines = rng.integers(1, 5, 80)
    pd.DataFrame(
        {
            "company_id": rng.integers(0, 10, 80),
            "engines": engines,
            "price": 800 + 150 * engines + rng.normal(0, 60, 80),
        }
    ).to_csv(raw / "shuttles.csv", index=False)


write_raw_data()

pipeline = Pipeline("spaceflights", params={"random_state": 3})
pipeline.dataset("companies", str(DATA / "01_raw/companies.csv"))
pipeline.dataset("shuttles", str(DATA / "01_raw/shuttles.csv"))


@pipeline.task(
    "model_input_table",
    depends_on=["companies", "shuttles"],
    save_to=str(DATA / "03_primary/model_input_table.parquet"),
)
def create_model_input_table(companies, shuttles):
    companies = companies.assign(
        company_rating=companies["company_rating"].str.rstrip("%").astype(float) / 100
    )  # a new frame: the loaded one is shared with any other task using it
    return shuttles.merge(companies, left_on="company_id", right_on="id")


@pipeline.task("split", depends_on=["model_input_table"])
def split_data(table, *, test_size=0.2, random_state=0):
    order = np.random.default_rng(random_state).permutation(len(table))
    cut = round(len(table) * (1 - test_size))
    x = np.column_stack([table[["engines", "company_rating"]], np.ones(len(table))])
    y = table["price"].to_numpy()
    return {"train": (x[order[:cut]], y[order[:cut]]), "test": (x[order[cut:]], y[order[cut:]])}


@pipeline.task(
    "regressor",
    depends_on=["split"],
    save_to=str(DATA / "06_models/regressor.pickle"),
    versioned=True,
)
def train_model(parts):
    x, y = parts["train"]
    return np.linalg.lstsq(x, y, rcond=None)[0]


@pipeline.task("score", depends_on=["regressor", "split"])
def evaluate_model(coefficients, parts):
    x, y = parts["test"]
    return round(float(1 - ((y - x @ coefficients) ** 2).sum() / ((y - y.mean()) ** 2).sum()), 6)


pm = PipelineManager({"caching": {"cache_results": True}})


def ran(result):
    return [name for name, status in result.states.items() if status == "succeeded"] or "nothing"


if __name__ == "__main__":
    write_raw_data(again=True)
    pm.clear_cache(pipeline)  # start cold, so the first run computes

    first = pm.execute_pipeline(pipeline)
    print(f"first run:       ran {ran(first)}; R² {first.final_result}")
    same = pm.execute_pipeline(pipeline)
    print(f"nothing changed: ran {ran(same)}; R² {same.final_result}")

    print(f"  {pm.explain_cache(pipeline, params={'test_size': 0.3})['split']}")
    other = pm.execute_pipeline(pipeline, params={"test_size": 0.3})
    print(f"test_size 0.3:   ran {ran(other)}; R² {other.final_result}")

    time.sleep(0.01)  # a new modification time, whatever the file system's clock
    companies = pd.read_csv(DATA / "01_raw/companies.csv")
    companies.loc[0, "company_rating"] = "1%"
    companies.to_csv(DATA / "01_raw/companies.csv", index=False)
    print(f"  {pm.explain_cache(pipeline)['model_input_table']}")
    edited = pm.execute_pipeline(pipeline)
    print(f"companies edited: ran {ran(edited)}; R² {edited.final_result}")
    print(f"regressor versions: {len(list((DATA / '06_models/regressor.pickle').iterdir()))}")
    pm.close()

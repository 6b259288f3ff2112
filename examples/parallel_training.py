"""The guide's parallel model training: three models train at once (2, 3 and 4 s).

The run takes about 4 s, not 9 s: the three training tasks depend only on prepare_data, so
they run in parallel threads (time.sleep releases the GIL, as I/O and NumPy do).

    python examples/parallel_training.py
"""

import time

from xlibrary.pipeline import Pipeline, PipelineManager

pm = PipelineManager()

# Create pipeline with parallel tasks
ml_pipeline = Pipeline("machine_learning")


@ml_pipeline.task("prepare_data")
def prepare_data():
    """Prepare training data."""
    return {"features": [[1, 2], [3, 4]], "labels": [0, 1]}


# These tasks can run in parallel
@ml_pipeline.task("train_model_a", depends_on=["prepare_data"])
def train_random_forest(data_result):
    """Train random forest model."""
    print("Training Random Forest...")
    time.sleep(2)  # Simulate training
    return {"model": "random_forest", "accuracy": 0.85}


@ml_pipeline.task("train_model_b", depends_on=["prepare_data"])
def train_svm(data_result):
    """Train SVM model."""
    print("Training SVM...")
    time.sleep(3)  # Simulate training
    return {"model": "svm", "accuracy": 0.82}


@ml_pipeline.task("train_model_c", depends_on=["prepare_data"])
def train_neural_net(data_result):
    """Train neural network."""
    print("Training Neural Network...")
    time.sleep(4)  # Simulate training
    return {"model": "neural_net", "accuracy": 0.88}


@ml_pipeline.task(
    "select_best_model", depends_on=["train_model_a", "train_model_b", "train_model_c"]
)
def select_best_model(model_a, model_b, model_c):
    """Select best performing model."""
    models = [model_a, model_b, model_c]
    best = max(models, key=lambda x: x["accuracy"])
    return {"best_model": best["model"], "accuracy": best["accuracy"]}


if __name__ == "__main__":
    started = time.perf_counter()
    # Execute with parallel processing
    result = pm.execute_pipeline(ml_pipeline, parallel=True)
    print(f"Best model: {result.final_result['best_model']}")
    print(f"Took {time.perf_counter() - started:.1f}s (the three models trained in parallel)")

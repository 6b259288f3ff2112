"""The guide's basic pipeline: extract -> transform -> load.

xlibrary-pipeline run examples/etl.py      # or: python examples/etl.py
"""

from xlibrary.pipeline import Pipeline, PipelineManager

pm = PipelineManager()

# Create pipeline
data_pipeline = Pipeline("data_processing")


# Define tasks
@data_pipeline.task("extract")
def extract_data():
    """Extract data from source."""
    return {"data": [1, 2, 3, 4, 5], "timestamp": "2024-01-01"}


@data_pipeline.task("transform", depends_on=["extract"])
def transform_data(extract_result):
    """Transform extracted data."""
    data = extract_result["data"]
    transformed = [x * 2 for x in data]
    return {"transformed_data": transformed}


@data_pipeline.task("load", depends_on=["transform"])
def load_data(transform_result):
    """Load transformed data."""
    print(f"Loading: {transform_result['transformed_data']}")
    return {"status": "loaded", "count": len(transform_result["transformed_data"])}


if __name__ == "__main__":
    # Execute pipeline
    result = pm.execute_pipeline(data_pipeline)
    print(f"Pipeline completed: {result.success}")
    print(f"Final result: {result.final_result}")

"""The guide's debugging flow: a run fails, you read why, look at what finished, fix, retry.

The transform task fails while ``lookup.json`` is missing. The first run raises (debug mode)
and saves what finished; the example then writes the file (the "fix") and retries only the
failed task and what is downstream of it, from the saved results.

    python examples/debugging.py
"""

import json
import pathlib
import tempfile

from xlibrary.pipeline import Pipeline, PipelineExecutionError, PipelineManager

LOOKUP = pathlib.Path(tempfile.gettempdir()) / "xlibrary-example-lookup.json"

problematic_pipeline = Pipeline("problematic_etl")


@problematic_pipeline.task("extract")
def extract():
    return [{"id": 1, "country": "FR"}, {"id": 2, "country": "DE"}]


@problematic_pipeline.task("transform", depends_on=["extract"])
def transform(rows):
    names = json.loads(LOOKUP.read_text())  # FileNotFoundError until the fix
    return [{**row, "country": names[row["country"]]} for row in rows]


@problematic_pipeline.task("load", depends_on=["transform"])
def load(rows):
    return {"loaded": len(rows), "countries": sorted(r["country"] for r in rows)}


# Enable debugging
debug_pm = PipelineManager(
    {
        "debug_mode": True,
        "detailed_logging": True,
        "save_intermediate_results": True,
    }
)

if __name__ == "__main__":
    LOOKUP.unlink(missing_ok=True)
    try:
        result = debug_pm.execute_pipeline(problematic_pipeline)
    except PipelineExecutionError as e:
        # Get detailed error information
        error_details = debug_pm.get_error_details(e)

        print(f"Pipeline failed at task: {error_details.failed_task}")
        print(f"Error message: {error_details.error_message}")
        print(f"Stack trace: {error_details.stack_trace}")

        # Get intermediate results for debugging
        intermediate_results = debug_pm.get_intermediate_results(problematic_pipeline.name)
        print(f"Completed tasks: {list(intermediate_results.keys())}")

        # Fix the cause, then retry the failed task (and what is downstream of it)
        LOOKUP.write_text(json.dumps({"FR": "France", "DE": "Germany"}))
        result = debug_pm.retry_failed_task(
            pipeline_name=problematic_pipeline.name, task_name=error_details.failed_task
        )
        print(f"Retry succeeded: {result.success}; states: {dict(result.states)}")
        print(f"Final result: {result.final_result}")
    finally:
        LOOKUP.unlink(missing_ok=True)

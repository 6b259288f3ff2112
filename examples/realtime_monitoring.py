"""The guide's real-time monitoring: metrics logged inside a task, current metrics, trends.

python examples/realtime_monitoring.py
"""

import time

from xlibrary.pipeline import Pipeline, PipelineManager

# Enable comprehensive monitoring
monitoring_pm = PipelineManager(
    {
        "monitoring": {
            "real_time": True,
            "metrics": ["cpu", "memory", "task_duration", "queue_depth"],
            "alerts": {
                "task_timeout": 300,  # 5 minutes
                "memory_threshold": 0.9,
                "error_rate_threshold": 0.1,
            },
        }
    }
)

# Create monitored pipeline
monitored_pipeline = Pipeline("monitored_etl")


@monitored_pipeline.task("data_extraction")
@monitoring_pm.track_performance
def extract_with_monitoring():
    """Extract data with performance tracking."""
    start_time = time.time()

    # Simulate data extraction
    data = {"records": 10000}
    time.sleep(1)

    processing_time = time.time() - start_time
    monitoring_pm.log_metric("extraction_time", processing_time)
    monitoring_pm.log_metric("records_extracted", data["records"])

    return data


if __name__ == "__main__":
    # Execute with real-time monitoring
    result = monitoring_pm.execute_pipeline(monitored_pipeline)

    # Get monitoring dashboard
    dashboard = monitoring_pm.get_monitoring_dashboard()
    print(f"Current metrics: {dashboard.get_current_metrics()}")
    print(f"Performance trends: {dashboard.get_performance_trends()}")

"""The guide's batch processing pipeline with monitoring and Dask's dashboard.

Runs on an in-process dask.distributed cluster (dashboard=True), prints the performance
report, and leaves the dashboard up for a minute (its Pipelines page lists the run):

    python examples/batch_monitoring.py [--linger SECONDS]
"""

import sys
import time

from xlibrary.pipeline import Pipeline, PipelineManager

pm = PipelineManager()


def create_batch_processing_pipeline():
    """Create batch processing pipeline with monitoring."""

    batch_pipeline = Pipeline("daily_batch_processing")

    @batch_pipeline.task("initialize_batch")
    @batch_pipeline.monitor_performance
    def initialize_batch_job():
        """Initialize daily batch processing job."""
        batch_id = f"batch_{int(time.time())}"
        batch_date = time.strftime("%Y-%m-%d")

        return {"batch_id": batch_id, "batch_date": batch_date, "initialized_at": time.time()}

    @batch_pipeline.task("process_orders", depends_on=["initialize_batch"])
    @batch_pipeline.monitor_performance
    def process_daily_orders(batch_info):
        """Process daily orders batch."""
        batch_id = batch_info["batch_id"]

        # Simulate processing orders
        orders_processed = 0
        for i in range(10000):  # Process 10k orders
            # Simulate order processing
            orders_processed += 1

            if i % 1000 == 0:
                print(f"Processed {i} orders...")

        return {
            "batch_id": batch_id,
            "orders_processed": orders_processed,
            "processing_completed_at": time.time(),
        }

    @batch_pipeline.task("generate_reports", depends_on=["process_orders"])
    @batch_pipeline.monitor_performance
    def generate_daily_reports(processing_result):
        """Generate daily reports."""
        batch_id = processing_result["batch_id"]
        orders_count = processing_result["orders_processed"]

        # Simulate report generation
        reports = [
            {"name": "sales_summary", "orders": orders_count},
            {"name": "customer_analysis", "customers": orders_count // 2},
            {"name": "inventory_update", "items": orders_count * 3},
        ]

        return {
            "batch_id": batch_id,
            "reports_generated": reports,
            "reports_completed_at": time.time(),
        }

    @batch_pipeline.task("send_notifications", depends_on=["generate_reports"])
    def send_completion_notifications(reports_result):
        """Send batch completion notifications."""
        batch_id = reports_result["batch_id"]
        reports = reports_result["reports_generated"]

        # Simulate sending notifications
        notifications_sent = []
        stakeholders = ["manager@company.com", "analyst@company.com"]

        for stakeholder in stakeholders:
            notification = {
                "recipient": stakeholder,
                "subject": f"Daily Batch {batch_id} Completed",
                "reports_count": len(reports),
                "sent_at": time.time(),
            }
            notifications_sent.append(notification)

        return {
            "batch_id": batch_id,
            "notifications_sent": notifications_sent,
            "batch_completed_at": time.time(),
        }

    return batch_pipeline


# Execute with monitoring
batch_pipeline = create_batch_processing_pipeline()

if __name__ == "__main__":
    # Enable monitoring
    pm.enable_monitoring(
        metrics=["execution_time", "memory_usage", "task_status"],
        alerts=["task_failure", "long_execution"],
        dashboard=True,
    )

    result = pm.execute_pipeline(batch_pipeline)

    # Get performance metrics
    performance_report = pm.get_performance_report(batch_pipeline.name)
    print(f"Total execution time: {performance_report['total_time']:.2f}s")
    print(f"Memory peak: {performance_report['peak_memory']} MB")
    for name, task in performance_report["tasks"].items():
        print(f"  {name}: {task['duration']:.3f}s, peak {task['peak_memory_mb']} MB")
    print(f"Dashboard: {pm.dashboard_link}  (pipelines: {pm.dashboard_link[:-6]}pipelines)")

    linger = float(sys.argv[sys.argv.index("--linger") + 1]) if "--linger" in sys.argv else 0
    time.sleep(linger)
    pm.close()

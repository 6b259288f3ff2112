"""The guide's distributed execution: a large-scale ETL on a cluster of 3 workers.

Runs on a LocalCluster laid out as the guide's Kubernetes cluster (3 workers of 2 threads and
4Gi); with ``--kubernetes`` it asks dask-kubernetes' operator for that cluster instead (see
deploy/README.md).

    python examples/distributed_etl.py [--kubernetes]
"""

import sys

from xlibrary.pipeline import Pipeline, PipelineManager

# Configure distributed execution
distributed_config = {
    "cluster_mode": "kubernetes" if "--kubernetes" in sys.argv else "local",
    "worker_nodes": 3,
    "resource_allocation": {"cpu_per_worker": 2, "memory_per_worker": "4Gi"},
}

distributed_pm = PipelineManager(distributed_config)

# Create large-scale processing pipeline
big_data_pipeline = Pipeline("large_scale_etl")


@big_data_pipeline.task("partition_data")
def partition_large_dataset():
    """Partition large dataset for distributed processing."""
    # Simulate large dataset partitioning
    partitions = [{"partition_id": i, "data_size": "1GB"} for i in range(10)]
    return {"partitions": partitions}


@big_data_pipeline.task("process_partitions", depends_on=["partition_data"])
def process_partitions(partition_result):
    """Process data partitions in parallel across nodes."""
    partitions = partition_result["partitions"]

    # This will be distributed across worker nodes
    results = []
    for partition in partitions:
        # Simulate partition processing
        processed = {
            "partition_id": partition["partition_id"],
            "processed_records": 1000000,
            "processing_time": 120,
        }
        results.append(processed)

    return {"processed_partitions": results}


@big_data_pipeline.task("aggregate_results", depends_on=["process_partitions"])
def aggregate_results(processing_result):
    """Aggregate results from all partitions."""
    partitions = processing_result["processed_partitions"]
    total_records = sum(p["processed_records"] for p in partitions)
    total_time = max(p["processing_time"] for p in partitions)

    return {
        "total_records_processed": total_records,
        "total_processing_time": total_time,
        "throughput": total_records / total_time,
    }


if __name__ == "__main__":
    # Execute on distributed cluster
    result = distributed_pm.execute_distributed(big_data_pipeline)
    print(f"Processed {result.final_result['total_records_processed']} records")
    distributed_pm.close()

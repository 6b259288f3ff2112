"""The guide's stream processing: sensor readings -> DataProcessor x2 -> Aggregator -> sink.

By default the readings come from a generator and the averages go to the console, so it runs
anywhere. With ``--kafka HOST:PORT`` it runs as in the guide: Kafka topic ``sensor_data`` into
the PostgreSQL database ``analytics`` (table ``results``), until Ctrl-C.

    python examples/stream_processing.py [--kafka HOST:PORT]
"""

import random
import sys
import time

from xlibrary.pipeline import StreamPipeline, StreamTask

# Create streaming pipeline
stream_pipeline = StreamPipeline("real_time_analytics")


class DataProcessor(StreamTask):
    def process_batch(self, batch):
        """Process batch of streaming data."""
        processed = []
        for item in batch:
            # Example: calculate running average
            processed.append(
                {
                    "id": item.get("id"),
                    "value": item.get("value", 0) * 1.1,
                    "processed_at": time.time(),
                }
            )
        return processed


class Aggregator(StreamTask):
    def __init__(self):
        super().__init__()
        self.running_sum = 0
        self.count = 0

    def process_batch(self, batch):
        """Aggregate streaming data."""
        for item in batch:
            self.running_sum += item.get("value", 0)
            self.count += 1

        avg = self.running_sum / self.count if self.count > 0 else 0
        return [{"average": avg, "count": self.count}]


def readings(n):
    for i in range(n):
        yield {"id": i, "value": random.uniform(15.0, 25.0)}


if __name__ == "__main__":
    if "--kafka" in sys.argv:
        bootstrap = sys.argv[sys.argv.index("--kafka") + 1]
        stream_pipeline.add_source(
            "data_stream",
            {"type": "kafka", "topic": "sensor_data", "batch_size": 100,
             "bootstrap_servers": bootstrap},
        )  # fmt: skip
        sink = {"type": "database", "connection": "postgresql://localhost/analytics"}
    else:
        stream_pipeline.add_source("data_stream", readings(10_000))
        stream_pipeline.batch_size = 1000

        def sink(rows):
            for row in rows:
                print(f"average {row['average']:.3f} over {row['count']} readings")

    # Add processing stages
    stream_pipeline.add_stage(DataProcessor(), parallelism=2)
    stream_pipeline.add_stage(Aggregator(), parallelism=1)
    stream_pipeline.add_sink("results", sink)

    # Start stream processing
    metrics = stream_pipeline.start()
    print(f"{metrics['records_read']} readings at {metrics['throughput']:,.0f} rows/s out")

"""The guide's caching example: the second run takes the 5 s computation from the cache.

The guide keeps the cache in Redis (cache_type "redis", at redis://127.0.0.1:6379/0); pass
``--fsspec`` to keep it in the local store (./.xlibrary-pipeline) instead.

    python examples/caching.py [--fsspec]
"""

import sys
import time

from xlibrary.pipeline import PipelineManager, task

cache_type = "fsspec" if "--fsspec" in sys.argv else "redis"

# Configure caching
cached_pm = PipelineManager(
    {
        "caching": {
            "enabled": True,
            "cache_type": cache_type,
            "ttl": 3600,  # 1 hour
            "cache_results": True,
        }
    }
)


@cached_pm.pipeline("cached_pipeline")
def create_cached_pipeline():
    @task("expensive_computation")
    @cached_pm.cache_result(key="daily_computation", ttl=86400)
    def expensive_daily_computation():
        """Expensive computation that should be cached."""
        print("Performing expensive computation...")
        time.sleep(5)  # Simulate expensive work
        return {"result": "computed_value", "computed_at": time.time()}

    @task("use_cached_result", depends_on=["expensive_computation"])
    def use_cached_result(computation_result):
        """Use cached computation result."""
        return {"used_cached": True, "value": computation_result["result"]}


if __name__ == "__main__":
    cached_pm.clear_cache(create_cached_pipeline)  # start cold, so the first run computes

    # First execution - will compute
    result1 = cached_pm.execute_pipeline(create_cached_pipeline)
    print(f"first run:  {result1.duration:.2f}s {dict(result1.states)}")

    # Second execution - will use cache
    result2 = cached_pm.execute_pipeline(create_cached_pipeline)
    print(f"second run: {result2.duration:.2f}s {dict(result2.states)}")

    for why in cached_pm.explain_cache(create_cached_pipeline).values():
        print(f"  {why}")

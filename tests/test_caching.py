"""Result caching through the engine: keys, TTL, misses and why, pruning, both backends."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Calls
from xlibrary.pipeline import Pipeline, PipelineManager, TaskStatus, task


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def pm(store: str) -> Iterator[PipelineManager]:
    with PipelineManager({"store": {"url": store}}) as manager:
        yield manager


def test_explicit_key_in_either_decorator_order(pm: PipelineManager) -> None:
    calls = Calls()
    p = Pipeline("explicit")

    @p.task("below")
    @pm.cache_result(key="below-key", ttl=60)
    def below() -> int:
        calls("below")
        return 1

    @pm.cache_result(key="above-key")
    @p.task("above")
    def above() -> int:
        calls("above")
        return 2

    first = pm.execute_pipeline(p)
    second = pm.execute_pipeline(p)
    assert calls.counts == {"below": 1, "above": 1}
    assert first.states == {"below": "succeeded", "above": "succeeded"}
    assert second.states == {"below": "cached", "above": "cached"}
    assert second.results == {"below": 1, "above": 2}
    assert second.tasks["below"].source == "cache:below-key"
    record = pm.store.read_record("explicit", second.run_id)
    assert record.tasks["below"].status == "cached"
    assert record.tasks["below"].source == "cache:below-key"


def test_guide_example_second_run_skips_the_slow_function(pm: PipelineManager) -> None:
    calls = Calls()
    cached_pm = PipelineManager(
        {
            "store": {"url": pm.store.url},
            "caching": {"enabled": True, "ttl": 3600, "cache_results": True},
        }
    )

    @cached_pm.pipeline("cached_pipeline")
    def create_cached_pipeline() -> None:
        @task("expensive_computation")
        @cached_pm.cache_result(key="daily_computation", ttl=86400)
        def expensive_daily_computation() -> dict:
            calls("expensive")
            time.sleep(0.5)
            return {"result": "computed_value", "computed_at": time.time()}

        @task("use_cached_result", depends_on=["expensive_computation"])
        def use_cached_result(computation_result: dict) -> dict:
            calls("use")
            return {"used_cached": True, "value": computation_result["result"]}

    result1 = cached_pm.execute_pipeline(create_cached_pipeline)
    started = time.perf_counter()
    result2 = cached_pm.execute_pipeline(create_cached_pipeline)
    assert time.perf_counter() - started < 0.5
    assert calls.counts == {"expensive": 1, "use": 1}
    assert result2.final_result == result1.final_result
    assert result2.states == {"expensive_computation": "skipped", "use_cached_result": "cached"}
    assert "not needed" in result2.tasks["expensive_computation"].reason
    cached_pm.close()


def _derived(pm: PipelineManager, calls: Calls, factor: list[int], source: list[int]) -> Pipeline:
    p = Pipeline("derived")

    @p.task("extract")
    def extract() -> list[int]:
        calls("extract")
        return list(source)

    @p.task("scale", depends_on=["extract"])
    @pm.cache_result
    def scale(rows: list[int]) -> list[int]:
        calls("scale")
        return [r * factor[0] for r in rows]

    @p.task("total", depends_on=["scale"])
    @pm.cache_result
    def total(rows: list[int]) -> int:
        calls("total")
        return sum(rows)

    return p


def test_derived_keys_hit_when_nothing_changed(pm: PipelineManager) -> None:
    calls = Calls()
    p = _derived(pm, calls, [2], [1, 2, 3])
    assert pm.execute_pipeline(p).final_result == 12
    again = pm.execute_pipeline(p)
    assert again.final_result == 12
    # extract is not cached, so it runs; scale's inputs are the same, so it and total hit
    assert calls.counts == {"extract": 2, "scale": 1, "total": 1}
    assert again.states == {"extract": "succeeded", "scale": "cached", "total": "cached"}


def test_input_change_misses(pm: PipelineManager) -> None:
    calls = Calls()
    source = [1, 2, 3]
    p = _derived(pm, calls, [2], source)
    pm.execute_pipeline(p)
    source.append(4)
    result = pm.execute_pipeline(p)
    assert result.final_result == 20
    assert calls.counts == {"extract": 2, "scale": 2, "total": 2}


def test_code_change_misses_and_explain_says_why(pm: PipelineManager) -> None:
    calls = Calls()
    pm.execute_pipeline(_derived(pm, calls, [2], [1]))
    p = Pipeline("derived")
    p.task("extract")(lambda: [1])

    @p.task("scale", depends_on=["extract"])
    @pm.cache_result
    def scale(rows: list[int]) -> list[int]:
        return [r * 100 for r in rows]  # edited

    @p.task("total", depends_on=["scale"])
    @pm.cache_result
    def total(rows: list[int]) -> int:
        calls("total")
        return sum(rows)

    explained = pm.explain_cache(p)
    assert explained["extract"].status == "not cached"
    # scale's key needs extract's output, which is only known once extract runs
    assert explained["scale"].status == "unknown" and "'extract'" in explained["scale"].reason
    assert pm.execute_pipeline(p).final_result == 100


def test_explain_names_code_changes_and_expiry(pm: PipelineManager) -> None:
    def build(multiplier: int, ttl: float | None) -> Pipeline:
        p = Pipeline("explained")
        p.task("root")(pm.cache_result(key="root-key", ttl=ttl)(lambda: 3))

        if multiplier == 2:

            def times(x: int) -> int:
                return x * 2

        else:

            def times(x: int) -> int:
                return x * 3

        p.task("times", depends_on=["root"])(pm.cache_result(times))
        return p

    first = build(2, ttl=0.4)
    assert {k: v.status for k, v in pm.explain_cache(first).items()} == {
        "root": "miss",
        "times": "unknown",
    }
    pm.execute_pipeline(first)
    explained = pm.explain_cache(first)
    assert explained["root"].status == "hit" and not explained["root"].runs
    assert explained["times"].status == "hit"
    assert pm.explain_cache(build(3, ttl=0.4))["times"].reason == "code changed"
    time.sleep(0.5)
    expired = pm.explain_cache(first)
    assert expired["root"].reason == "expired"
    assert expired["times"].status == "unknown"


def test_ttl_expiry_recomputes(pm: PipelineManager) -> None:
    calls = Calls()
    p = Pipeline("ttl")
    p.task("t")(pm.cache_result(ttl=0.3)(lambda: calls("t") or "v"))
    pm.execute_pipeline(p)
    assert pm.execute_pipeline(p).states["t"] == "cached"
    time.sleep(0.4)
    assert pm.execute_pipeline(p).states["t"] == "succeeded"
    assert calls.counts == {"t": 2}


def test_a_hit_prunes_upstream_only_if_nothing_else_needs_it(pm: PipelineManager) -> None:
    calls = Calls()
    p = Pipeline("prune")
    p.task("source")(lambda: calls("source") or 5)
    p.task("cached", depends_on=["source"])(pm.cache_result(key="cached-k")(lambda x: x + 1))
    p.task("other", depends_on=["source"])(lambda x: x * 10)
    pm.execute_pipeline(p)
    again = pm.execute_pipeline(p)
    assert again.states["cached"] == "cached"
    assert again.states["source"] == "succeeded"  # "other" still needs it
    assert calls.counts == {"source": 2}
    assert again.final_result == {"cached": 6, "other": 50}


def test_caching_disabled_caches_nothing(store: str) -> None:
    calls = Calls()
    with PipelineManager({"store": {"url": store}, "caching": {"enabled": False}}) as pm:
        p = Pipeline("off")
        p.task("t")(pm.cache_result(key="k")(lambda: calls("t") or 1))
        pm.execute_pipeline(p)
        pm.execute_pipeline(p)
        assert pm.cache is None and pm.clear_cache() == 0
    assert calls.counts == {"t": 2}


def test_entry_corrupted_after_planning_is_recomputed(
    pm: PipelineManager, store: str, caplog
) -> None:
    calls = Calls()
    p = Pipeline("stale")
    p.task("source")(lambda: calls("source") or 2)
    p.task("double", depends_on=["source"])(
        pm.cache_result(key="dbl")(lambda x: calls("d") or x * 2)
    )
    pm.execute_pipeline(p)
    (path,) = list(Path(store).rglob("*.entry"))
    data = path.read_bytes()
    path.write_bytes(data[:-4] + b"XXXX")  # header intact, payload corrupt
    with caplog.at_level(logging.WARNING):
        result = pm.execute_pipeline(p)
    assert result.success and result.final_result == 4
    assert result.states == {"source": "succeeded", "double": "succeeded"}
    assert calls.counts == {"source": 2, "d": 2}
    assert "unusable" in caplog.text


def test_unhashable_input_runs_uncached_with_a_warning(pm: PipelineManager, caplog) -> None:
    p = Pipeline("unhashable")
    p.task("lock")(lambda: threading.Lock())
    p.task("use", depends_on=["lock"])(pm.cache_result(lambda lock: "ok"))
    with caplog.at_level(logging.WARNING):
        result = pm.execute_pipeline(p)
    assert result.final_result == "ok" and result.states["use"] == "succeeded"
    assert "cannot be hashed" in caplog.text


def test_unserializable_result_fails_naming_task_and_type(pm: PipelineManager) -> None:
    p = Pipeline("unserializable")
    p.task("lock")(pm.cache_result(key="lock")(lambda: threading.Lock()))
    result = pm.execute_pipeline(p)
    assert result.failed_task == "lock"
    assert "task 'lock' returned a _thread.lock that cannot be serialized" in str(result.error)


def test_clear_and_prune_through_the_manager(pm: PipelineManager) -> None:
    p = Pipeline("clearing")
    p.task("a")(pm.cache_result(key="a-k", ttl=0.2)(lambda: 1))
    p.task("b")(pm.cache_result(key="b-k")(lambda: 2))
    pm.execute_pipeline(p)
    time.sleep(0.3)
    assert pm.prune_cache() == 1
    assert pm.clear_cache(p, task="b") == 1
    assert pm.clear_cache() == 0


def test_redis_cache_shared_between_managers(redis_url: str, store: str) -> None:
    calls = Calls()
    config = {
        "store": {"url": store},
        "caching": {"cache_type": "redis", "redis_url": redis_url, "ttl": 60},
    }
    p = Pipeline("redis_shared")
    p.task("t")(
        PipelineManager.cache_result(PipelineManager(config), key="shared")(lambda: calls("t") or 7)
    )
    with PipelineManager(config) as one:
        assert one.execute_pipeline(p).states["t"] == "succeeded"
    with PipelineManager(config) as two:
        result = two.execute_pipeline(p)
        assert result.states["t"] == "cached" and result.final_result == 7
    assert calls.counts == {"t": 1}


def test_secret_from_the_environment_signs_entries(store: str, monkeypatch) -> None:
    monkeypatch.setenv("XLIBRARY_CACHE_SECRET", "from-env")
    with PipelineManager({"store": {"url": store}}) as pm:
        assert pm.cache is not None and pm.cache.secret == b"from-env"
        p = Pipeline("signed")
        p.task("t")(pm.cache_result(key="s")(lambda: 1))
        pm.execute_pipeline(p)
        assert pm.cache.lookup("s").header.hmac is not None
    monkeypatch.setenv("XLIBRARY_CACHE_SECRET", "another")
    with PipelineManager({"store": {"url": store}}) as other:
        assert other.execute_pipeline(p).states["t"] == "succeeded"  # refused, recomputed


def test_cache_on_a_local_cluster(store: str) -> None:
    calls_file = Path(store).parent / "calls.txt"
    p = Pipeline("cluster_cache")

    def expensive() -> int:
        with calls_file.open("a") as handle:
            handle.write("x")
        return 41

    with PipelineManager({"store": {"url": store}, "distributed_mode": True}) as pm:
        p.task("expensive")(pm.cache_result(key="cluster-k")(expensive))
        p.task("plus", depends_on=["expensive"])(lambda x: x + 1)
        assert pm.execute_pipeline(p).final_result == 42
        second = pm.execute_pipeline(p)
    assert second.final_result == 42 and second.states["expensive"] == TaskStatus.CACHED
    assert calls_file.read_text() == "x"


@pytest.mark.parametrize("backend", ["fsspec", "redis"])
def test_swapped_signed_entries_are_recomputed(backend: str, store: str, request) -> None:
    """Copying the signed entry of price_usd over price_eur must not serve USD as EUR."""
    caching: dict[str, object] = {"secret": "a long random string"}
    if backend == "redis":
        caching.update(cache_type="redis", redis_url=request.getfixturevalue("redis_url"))
    calls = Calls()
    with PipelineManager({"store": {"url": store}, "caching": caching}) as pm:
        p = Pipeline("prices")
        p.task("usd")(pm.cache_result(key="price_usd")(lambda: calls("usd") or 100.0))
        p.task("eur")(pm.cache_result(key="price_eur")(lambda: calls("eur") or 90.0))
        p.task("both", depends_on=["usd", "eur"])(lambda usd, eur: {"usd": usd, "eur": eur})
        assert pm.execute_pipeline(p).final_result == {"usd": 100.0, "eur": 90.0}
        assert pm.cache is not None
        backend_ = pm.cache.backend
        backend_.write("price_eur", *backend_.read("price_usd"), None)  # the swap
        second = pm.execute_pipeline(p)
    assert second.final_result == {"usd": 100.0, "eur": 90.0}
    assert second.states["usd"] == "cached" and second.states["eur"] == "succeeded"
    assert calls.counts == {"usd": 1, "eur": 2}


def _hung_cache_pipeline(pm: PipelineManager, calls: Calls) -> Pipeline:
    p = Pipeline("hung_cache")
    for name in ("a", "b", "c"):
        p.task(name)(pm.cache_result(key=f"hung-{name}")(lambda name=name: calls(name) or name))
    return p


def test_a_hung_redis_cache_is_skipped_after_a_few_failures(
    redis_server, store: str, caplog
) -> None:
    """SIGSTOP the Redis server: each operation times out quickly, and after
    ``failure_threshold`` of them the cache is skipped (one warning), not waited on."""
    caching = {
        "cache_type": "redis",
        "redis_url": redis_server.url,
        "redis_timeout": 0.3,
        "failure_threshold": 2,
        "failure_cooldown": 600,
    }
    calls = Calls()
    with PipelineManager({"store": {"url": store}, "caching": caching}) as pm:
        p = _hung_cache_pipeline(pm, calls)
        assert pm.execute_pipeline(p).success  # the entries exist
        redis_server.pause()
        with caplog.at_level(logging.WARNING):
            result = pm.execute_pipeline(p)
            again = pm.execute_pipeline(p)
    assert result.success and again.success
    assert set(result.states.values()) == {"succeeded"} == set(again.states.values())
    assert calls.counts == {"a": 3, "b": 3, "c": 3}
    assert caplog.text.count("tasks run without it") == 1  # the breaker's one warning
    timeouts = caplog.text.count("read the cache")  # every failure before the breaker opened
    assert 1 <= timeouts <= 2
    assert redis_server.PASSWORD not in caplog.text


def test_the_cache_is_tried_again_after_its_cooldown(redis_server, caplog) -> None:
    from xlibrary.pipeline.store import Cache
    from xlibrary.pipeline.store.redis import RedisCacheBackend

    cache = Cache(
        RedisCacheBackend(redis_server.url, timeout=0.2), failure_threshold=1, failure_cooldown=0.5
    )
    cache.save("k", 1)
    redis_server.pause()
    caplog.set_level(logging.INFO, logger="xlibrary")
    with pytest.raises(Exception, match=r"[Tt]imeout"):
        cache.load("k")  # the failure that opens the breaker is the caller's to report
    assert cache.load("k") is None and not cache.lookup("k").hit  # skipped: no waiting
    assert cache.lookup("k").reason.startswith("cache skipped")
    assert cache.save("k2", 2) is None  # not written, not waited for
    redis_server.resume()
    time.sleep(0.6)  # the cooldown
    assert cache.load("k")[1] == 1
    assert cache.save("k2", 2) is not None
    assert caplog.text.count("tasks run without it") == 1
    assert "answers again" in caplog.text

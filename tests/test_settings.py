"""Config: every key of the guide is accepted; bad keys and types fail with a clear error."""

from __future__ import annotations

import logging

import pytest

from xlibrary.pipeline import ConfigError, PipelineManager
from xlibrary.pipeline.settings import Settings, load_settings

# Every config dict that appears in the user guide, as written there.
GUIDE_CONFIGS = [
    {
        "distributed_mode": True,
        "auto_scaling": True,
        "monitoring_enabled": True,
        "fault_tolerance": {"max_retries": 3},
    },
    {
        "cluster_mode": "kubernetes",
        "worker_nodes": 3,
        "resource_allocation": {"cpu_per_worker": 2, "memory_per_worker": "4Gi"},
    },
    {
        "resource_optimization": True,
        "auto_scaling": True,
        "resource_limits": {
            "max_cpu_cores": 8,
            "max_memory_gb": 16,
            "optimization_strategy": "balanced",
        },
    },
    {"caching": {"enabled": True, "cache_type": "redis", "ttl": 3600, "cache_results": True}},
    {
        "monitoring": {
            "real_time": True,
            "metrics": ["cpu", "memory", "task_duration", "queue_depth"],
            "alerts": {"task_timeout": 300, "memory_threshold": 0.9, "error_rate_threshold": 0.1},
        }
    },
    {"debug_mode": True, "detailed_logging": True, "save_intermediate_results": True},
    {"interactive_mode": True, "display_progress": True, "inline_results": True},
]


@pytest.mark.parametrize("config", GUIDE_CONFIGS)
def test_every_guide_config_is_accepted(config: dict) -> None:
    settings = load_settings(config)
    assert isinstance(settings, Settings)


def test_values_are_typed() -> None:
    settings = load_settings(GUIDE_CONFIGS[0])
    assert settings.distributed_mode is True
    assert settings.fault_tolerance.max_retries == 3
    monitoring = load_settings(GUIDE_CONFIGS[4]).monitoring
    assert monitoring.metrics == ("cpu", "memory", "task_duration", "queue_depth")
    assert monitoring.alerts.memory_threshold == 0.9
    assert load_settings({"caching": {"ttl": 3600}}).caching.ttl == 3600.0


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        ({"distributed_mod": True}, ["'distributed_mod'", "did you mean 'distributed_mode'"]),
        (
            {"fault_tolerance": {"max_retrys": 3}},
            ["'fault_tolerance.max_retrys'", "did you mean 'fault_tolerance.max_retries'?"],
        ),
        (
            {"caching": {"cache_tpye": "redis"}},
            ["'caching.cache_tpye'", "did you mean 'caching.cache_type'?"],
        ),
        ({"zzz": 1}, ["unknown config key 'zzz'", "valid keys of the config"]),
    ],
)
def test_unknown_key_names_the_key_and_the_closest_one(config, fragments) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineManager(config)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"distributed_mode": "yes"}, "'distributed_mode' must be true or false, got str 'yes'"),
        ({"fault_tolerance": {"max_retries": 2.5}}, "must be a whole number"),
        ({"fault_tolerance": {"max_retries": True}}, "must be a whole number"),
        ({"fault_tolerance": 3}, "'fault_tolerance' must be a dict"),
        ({"fault_tolerance": {"max_retries": -1}}, "must be 0 or more"),
        ({"fault_tolerance": {"task_timeout": 0}}, "more than 0 seconds"),
        ({"caching": {"cache_type": "redsi"}}, "did you mean 'redis'"),
        ({"monitoring": {"metrics": "cpu"}}, "must be a list of one of 'cpu', 'memory'"),
        ({"worker_nodes": "3"}, "must be a whole number or null"),
        ({"scheduler_address": 8786}, "must be a string"),
    ],
)
def test_wrong_type_is_a_config_error(config, fragment) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(config)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a dict"):
        PipelineManager(["distributed_mode"])  # type: ignore[arg-type]


def test_every_guide_key_is_built_and_none_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="xlibrary.pipeline"):
        for config in GUIDE_CONFIGS:
            PipelineManager(config).close()
    assert [r.getMessage() for r in caplog.records] == []


def test_scheduler_address_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("XLIBRARY_SCHEDULER_ADDRESS", "tcp://10.1.2.3:8786")
    assert load_settings().scheduler_address == "tcp://10.1.2.3:8786"
    assert load_settings({"scheduler_address": "tcp://a:1"}).scheduler_address == "tcp://a:1"


@pytest.mark.parametrize(
    ("caching", "fragment"),
    [
        ({"redis_timeout": 0}, "'caching.redis_timeout' must be more than 0 seconds"),
        ({"failure_threshold": 0}, "'caching.failure_threshold' must be 1 or more"),
        ({"failure_cooldown": -1}, "'caching.failure_cooldown' must be 0 or more"),
    ],
)
def test_cache_failure_settings_are_checked(caching, fragment) -> None:
    assert load_settings({"caching": {"redis_timeout": 0.5}}).caching.redis_timeout == 0.5
    with pytest.raises(ConfigError) as info:
        load_settings({"caching": caching})
    assert fragment in str(info.value)

"""Config: every key of the guide is accepted; bad keys and types fail with a clear error."""

from __future__ import annotations

import logging

import pytest

from xlibrary.pipeline import ConfigError, Pipeline, PipelineManager
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
    "url",
    [
        "file:///etc/passwd",
        "ftp://hooks.example.com/alerts",
        "hooks.example.com/alerts",
        "http:///alerts",
        "https://hooks.example.com:port/alerts",
    ],
)
def test_webhook_url_must_be_http_or_https(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineManager({"monitoring": {"alerts": {"webhook_url": url}}})
    assert "'monitoring.alerts.webhook_url' must be an http:// or https:// URL" in str(info.value)


def test_webhook_settings_are_checked_and_shown_without_their_token() -> None:
    token_url = "htps://hooks.slack.com/services/T000/B000/SECRETTOKEN"  # a typo in the scheme
    with pytest.raises(ConfigError) as info:
        load_settings({"monitoring": {"alerts": {"webhook_url": token_url}}})
    message = str(info.value)
    assert "SECRETTOKEN" not in message and "'htps://hooks.slack.com/***'" in message
    with pytest.raises(ConfigError, match=r"'monitoring\.alerts\.webhook_timeout' must be more"):
        load_settings({"monitoring": {"alerts": {"webhook_timeout": 0}}})
    good = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN"
    alerts = load_settings({"monitoring": {"alerts": {"webhook_url": good}}}).monitoring.alerts
    assert alerts.webhook_url == good and alerts.webhook_timeout == 5.0
    assert "SECRETTOKEN" not in repr(alerts) and "https://hooks.slack.com/***" in repr(alerts)


def test_dashboard_address_is_this_machine_unless_opened() -> None:
    assert load_settings().dashboard_address == "127.0.0.1:8787"
    assert load_settings({"dashboard_address": "0.0.0.0:0"}).dashboard_address == "0.0.0.0:0"
    for bad in ("8787", "localhost", "127.0.0.1:http", "127.0.0.1:70000", "tcp://0.0.0.0:8787"):
        with pytest.raises(ConfigError) as info:
            load_settings({"dashboard_address": bad})
        assert "'dashboard_address' must be host:port, such as '127.0.0.1:8787'" in str(info.value)


# -- numbers and strings that type-check but mean nothing ---------------------------------------
@pytest.mark.parametrize(
    ("config", "key", "fragment"),
    [
        ({"resource_limits": {"max_cpu_cores": -2}}, "resource_limits.max_cpu_cores", "1 or more"),
        ({"resource_limits": {"max_cpu_cores": 0}}, "resource_limits.max_cpu_cores", "1 or more"),
        ({"resource_limits": {"max_memory_gb": 0}}, "resource_limits.max_memory_gb", "more than 0"),
        ({"resource_limits": {"max_memory_gb": float("nan")}}, "max_memory_gb", "finite"),
        ({"resource_limits": {"max_memory_gb": float("inf")}}, "max_memory_gb", "finite"),
        ({"fault_tolerance": {"task_timeout": float("nan")}}, "task_timeout", "finite"),
        ({"fault_tolerance": {"retry_delay": float("nan")}}, "retry_delay", "finite"),
        ({"fault_tolerance": {"retry_delay": float("inf")}}, "retry_delay", "finite"),
        ({"fault_tolerance": {"retry_backoff": float("nan")}}, "retry_backoff", "finite"),
        ({"caching": {"ttl": float("nan")}}, "caching.ttl", "finite"),
        ({"caching": {"ttl": float("inf")}}, "caching.ttl", "null"),
        ({"caching": {"ttl": 0}}, "caching.ttl", "more than 0"),
        ({"caching": {"ttl": -5}}, "caching.ttl", "more than 0"),
        ({"caching": {"secret": ""}}, "caching.secret", "empty"),
        ({"caching": {"redis_url": ""}}, "caching.redis_url", "empty"),
        ({"scheduler_address": ""}, "scheduler_address", "empty"),
        ({"scheduler_address": "   "}, "scheduler_address", "empty"),
        ({"store": {"url": ""}}, "store.url", "empty"),
        ({"kubernetes": {"image": ""}}, "kubernetes.image", "empty"),
        ({"kubernetes": {"resource_timeout": 0}}, "kubernetes.resource_timeout", "more than 0"),
        ({"resource_allocation": {"memory_per_worker": ""}}, "memory_per_worker", "empty"),
        ({"monitoring": {"alerts": {"task_timeout": -1}}}, "alerts.task_timeout", "more than 0"),
        ({"monitoring": {"alerts": {"task_timeout": float("nan")}}}, "task_timeout", "finite"),
        ({"monitoring": {"alerts": {"webhook_url": ""}}}, "webhook_url", "empty"),
        ({"monitoring": {"alerts": {"memory_threshold": float("nan")}}}, "threshold", "finite"),
        ({"security": {"tls_ca_file": ""}}, "security.tls_ca_file", "empty"),
    ],
)
def test_out_of_range_non_finite_and_empty_values_are_rejected(config, key, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineManager(config)
    assert key in str(info.value) and fragment in str(info.value)


def test_an_infinite_task_timeout_means_no_limit() -> None:
    settings = load_settings({"fault_tolerance": {"task_timeout": float("inf")}})
    assert settings.fault_tolerance.task_timeout is None
    p = Pipeline("patient")
    p.task("answer")(lambda: 42)
    with PipelineManager({"fault_tolerance": {"task_timeout": float("inf")}}) as pm:
        result = pm.execute_pipeline(p)
    assert result.success, result.error
    assert result.final_result == 42


def test_an_empty_secret_in_the_environment_is_ignored(monkeypatch) -> None:
    monkeypatch.setenv("XLIBRARY_CACHE_SECRET", "")
    assert load_settings().caching.secret is None


def test_no_workers_timeout() -> None:
    assert load_settings().no_workers_timeout == 60
    assert load_settings({"no_workers_timeout": float("inf")}).no_workers_timeout is None
    assert load_settings({"no_workers_timeout": None}).no_workers_timeout is None
    with pytest.raises(ConfigError, match="'no_workers_timeout' must be more than 0"):
        load_settings({"no_workers_timeout": 0})


# -- keys that would have no effect are warned about, once, with why --------------------------
@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        (
            {"resource_limits": {"max_cpu_cores": 4}},
            ["resource_limits", "no cluster", "resource_optimization: true"],
        ),
        (
            {"resource_limits": {"optimization_strategy": "memory"}},
            ["resource_limits", "no cluster"],
        ),
        (
            {"scheduler_address": "tcp://127.0.0.1:1", "resource_limits": {"max_memory_gb": 4}},
            ["resource_limits", "tcp://127.0.0.1:1", "its own workers"],
        ),
        (
            {"scheduler_address": "tcp://127.0.0.1:1", "resource_optimization": True},
            ["resource_optimization", "its own workers"],
        ),
        (
            {
                "cluster_mode": "local",
                "worker_nodes": 2,
                "resource_allocation": {"cpu_per_worker": 1},
                "resource_limits": {"optimization_strategy": "throughput"},
            },
            ["optimization_strategy", "worker_nodes", "resource_allocation"],
        ),
    ],
)
def test_keys_without_effect_are_warned_once(config, fragments, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="xlibrary.pipeline"):
        PipelineManager(config).close()
    (record,) = caplog.records
    for fragment in fragments:
        assert fragment in record.getMessage()


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

"""Secrets in URLs never reach a log line, a repr, an error or the command line's output."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import RedisServer, free_port
from xlibrary.pipeline import ConfigError, Pipeline, PipelineManager
from xlibrary.pipeline.redact import redact_url
from xlibrary.pipeline.settings import load_settings
from xlibrary.pipeline.store import FsStore

SECRET = RedisServer.PASSWORD


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://user:hunter2@cache.example.com/1", "rediss://user:***@cache.example.com/1"),
        (
            "redis://127.0.0.1:6379/0?password=hunter2&db=1",
            "redis://127.0.0.1:6379/0?password=***&db=***",
        ),
        ("s3://bucket/prefix?secret_key=hunter2", "s3://bucket/prefix?secret_key=***"),
        ("ftp://me:hunter2@files.example.com/store", "ftp://me:***@files.example.com/store"),
        ("simplecache::s3://k:hunter2@bucket/x", "simplecache::s3://k:***@bucket/x"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("/var/data/store", "/var/data/store"),
        ("memory://store", "memory://store"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "keep_path", "shown"),
    [
        ("https://hooks.example.com/services/T0/B0/XYZ", False, "https://hooks.example.com/***"),
        ("https://bot:pw@hooks.example.com:8443/x?sig=1", False, "https://bot:***@hooks.example.com:8443/***"),
        ("https://hooks.example.com", False, "https://hooks.example.com"),
        ("s3://bucket/runs?token=abc&region=eu", True, "s3://bucket/runs?token=***&region=***"),
        ("http://user:pw@[::1]:80/a#frag", True, "http://user:***@[::1]:80/a"),
        ("https://ghp_TOKEN@github.com/org/repo", True, "https://***@github.com/org/repo"),
        ("http://host:notaport/secret", False, "http://***"),
    ],
)  # fmt: skip
def test_redact_url_of_webhooks_and_odd_urls(url: str, keep_path: bool, shown: str) -> None:
    assert redact_url(url, keep_path=keep_path) == shown


def test_redact_url_without_the_path() -> None:
    hook = "https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc"
    assert redact_url(hook, keep_path=False) == "https://hooks.example.com/***"


def test_a_redis_password_is_not_logged(tmp_path: Path, caplog) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"  # nothing listens there
    config = {"store": {"url": str(tmp_path)}, "caching": {"cache_type": "redis", "redis_url": url}}
    with PipelineManager(config) as pm, caplog.at_level(logging.DEBUG, logger="xlibrary"):
        p = Pipeline("unreachable_cache")
        p.task("t")(pm.cache_result(key="k")(lambda: 1))
        assert pm.execute_pipeline(p).final_result == 1
        shown = [repr(pm.cache), repr(pm.settings), str(pm.settings.caching)]
    assert "cannot read the cache" in caplog.text or "could not read the cache" in caplog.text
    assert ":***@127.0.0.1" in caplog.text
    assert SECRET not in caplog.text
    assert all(SECRET not in text for text in shown), shown


def test_settings_do_not_show_their_secrets() -> None:
    settings = load_settings(
        {"caching": {"redis_url": f"redis://:{SECRET}@h/0", "secret": "signing-key"},
         "store": {"url": f"ftp://me:{SECRET}@files/x"}}
    )  # fmt: skip
    for text in (repr(settings), str(settings.caching), repr(settings.store)):
        assert SECRET not in text and "signing-key" not in text
    assert settings.caching.redis_url.endswith(f"{SECRET}@h/0")  # the value itself is whole


def test_a_store_url_with_a_password_is_not_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        FsStore(f"nosuchproto://me:{SECRET}@host/x")
    assert SECRET not in str(info.value) and "me:***@host" in str(info.value)
    assert SECRET not in repr(FsStore(f"memory://me:{SECRET}@x"))


@pytest.mark.parametrize("command", [["list"], ["clear"], ["prune"]])
def test_cache_commands_do_not_print_the_redis_password(
    redis_server: RedisServer, tmp_path: Path, command: list[str], capsys
) -> None:
    from xlibrary.pipeline.cli import main

    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"caching": {"cache_type": "redis", "redis_url": redis_server.url}})
    )
    assert main(["cache", *command, "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert f"redis://:***@127.0.0.1:{redis_server.port}/0" in out.out
    assert SECRET not in out.out + out.err

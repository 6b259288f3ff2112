"""URLs shown in logs, errors and reprs keep where they point and hide their secrets."""

from __future__ import annotations

import pytest

from xlibrary.pipeline.redact import redact_url


@pytest.mark.parametrize(
    ("url", "keep_path", "shown"),
    [
        ("https://hooks.example.com/services/T0/B0/XYZ", False, "https://hooks.example.com/***"),
        ("https://bot:pw@hooks.example.com:8443/x?sig=1", False, "https://bot:***@hooks.example.com:8443/***?***"),
        ("https://hooks.example.com", False, "https://hooks.example.com"),
        ("redis://:pw@127.0.0.1:6379/7", True, "redis://:***@127.0.0.1:6379/7"),
        ("s3://bucket/runs?token=abc&region=eu", True, "s3://bucket/runs?token=***&region=***"),
        ("http://user@[::1]:80/a#frag", True, "http://user@[::1]:80/a"),
        ("http://host:notaport/secret", False, "http://***"),
        ("/plain/directory", True, "/plain/directory"),
    ],
)  # fmt: skip
def test_redact_url(url: str, keep_path: bool, shown: str) -> None:
    assert redact_url(url, keep_path=keep_path) == shown

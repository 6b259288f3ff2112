"""Showing URLs without their secrets: one helper for every log line, repr, error and printout.

A URL can carry secrets in four places: its credentials (``redis://:pw@host/0``), its query
(``?token=...``, ``?X-Amz-Signature=...``), its fragment, and, for webhooks, its path (Slack,
Teams and Discord put the token there). :func:`redact_url` keeps what tells a reader *where*
(scheme, user, host, port and, unless ``keep_path=False``, the path and the query's parameter
names) and replaces the rest with ``***``. The URL itself is kept whole wherever it is used
to connect.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["HIDDEN", "redact_text", "redact_url", "redact_urls_in"]

HIDDEN = "***"


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` with its secrets replaced by ``***``: the password (a user name alone, which
    may be a token, is hidden whole), every query value, the fragment, and with
    ``keep_path=False`` the path and whole query too.

    >>> redact_url("redis://:hunter2@127.0.0.1:6379/0")
    'redis://:***@127.0.0.1:6379/0'
    >>> redact_url("s3://bucket/runs?token=abc&region=eu")
    's3://bucket/runs?token=***&region=***'
    >>> redact_url("https://bot:pw@hooks.example.com/services/T0/XYZ", keep_path=False)
    'https://bot:***@hooks.example.com/***'

    Chained fsspec URLs (``simplecache::s3://...``) are redacted part by part; a plain path
    comes back as it is; something that does not parse as a URL is hidden but for its scheme.
    """
    url = str(url)
    if "::" in url and "://" not in url.partition("::")[0]:  # fsspec's chained URLs
        return "::".join(redact_url(part, keep_path=keep_path) for part in url.split("::"))
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        scheme = url.partition("://")[0] if "://" in url else ""
        return f"{scheme}://{HIDDEN}" if scheme else HIDDEN
    if not parts.scheme or (not parts.netloc and not parts.query and not parts.fragment):
        return url  # a path, or scheme:path: nothing that looks like a credential
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{HIDDEN}@{netloc}"
    elif parts.username:
        netloc = f"{HIDDEN}@{netloc}"
    if not keep_path:
        secret = parts.path.strip("/") or parts.query or parts.fragment
        return urlunsplit((parts.scheme, netloc, "", "", "")) + (f"/{HIDDEN}" if secret else "")
    query = parts.query
    if query:
        names = (item.partition("=")[0] for item in query.split("&"))
        query = "&".join(f"{name}={HIDDEN}" for name in names)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` shown redacted, and its password hidden
    wherever else it appears."""
    shown = text.replace(url, redact_url(url)) if url else text
    for part in url.split("::"):
        try:
            password = urlsplit(part).password
        except ValueError:
            continue
        if password:
            shown = shown.replace(password, HIDDEN)
    return shown


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


def redact_urls_in(text: str) -> str:
    """``text`` (an exception's message, a log line) with every URL in it redacted."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)

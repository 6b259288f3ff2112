"""URLs as they may be shown: in log lines, error messages, reprs and printed output.

A URL can carry secrets in three places: its credentials (``user:password@``), its query
(``?token=...``, ``?sig=...``) and, for webhooks, its path (Slack, Teams and Discord put the
token there). :func:`redact_url` keeps what tells a reader *where* (scheme, user, host, port,
and the path when it is not secret) and replaces the rest with ``***``.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]

HIDDEN = "***"


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` without its secrets: the password, the query's values (all of the query
    when not ``keep_path``), and the path unless ``keep_path``. A fragment is dropped.

    >>> redact_url("https://bot:hunter2@hooks.example.com/services/T0/XYZ", keep_path=False)
    'https://bot:***@hooks.example.com/***'
    >>> redact_url("s3://bucket/runs?token=abc&region=eu")
    's3://bucket/runs?token=***&region=***'

    Something that does not parse as a URL is hidden whole, but for its scheme.
    """
    try:
        parts = urlsplit(str(url))
        port = parts.port  # raises on a malformed port
    except ValueError:
        scheme = str(url).partition("://")[0] if "://" in str(url) else ""
        return f"{scheme}://{HIDDEN}" if scheme else HIDDEN
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if parts.username is not None:
        user = parts.username + (f":{HIDDEN}" if parts.password is not None else "")
        netloc = f"{user}@{netloc}"
    path = parts.path
    if not keep_path and path not in ("", "/"):
        path = f"/{HIDDEN}"
    query = parts.query
    if query:
        if keep_path:
            names = (item.partition("=")[0] for item in query.split("&"))
            query = "&".join(f"{name}={HIDDEN}" for name in names)
        else:
            query = HIDDEN
    return urlunsplit((parts.scheme, netloc, path, query, ""))

"""Showing URLs without their secrets: one helper for every log line, repr, error and printout.

A store or cache URL may carry a password (``redis://:pw@host/0``, ``ftp://me:pw@host``) or a
credential in its query (``?password=``, ``?secret_key=``); a webhook URL carries its token in
the path. :func:`redact_url` keeps what tells a reader *where* (scheme, user, host, port and,
unless ``keep_path=False``, the path) and replaces the secrets with ``***``. The URL itself is
kept whole wherever it is used to connect.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["HIDDEN", "redact_text", "redact_url"]

HIDDEN = "***"

_SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|key|auth|credential|signature|sig$|session", re.IGNORECASE
)


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` with its password and secret-looking query values replaced by ``***``.

    >>> redact_url("redis://:hunter2@127.0.0.1:6379/0")
    'redis://:***@127.0.0.1:6379/0'
    >>> redact_url("https://hooks.example.com/services/T0/B0/XYZ", keep_path=False)
    'https://hooks.example.com/***'

    ``keep_path=False`` also hides the path, query and fragment (webhook URLs hold their token
    there). Chained fsspec URLs (``simplecache::s3://...``) are redacted part by part; text
    that is not a URL (a directory) comes back as it is.
    """
    if "::" in url:
        return "::".join(redact_url(part, keep_path=keep_path) for part in url.split("::"))
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable as a URL: show none of it that could be a secret
        return HIDDEN
    if not parts.scheme or (not parts.netloc and not parts.query):
        return url  # a path, or scheme:path: nothing that looks like a credential
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{HIDDEN}@{host}" if colon else f"{HIDDEN}@{host}"
    if not keep_path:
        tail = f"/{HIDDEN}" if parts.path.strip("/") or parts.query or parts.fragment else ""
        return urlunsplit((parts.scheme, netloc, "", "", "")) + tail
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAMETER.search(name) for name, _ in pairs):
            query = urlencode(
                [
                    (name, HIDDEN if _SECRET_PARAMETER.search(name) else value)
                    for name, value in pairs
                ],
                safe="*",
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` and its password shown redacted."""
    shown = text.replace(url, redact_url(url)) if url else text
    for part in url.split("::"):
        try:
            password = urlsplit(part).password
        except ValueError:
            continue
        if password:
            shown = shown.replace(password, HIDDEN)
    return shown

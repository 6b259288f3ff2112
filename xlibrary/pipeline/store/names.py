"""The parts a store path is made of: run ids, and pipeline and task names.

A run's files live at ``runs/<pipeline>/<run id>/...`` and a saved result at
``.../results/<task>.entry``. Those parts come from users (a pipeline's name, a run id typed
into an API), so each has one checked form, and no part can address a file outside its own
directory:

* A **run id** is what :func:`new_run_id` makes, and nothing else:
  ``20261128T082121.123456-3fa2c1d0`` (the UTC start time to the microsecond, then 8 random
  hex digits), so ids sort by start time. :func:`check_run_id` refuses any other text with an
  :class:`~xlibrary.pipeline.errors.InvalidRunIdError` naming the form.
* A **pipeline or task name** is 1 to 200 characters, not ``.`` or ``..``, and at most 240
  bytes once percent-encoded for the store; a pipeline name also has no ``/``, ``\\`` or
  control characters, as it is a path in the web API and a word on the command line
  (:func:`name_problem`, checked when a pipeline or task is declared). In the store a name is
  percent-encoded (:func:`slug`), so whatever a name holds it stays one directory or file
  name; ``.`` and ``..`` are encoded too.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from urllib.parse import quote, unquote

from ..errors import InvalidRunIdError, StorePathError

__all__ = [
    "MAX_NAME_CHARACTERS",
    "RUN_ID_EXAMPLE",
    "check_run_id",
    "is_run_id",
    "name_of_slug",
    "name_problem",
    "new_run_id",
    "slug",
]

RUN_ID_EXAMPLE = "20261128T082121.123456-3fa2c1d0"
_RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}-[0-9a-f]{8}")

MAX_NAME_CHARACTERS = 200
MAX_SLUG_BYTES = 240
"""A name's percent-encoded form, plus ``.entry``, stays under the usual 255-byte file name."""
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]+")
"""Names of these characters only, which ``quote(name, safe="")`` leaves as they are."""


def new_run_id() -> str:
    """A run id that sorts by start time and is unique: ``20261128T082121.123456-3fa2c1d0``."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now % 1 * 1e6):06d}-{secrets.token_hex(4)}"


def is_run_id(text: object) -> bool:
    """Whether ``text`` has the form of a run id."""
    return isinstance(text, str) and _RUN_ID.fullmatch(text) is not None


def check_run_id(run_id: object) -> str:
    """``run_id`` if it has the form of a run id; raises InvalidRunIdError naming the form."""
    if not is_run_id(run_id):
        raise InvalidRunIdError(
            f"{run_id!r} is not a run id: a run id looks like {RUN_ID_EXAMPLE} (as "
            "PipelineResult.run_id and `xlibrary-pipeline runs list` show them)"
        )
    assert isinstance(run_id, str)
    return run_id


def name_problem(name: str, *, pipeline: bool) -> str | None:
    """Why ``name`` cannot name a pipeline (or a task), or ``None`` when it can."""
    if len(name) <= MAX_NAME_CHARACTERS and _PLAIN.fullmatch(name) and name not in (".", ".."):
        return None  # the common case, checked fast: percent-encoding leaves it as it is
    if name in (".", ".."):
        return "'.' and '..' mean directories to a file system; choose another name"
    if pipeline and ("/" in name or "\\" in name):
        return (
            "it contains a path separator ('/' or '\\'): a pipeline name is a path in the web "
            "API and a name on the command line; use another character, such as '-'"
        )
    for char in name if pipeline else ():
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"it contains the control character {char!r}; remove it"
    if len(name) > MAX_NAME_CHARACTERS or len(_encode(name)) > MAX_SLUG_BYTES:
        return (
            f"it is too long: names are 1 to {MAX_NAME_CHARACTERS} characters, and at most "
            f"{MAX_SLUG_BYTES} bytes once percent-encoded for the store (a space or a non-ASCII "
            "letter takes 3 to 12); shorten it"
        )
    return None


def slug(name: str) -> str:
    """``name`` as one directory or file name of the store, percent-encoded.

    Raises StorePathError for a name no store path can hold (empty, or too long).
    """
    encoded = _encode(name)
    if not name or len(encoded) > MAX_SLUG_BYTES:
        raise StorePathError(
            f"the name {name[:50]!r}{'...' if len(name) > 50 else ''} cannot be stored: names "
            f"are 1 to {MAX_NAME_CHARACTERS} characters, at most {MAX_SLUG_BYTES} bytes once "
            "percent-encoded"
        )
    return encoded


def name_of_slug(encoded: str) -> str:
    """The name a :func:`slug` stands for."""
    return unquote(encoded)


def _encode(name: str) -> str:
    encoded = quote(name, safe="")
    if encoded in (".", ".."):  # quote keeps dots: encode them, so they are names, not places
        encoded = encoded.replace(".", "%2E")
    return encoded

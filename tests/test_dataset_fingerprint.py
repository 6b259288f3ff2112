"""Fingerprints: a changed file (even of the same size), an added or a removed file always
gives another fingerprint, and describe_change names the file."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from xlibrary.pipeline.datasets import Dataset, Fingerprint, describe_change


@pytest.fixture(params=["memory", "local"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        name = f"fingerprints-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)
    else:
        yield str(tmp_path)


def _write(url: str, data: bytes) -> None:
    # The clock that stamps a file's mtime ticks every few milliseconds at worst: wait one
    # tick so that a rewrite is later, as any real edit is.
    time.sleep(0.02)
    with fsspec.open(url, "wb") as file:
        file.write(data)


def test_a_rewrite_of_the_same_size_changes_the_fingerprint(base: str) -> None:
    url = f"{base}/companies.csv"
    _write(url, b"id,name\n1,a\n")
    before = Fingerprint.of(url)
    assert Fingerprint.of(url) == before  # nothing changed: the same
    _write(url, b"id,name\n1,b\n")  # same size, other content
    after = Fingerprint.of(url)
    assert after.token != before.token
    assert after.files[0].size == before.files[0].size
    change = describe_change(before, after)
    assert change is not None
    assert "companies.csv changed (modified " in change


def test_a_file_added_to_a_glob_changes_it_and_is_named(base: str) -> None:
    _write(f"{base}/events/day-1.csv", b"a\n1\n")
    _write(f"{base}/events/day-2.csv", b"a\n2\n")
    _write(f"{base}/events/notes.txt", b"not matched")
    glob = f"{base}/events/day-*.csv"
    before = Fingerprint.of(glob)
    assert [f.path.rsplit("/", 1)[1] for f in before.files] == ["day-1.csv", "day-2.csv"]
    _write(f"{base}/events/notes.txt", b"still not matched, and longer")
    assert Fingerprint.of(glob).token == before.token

    _write(f"{base}/events/day-3.csv", b"a\n3\n")
    added = Fingerprint.of(glob)
    assert added.token != before.token
    change = describe_change(before, added)
    assert change is not None and change.endswith("day-3.csv was added")

    fs, path = fsspec.core.url_to_fs(f"{base}/events/day-1.csv")
    fs.rm(path)
    _write(f"{base}/events/day-2.csv", b"a\n22\n")
    change = describe_change(added, Fingerprint.of(glob))
    assert change is not None
    assert "day-2.csv changed (size 4 → 5 bytes" in change
    assert "day-1.csv was removed" in change
    assert describe_change(added, added) is None


def test_a_directory_is_every_file_under_it_but_hidden_ones(base: str) -> None:
    import dask.dataframe as dd

    frame = pd.DataFrame({"x": range(10)})
    url = f"{base}/table.parquet"
    Dataset(url).save(dd.from_pandas(frame, npartitions=2))
    before = Dataset(url).fingerprint()
    assert len(before.files) == 2
    _write(f"{base}/table.parquet/.tmp-partial", b"a write in progress")
    assert Dataset(url).fingerprint() == before
    Dataset(url).save(dd.from_pandas(frame, npartitions=3))
    change = describe_change(before, Dataset(url).fingerprint())
    assert change is not None and "part.2.parquet was added" in change


def test_a_fingerprint_round_trips_as_json_and_shows_no_secret(tmp_path: Path) -> None:
    import json

    (tmp_path / "a.csv").write_text("a\n1\n")
    found = Fingerprint.of(str(tmp_path / "a.csv"))
    again = Fingerprint.from_dict(json.loads(json.dumps(found.to_dict())))
    assert again == found and again.token == found.token
    assert found.files[0].modified is not None and found.files[0].modified.endswith("Z")

    hidden = Fingerprint(url="s3://bucket/a.csv?X-Amz-Signature=***", files=())
    assert "***" in str(hidden)


def test_a_checksum_from_the_listing_is_the_identity() -> None:
    from xlibrary.pipeline.datasets.fingerprint import _state

    one = _state("b/a.csv", {"size": 3, "ETag": '"abc"', "LastModified": "x"})
    two = _state("b/a.csv", {"size": 3, "ETag": '"abd"', "LastModified": "x"})
    assert one.checksum == "abc" and one.identity != two.identity
    old, new = Fingerprint("s3://b/a.csv", (one,)), Fingerprint("s3://b/a.csv", (two,))
    assert describe_change(old, new) == "b/a.csv changed (checksum abc → abd)"


def test_the_fingerprint_of_a_versioned_dataset_follows_its_latest_version(tmp_path: Path) -> None:
    dataset = Dataset(str(tmp_path / "m.csv"), versioned=True)
    frame = pd.DataFrame({"a": [1]})
    dataset.save(frame)
    first = dataset.fingerprint()
    dataset.save(frame)
    second = dataset.fingerprint()
    change = describe_change(first, second)
    assert change is not None and "was added" in change and "was removed" in change

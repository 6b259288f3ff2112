"""The store and the cache: one contract for every backend, and atomic writes across processes."""

from __future__ import annotations

import logging
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from xlibrary.pipeline.records import RunRecord
from xlibrary.pipeline.store import Cache, FsCacheBackend, FsStore, RunStore
from xlibrary.pipeline.store.redis import RedisCacheBackend


@pytest.fixture(params=["memory", "directory", "redis"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cache]:
    if request.param == "memory":
        yield Cache(FsCacheBackend(FsStore(f"memory://cache-{uuid.uuid4().hex}")))
    elif request.param == "directory":
        yield Cache(FsCacheBackend(FsStore(str(tmp_path / "store"))))
    else:
        yield Cache(RedisCacheBackend(request.getfixturevalue("redis_url")))


class TestCacheContract:
    """Every cache backend passes these."""

    def test_miss_then_hit(self, cache: Cache) -> None:
        assert cache.lookup("k").reason == "no entry" and cache.load("k") is None
        header = cache.save("k", {"rows": [1, 2]}, task="t", pipeline="p")
        found = cache.lookup("k")
        assert found.hit and found.header == header
        got_header, value = cache.load("k")
        assert value == {"rows": [1, 2]} and got_header.entry_id == header.entry_id

    def test_overwrite_replaces_the_entry(self, cache: Cache) -> None:
        first = cache.save("k", 1)
        second = cache.save("k", 2)
        assert cache.load("k")[1] == 2 and first.entry_id != second.entry_id

    def test_ttl_expires(self, cache: Cache) -> None:
        cache.save("short", "v", ttl=0.3)
        cache.save("long", "v", ttl=60)
        assert cache.lookup("short").hit
        time.sleep(0.5)
        assert not cache.lookup("short").hit and cache.load("short") is None
        assert cache.lookup("long").hit
        assert cache.lookup("long").header.ttl == pytest.approx(60)

    def test_default_ttl(self, cache: Cache) -> None:
        timed = Cache(cache.backend, default_ttl=30)
        header = timed.save("k", 1)
        assert header.expires == pytest.approx(header.created + 30)

    def test_dataframes_and_arrays(self, cache: Cache) -> None:
        frame = pd.DataFrame({"a": np.arange(1000), "b": np.random.rand(1000)})
        cache.save("df", frame)
        cache.save("arr", np.arange(10))
        pd.testing.assert_frame_equal(cache.load("df")[1], frame)
        assert cache.load("df")[0].format == "arrow"
        assert cache.load("arr")[1].tolist() == list(range(10))

    def test_clear_by_pipeline_and_task(self, cache: Cache) -> None:
        cache.save("a", 1, task="x", pipeline="p1")
        cache.save("b", 2, task="y", pipeline="p1")
        cache.save("c", 3, task="x", pipeline="p2")
        assert cache.clear(pipeline="p1", task="x") == 1
        assert sorted(h.key for h in cache.headers()) == ["b", "c"]
        assert cache.clear(pipeline="p1") == 1
        assert cache.clear() == 1
        assert list(cache.headers()) == []

    def test_prune_removes_only_expired(self, cache: Cache) -> None:
        cache.save("old", 1, ttl=10)
        cache.save("new", 2, ttl=1000)
        cache.save("forever", 3)
        assert cache.prune(now=time.time() + 100) == 1
        assert {h.key for h in cache.headers()} == {"new", "forever"}

    def test_notes_remember_the_last_entry_of_a_task(self, cache: Cache) -> None:
        assert cache.last_entry_of("p", "t") is None
        cache.save("k1", 1, task="t", pipeline="p", meta={"code": "c1"})
        cache.save("k2", 2, task="t", pipeline="p", meta={"code": "c2"})
        note = cache.last_entry_of("p", "t")
        assert note["key"] == "k2" and note["code"] == "c2"

    def test_signed_cache_refuses_unsigned_entries(self, cache: Cache, caplog) -> None:
        cache.save("k", "unsigned")
        signed = Cache(cache.backend, secret=b"s3cret")
        with caplog.at_level(logging.WARNING):
            assert signed.load("k") is None
        assert "not signed" in caplog.text
        signed.save("k", "signed")
        assert signed.load("k")[1] == "signed"
        assert Cache(cache.backend, secret=b"other").load("k") is None


def rec(pipeline: str, run_id: str, status: str) -> RunRecord:
    """A run record as the engine writes one."""
    return RunRecord.from_json({"pipeline": pipeline, "run_id": run_id, "status": status})


def test_redis_expiry_is_redis_ttl(redis_url: str) -> None:
    import redis

    cache = Cache(RedisCacheBackend(redis_url))
    cache.save("k", 1, ttl=100)
    assert 99_000 < redis.Redis.from_url(redis_url).pttl("xlibrary:cache:k") <= 100_000


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_damaged_file_is_a_miss_with_a_warning(tmp_path: Path, damage: str, caplog) -> None:
    store = FsStore(str(tmp_path))
    cache = Cache(FsCacheBackend(store))
    cache.save("k", list(range(1000)))
    (path,) = list(tmp_path.rglob("*.entry"))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not an entry at all")
    else:
        path.write_bytes(data[:-10] + bytes(b ^ 0x55 for b in data[-10:]))
    with caplog.at_level(logging.WARNING):
        assert cache.load("k") is None
    assert "unusable" in caplog.text
    assert not path.exists()  # removed, so the next run writes a good one


def _writer(root: str, key: str, marker: int, count: int) -> None:
    cache = Cache(FsCacheBackend(FsStore(root)))
    payload = np.full(200_000, marker, dtype=np.int64)
    for _ in range(count):
        cache.save(key, payload)


def test_two_processes_writing_one_key_never_show_half_an_entry(tmp_path: Path) -> None:
    root = str(tmp_path)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(root, "shared", m, 40)) for m in (1, 2)]
    for w in writers:
        w.start()
    cache = Cache(FsCacheBackend(FsStore(root)))
    seen = set()
    while any(w.is_alive() for w in writers):
        found = cache.load("shared")
        if found is not None:
            values = set(np.unique(found[1]).tolist())
            assert len(values) == 1 and found[1].size == 200_000  # one writer's entry, whole
            seen |= values
    for w in writers:
        w.join(30)
        assert w.exitcode == 0
    assert cache.load("shared") is not None
    assert seen  # the reader did see entries while they were being written


def test_run_store_records_and_results(tmp_path: Path) -> None:
    runs = RunStore(FsStore(str(tmp_path)))
    assert runs.read_record("p") is None
    r1, r2 = "20261128T082121.123456-3fa2c1d0", "20261128T082122.000001-3fa2c1d1"
    runs.write_record(rec("p/1", r1, "failed"))
    runs.write_record(rec("p/1", r2, "succeeded"))
    assert runs.latest_run_id("p/1") == r2
    assert runs.read_record("p/1", r1).status == "failed"
    assert runs.find_record(r1).pipeline == "p/1"
    assert [r.run_id for r in runs.records("p/1")] == [r1, r2]
    runs.save_result("p/1", r1, "load data", pd.DataFrame({"a": [1]}))
    assert runs.load_result("p/1", r1, "load data")["a"].tolist() == [1]


def test_memory_store_lists_and_deletes() -> None:
    store = FsStore(f"memory://s-{uuid.uuid4().hex}")
    store.write("a/b/c.json", b"1")
    store.write("a/d.json", b"2")
    assert store.files("a") == ["a/b/c.json", "a/d.json"]
    assert store.read("a/d.json") == b"2" and store.read("nope") is None
    assert store.delete("a/d.json") and not store.delete("a/d.json")


def test_missing_redis_package_names_the_extra(monkeypatch) -> None:
    import sys

    from xlibrary.pipeline import MissingExtraError

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingExtraError, match=r'pip install "xlibrary\[redis\]"'):
        Cache(RedisCacheBackend("redis://127.0.0.1:6379/15")).lookup("k")


def test_bad_store_url_is_a_config_error() -> None:
    from xlibrary.pipeline import ConfigError

    with pytest.raises(ConfigError, match="cannot open the store 'nosuchproto://x'"):
        FsStore("nosuchproto://x")


@pytest.mark.parametrize("secret", [b"s3cret", None])
def test_an_entry_copied_over_another_key_is_a_miss(cache: Cache, secret, caplog) -> None:
    """A valid (signed) entry moved under another key is refused: it names its own key."""
    cache = Cache(cache.backend, secret=secret)
    cache.save("price_usd", {"usd": 100.0})
    cache.save("price_eur", {"eur": 90.0})
    cache.backend.write("price_eur", *cache.backend.read("price_usd"), None)  # the swap
    with caplog.at_level(logging.WARNING):
        assert not cache.lookup("price_eur").hit
        assert cache.load("price_eur") is None
    assert "price_usd" in caplog.text and "price_eur" in caplog.text
    assert cache.load("price_usd")[1] == {"usd": 100.0}  # the original is still good


def test_a_saved_result_copied_over_another_is_refused(tmp_path: Path) -> None:
    from xlibrary.pipeline.store import BadEntry

    runs = RunStore(FsStore(str(tmp_path)), secret=b"s3cret")
    first, second = "20261128T082121.123456-3fa2c1d0", "20261128T090000.000001-0badcafe"
    runs.save_result("p", first, "usd", 100.0)
    runs.save_result("p", first, "eur", 90.0)
    runs.save_result("p", second, "usd", 101.0)
    base = tmp_path / "runs" / "p"
    usd = (base / first / "results" / "usd.entry").read_bytes()
    (base / first / "results" / "eur.entry").write_bytes(usd)  # another task's result
    with pytest.raises(BadEntry, match="usd"):
        runs.load_result("p", first, "eur")
    (base / second / "results" / "usd.entry").write_bytes(usd)  # another run's result
    with pytest.raises(BadEntry, match=first):
        runs.load_result("p", second, "usd")
    assert runs.load_result("p", first, "usd") == 100.0


RUN = "20261128T082121.123456-3fa2c1d0"


@pytest.mark.parametrize("name", [".", "..", "latest.json", "%2E", "a/b"])
def test_names_never_address_outside_their_directory(tmp_path: Path, name: str) -> None:
    """Whatever a name is, the store keeps it under runs/ in a directory of its own."""
    root = tmp_path / "store"
    runs = RunStore(FsStore(str(root)))
    other = "20261128T082121.123456-00000000"
    runs.write_record(rec("neighbour", other, "succeeded"))
    runs.write_record(rec(name, RUN, "succeeded"), wait=True)
    runs.save_result(name, RUN, name, 42)
    assert sorted(p.name for p in root.iterdir()) == ["run-index", "runs"]
    assert sorted(p.name for p in (root / "runs").iterdir()) == sorted(
        ["neighbour", {".": "%2E", "..": "%2E%2E"}.get(name, quote(name, safe=""))]
    )
    assert sorted(runs.pipelines()) == sorted(["neighbour", name])
    assert runs.latest_run_id(name) == RUN and runs.latest_run_id("neighbour") == other
    assert runs.read_record(name).run_id == RUN
    assert runs.load_result(name, RUN, name) == 42
    assert [r.run_id for r in runs.recent_records(name, 5)] == [RUN]


def test_an_unwritable_record_is_a_warning_naming_the_run(tmp_path: Path, caplog) -> None:
    root = tmp_path / "store"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "blocked").write_text("a file where the pipeline's directory goes")
    runs = RunStore(FsStore(str(root)))
    with caplog.at_level(logging.WARNING):
        runs.write_record(rec("blocked", RUN, "succeeded"), wait=True)
    assert f"could not write the record of run {RUN} of pipeline 'blocked'" in caplog.text


def test_status_of_an_impossible_name_is_a_clear_error(tmp_path: Path) -> None:
    from xlibrary.pipeline import Pipeline, PipelineError, PipelineManager

    with PipelineManager({"store": {"url": str(tmp_path)}}) as pm:
        ok = Pipeline("ok")
        ok.task("t")(lambda: 1)
        pm.execute_pipeline(ok)  # runs/ exists
        for name in ("x" * 1000, "../../etc", "."):
            with pytest.raises(PipelineError, match="no run or pipeline"):
                pm.get_pipeline_status(name)


class CountingStore(FsStore):
    """Counts what the store touches: each file read, and each path a listing returns."""

    touched = 0

    def read(self, relative: str) -> bytes | None:
        self.touched += 1
        return super().read(relative)

    def exists(self, relative: str) -> bool:
        self.touched += 1
        return super().exists(relative)

    def files(self, prefix: str) -> list[str]:
        found = super().files(prefix)
        self.touched += 1 + len(found)
        return found

    def listdir(self, relative: str) -> list[str]:
        found = super().listdir(relative)
        self.touched += 1 + len(found)
        return found


def _run_ids(count: int) -> list[str]:
    return [f"20261128T{i // 60 % 60:04d}{i % 60:02d}.{i:06d}-{i:08x}" for i in range(count)]


@pytest.mark.parametrize("kind", ["memory", "directory"])
def test_finding_a_run_by_id_does_not_walk_the_store(kind: str, tmp_path: Path) -> None:
    def work_to_find(count: int) -> tuple[int, int]:
        url = (
            f"memory://find-{uuid.uuid4().hex}" if kind == "memory" else str(tmp_path / f"s{count}")
        )
        store = CountingStore(url)
        runs = RunStore(store)
        ids = _run_ids(count)
        for i, run_id in enumerate(ids):
            runs.write_record(rec(f"p{i % 3}", run_id, "succeeded"))
        runs.flush()
        store.touched = 0
        assert runs.find_record(ids[count // 2]).pipeline == f"p{count // 2 % 3}"
        known = store.touched
        store.touched = 0
        assert runs.find_record("20991231T235959.999999-deadbeef") is None
        return known, store.touched

    assert work_to_find(30) == work_to_find(300)
    known, unknown = work_to_find(30)
    assert known <= 3 and unknown <= 3


def test_runs_of_a_store_written_before_the_index_are_found(tmp_path: Path) -> None:
    import shutil

    runs = RunStore(FsStore(str(tmp_path)))
    ids = _run_ids(5)
    for i, run_id in enumerate(ids):
        runs.write_record(rec(f"p{i % 2}", run_id, "succeeded"))
    runs.flush()
    shutil.rmtree(tmp_path / "run-index")  # as an older version left it
    older = CountingStore(str(tmp_path))
    again = RunStore(older)
    assert again.find_record(ids[3]).pipeline == "p1"  # indexed once, on the first search
    assert [again.find_record(run_id).run_id for run_id in ids] == ids
    older.touched = 0
    assert again.find_record("20991231T235959.999999-deadbeef") is None
    assert older.touched == 1


def _run_in(root: Path, **config) -> None:
    from xlibrary.pipeline import Pipeline, PipelineManager

    settings = {"store": {"url": str(root)}, "save_intermediate_results": True, **config}
    with PipelineManager(settings) as pm:
        p = Pipeline("shared_store")
        p.task("t")(pm.cache_result(key="shared")(lambda: 1))
        assert pm.execute_pipeline(p).success


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_store_others_can_write_warns_once_without_a_secret(
    tmp_path: Path, mode: int, caplog
) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(mode)
    with caplog.at_level(logging.WARNING):
        _run_in(root)
        _run_in(root)
    assert caplog.text.count("can be written by other users") == 1
    assert "caching.secret" in caplog.text and str(root) in caplog.text


def test_no_warning_for_a_private_store_or_with_a_secret(tmp_path: Path, caplog) -> None:
    private, signed = tmp_path / "private", tmp_path / "signed"
    private.mkdir(mode=0o700)
    signed.mkdir()
    signed.chmod(0o777)
    with caplog.at_level(logging.WARNING):
        _run_in(private)
        _run_in(signed, caching={"secret": "a long random string"})
    assert "can be written by other users" not in caplog.text


def test_recording_runs_in_a_store_with_unindexed_runs_costs_no_extra_reads(
    tmp_path: Path,
) -> None:
    import shutil

    runs = RunStore(FsStore(str(tmp_path)))
    runs.write_record(rec("p", RUN, "succeeded"), wait=True)
    shutil.rmtree(tmp_path / "run-index")  # as an older version left it
    store = CountingStore(str(tmp_path))
    again = RunStore(store)
    for run_id in _run_ids(5):
        again.write_record(rec("p", run_id, "succeeded"))
    again.flush()
    assert store.touched <= 3  # one look at the index, once
    assert again.find_record(RUN).run_id == RUN

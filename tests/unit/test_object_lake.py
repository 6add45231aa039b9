"""The manifest-committed store and the lake at a URL, on local disk (file://): the same code path as
on S3 (tests/integration/test_lake_s3.py runs these against a real S3 server)."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
from cryptography.fernet import Fernet

from recsys.data.object_lake import ObjectLake, open_lake
from recsys.data.store import MANIFEST, CorruptPartitionError, open_store
from recsys.privacy.crypto import MAGIC, Cipher

DAY = date(2026, 1, 2)


def test_publish_then_read_through_the_manifest(tmp_path):
    store = open_store((tmp_path / "lake").as_uri())
    store.publish("clean/x/ds=2026-01-02", {"a.bin": b"first", "b.bin": b"second"})
    assert store.read("clean/x/ds=2026-01-02", "a.bin") == b"first"
    assert store.names("clean/x/ds=2026-01-02") == ["a.bin", "b.bin"]
    m = json.loads((tmp_path / "lake/clean/x/ds=2026-01-02" / MANIFEST).read_text())
    assert m["files"]["a.bin"]["size"] == 5 and m["attempt"].startswith("_attempt=")


def test_replacing_removes_the_old_attempt_and_keeps_other_files_on_update(tmp_path):
    store = open_store(str(tmp_path / "lake"))
    part = "raw/x/ds=2026-01-02"
    first = store.publish(part, {"a": b"1", "b": b"2"})
    second = store.publish(part, {"a": b"3"}, replace=False)
    assert store.read(part, "a") == b"3" and store.read(part, "b") == b"2"  # b still from the first attempt
    attempts = sorted(p.name for p in (tmp_path / "lake" / part).iterdir() if p.name.startswith("_attempt="))
    assert attempts == sorted({first["attempt"], second["attempt"]})
    third = store.publish(part, {"c": b"4"})  # replace: the partition is exactly {c}
    assert store.names(part) == ["c"]
    attempts = [p.name for p in (tmp_path / "lake" / part).iterdir() if p.name.startswith("_attempt=")]
    assert attempts == [third["attempt"]]


def test_an_uncommitted_attempt_is_invisible(tmp_path):
    store = open_store(str(tmp_path / "lake"))
    orphan = tmp_path / "lake/clean/x/ds=2026-01-03/_attempt=dead/part-0.parquet"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half")
    store.publish("clean/x/ds=2026-01-02", {"part-0.parquet": b"ok"})
    assert store.partitions("clean/x") == ["ds=2026-01-02"]
    with pytest.raises(FileNotFoundError):
        store.read("clean/x/ds=2026-01-03", "part-0.parquet")


def test_a_damaged_object_is_an_error_not_data(tmp_path):
    store = open_store(str(tmp_path / "lake"))
    m = store.publish("clean/x/ds=2026-01-02", {"a": b"payload"})
    (tmp_path / "lake/clean/x/ds=2026-01-02" / m["files"]["a"]["key"]).write_bytes(b"paylo")
    with pytest.raises(CorruptPartitionError):
        store.read("clean/x/ds=2026-01-02", "a")


def test_drop_hides_the_partition_first(tmp_path):
    store = open_store(str(tmp_path / "lake"))
    store.publish("clean/x/ds=2026-01-02", {"a": b"1"})
    store.drop("clean/x/ds=2026-01-02")
    assert store.partitions("clean/x") == [] and not (tmp_path / "lake/clean/x/ds=2026-01-02").exists()


def _lake(tmp_path, settings_kw=None) -> ObjectLake:
    from recsys.config import Settings

    s = Settings(data_dir=tmp_path / "data", lake_url=(tmp_path / "bucket").as_uri())
    return open_lake(s, s.data_dir, Cipher([Fernet.generate_key().decode()]))


def test_every_zone_round_trips_and_identifier_zones_are_encrypted(tmp_path):
    lake = _lake(tmp_path)
    assert isinstance(lake, ObjectLake)
    df = pd.DataFrame({"user_id": ["alice-raw-id", "bob-raw-id"], "n": [1, 2]})
    for zone in ("raw", "quarantine", "clean", "features", "recs"):
        lake.write_frame(zone, "t", DAY, df)
        pd.testing.assert_frame_equal(lake.read_frame(zone, "t", DAY), df)
        assert lake.list_ds(zone, "t") == [DAY]
    for zone in ("raw", "quarantine"):
        (blob,) = (tmp_path / "bucket" / zone / "t" / "ds=2026-01-02").glob("_attempt=*/*")
        data = blob.read_bytes()
        assert data.startswith(MAGIC) and b"alice-raw-id" not in data
    lake.write_bytes("landing", "events", DAY, "part-0.jsonl", b'{"user_id": "alice"}\n')
    assert lake.read_bytes("landing", "events", DAY, "part-0.jsonl") == b'{"user_id": "alice"}\n'


def test_sealing_landing_is_one_commit(tmp_path):
    from recsys.data import sources

    lake = _lake(tmp_path)
    lake.write_bytes("landing", "events", DAY, sources.LANDING_FILE, b'{"user_id": "alice"}\n')
    sources.seal_landing(lake, "events", DAY)
    assert lake.store.names("landing/events/ds=2026-01-02") == [sources.SEALED_FILE]
    assert sources.read_landing_bytes(lake, "events", DAY) == b'{"user_id": "alice"}\n'
    (blob,) = (tmp_path / "bucket/landing/events/ds=2026-01-02").glob("_attempt=*/*")
    assert b"alice" not in blob.read_bytes()


def test_replace_partition_commits_all_or_nothing_and_local_dir_caches_one_commit(tmp_path):
    lake = _lake(tmp_path)

    def build(d):
        (d / "train.parquet").write_bytes(b"old-train")
        (d / "transform.json").write_text("{}")

    lake.replace_partition("features", "examples", DAY, build)

    def broken(d):
        (d / "train.parquet").write_bytes(b"new-train")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        lake.replace_partition("features", "examples", DAY, broken)
    local = lake.local_dir("features", "examples", DAY)
    assert local.name == "ds=2026-01-02" and (local / "train.parquet").read_bytes() == b"old-train"
    lake.replace_partition("features", "examples", DAY, lambda d: (d / "train.parquet").write_bytes(b"v2"))
    again = lake.local_dir("features", "examples", DAY)
    assert again != local and not local.exists() and (again / "train.parquet").read_bytes() == b"v2"
    assert sorted(p.name for p in again.iterdir()) == ["train.parquet"]


def test_s3_settings_need_both_keys_and_reach_the_client_options(monkeypatch):
    from pydantic import ValidationError

    from recsys.config import load_settings
    from recsys.data.store import storage_options

    monkeypatch.setenv("RECSYS_LAKE_URL", "s3://bucket/lake")
    monkeypatch.setenv("RECSYS_S3__ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("RECSYS_S3__ACCESS_KEY_ID", "id")
    with pytest.raises(ValidationError, match="SECRET_ACCESS_KEY"):
        load_settings()
    monkeypatch.setenv("RECSYS_S3__SECRET_ACCESS_KEY", "s3cr3t-value")
    s = load_settings()
    opts = storage_options(s.lake_url, s.s3)
    assert opts["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:8333"}
    assert (opts["key"], opts["secret"]) == ("id", "s3cr3t-value") and opts["use_listings_cache"] is False
    assert "s3cr3t-value" not in repr(s.s3)


def test_erasure_refuses_a_lake_it_cannot_reach(tmp_path):
    from recsys.config import Settings
    from recsys.privacy.erasure import erase_user

    s = Settings(data_dir=tmp_path, lake_url="s3://bucket/lake")
    with pytest.raises(NotImplementedError, match="nothing was erased"):
        erase_user("alice", s)


def test_key_rotation_reaches_the_lake_at_a_url(tmp_path, monkeypatch):
    from recsys.config import load_settings
    from recsys.data import sources
    from recsys.privacy.crypto import DecryptionError
    from recsys.privacy.keys import rotate_keys

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("RECSYS_LAKE_URL", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", old)
    s = load_settings()
    lake = open_lake(s, s.data_dir, Cipher([old]))
    df = pd.DataFrame({"user_id": ["alice"], "n": [1]})
    lake.write_frame("raw", "events", DAY, df)
    lake.write_frame("quarantine", "events", DAY, df)
    lake.write_frame("clean", "events", DAY, df)
    lake.write_bytes("landing", "events", DAY, sources.LANDING_FILE, b'{"user_id": "alice"}\n')
    sources.seal_landing(lake, "events", DAY)

    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", f"{new},{old}")
    out = rotate_keys(load_settings())
    assert out["by_zone"] == {"landing": 1, "raw": 1, "quarantine": 1} and out["verified"]
    only_new = open_lake(s, s.data_dir, Cipher([new]))
    pd.testing.assert_frame_equal(only_new.read_frame("raw", "events", DAY), df)
    assert sources.read_landing_bytes(only_new, "events", DAY) == b'{"user_id": "alice"}\n'
    with pytest.raises(DecryptionError):
        open_lake(s, s.data_dir, Cipher([old])).read_frame("quarantine", "events", DAY)


@pytest.mark.parametrize("backend", ["local", "url"])
def test_frame_writer_commits_the_pieces_as_one_frame_or_nothing(tmp_path, backend):
    """Row groups written piece by piece read back as the concatenated frame (what a whole-frame write
    gives), only once committed; a failure leaves the previous frame and no staged file behind."""
    from recsys.data.lake import Lake

    lake = (
        Lake(tmp_path / "lake")
        if backend == "local"
        else ObjectLake(open_store(str(tmp_path / "lake")), tmp_path / "cache")
    )
    pieces = [
        pd.DataFrame({"user_key": ["a", "b"], "rank": [1, 1], "score": [0.5, 0.25]}),
        pd.DataFrame({"user_key": ["c"], "rank": [2], "score": [0.125]}),
    ]
    whole = pd.concat(pieces, ignore_index=True)
    lake.write_frame("recs", "lists", DAY, whole.iloc[:1])  # the previous version
    with lake.frame_writer("recs", "lists", DAY) as out:
        out.write(pieces[0])
        assert lake.read_frame("recs", "lists", DAY).equals(whole.iloc[:1])  # nothing visible yet
        out.write(pieces[1].iloc[:0])  # an empty piece adds nothing
        out.write(pieces[1])
    assert out.rows == 3
    got = lake.read_frame("recs", "lists", DAY)
    pd.testing.assert_frame_equal(got, whole)
    lake.write_frame("recs", "lists", DAY + pd.Timedelta(days=1), whole)
    pd.testing.assert_frame_equal(got, lake.read_frame("recs", "lists", DAY + pd.Timedelta(days=1)))

    with pytest.raises(RuntimeError, match="shard failed"), lake.frame_writer("recs", "lists", DAY) as out:
        out.write(pieces[1])
        raise RuntimeError("shard failed")
    pd.testing.assert_frame_equal(lake.read_frame("recs", "lists", DAY), whole)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert leftovers == []

    with lake.frame_writer("recs", "lists", DAY) as out:  # no rows at all: the empty frame, whole
        out.write(pieces[0].iloc[:0])
    empty = lake.read_frame("recs", "lists", DAY)
    assert empty.empty and list(empty.columns) == ["user_key", "rank", "score"]
    with pytest.raises(ValueError, match="encrypted"):
        lake.frame_writer("raw", "events", DAY)

"""The lake on a real S3 server (SeaweedFS on loopback, started by the session fixture): every zone through
the store, encryption at rest, a writer killed mid-partition, and the ingestion -> features stages of a
simulated day with ``RECSYS_LAKE_URL=s3://...``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from cryptography.fernet import Fernet
from s3_server import s3_server  # noqa: F401  (the session fixture)

from recsys.config import Settings, load_settings
from recsys.data.object_lake import ObjectLake, open_lake
from recsys.privacy.crypto import MAGIC, Cipher

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 1, 2)
TINY_SIM = {"n_users": 60, "n_videos": 80, "n_categories": 5, "n_authors": 10}


def _settings(server, bucket: str, data_dir: Path, **kw) -> Settings:
    env = server.env()
    return Settings(
        data_dir=data_dir,
        lake_url=f"s3://{bucket}",
        s3={
            "endpoint_url": env["RECSYS_S3__ENDPOINT_URL"],
            "region": env["RECSYS_S3__REGION"],
            "access_key_id": env["RECSYS_S3__ACCESS_KEY_ID"],
            "secret_access_key": env["RECSYS_S3__SECRET_ACCESS_KEY"],
        },
        **kw,
    )


def _objects(server, where: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``bucket/base/prefix``, by key relative to ``bucket/base``."""
    bucket, base = where.split("/", 1)
    c = server.client()
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{base}/{prefix}"):
        for o in page.get("Contents", []):
            out[o["Key"][len(base) + 1 :]] = c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


@pytest.fixture
def s3_lake(s3_server, tmp_path):  # noqa: F811
    bucket = s3_server.new_prefix()
    key = Fernet.generate_key().decode()
    lake = open_lake(_settings(s3_server, bucket, tmp_path / "data"), tmp_path / "data", Cipher([key]))
    assert isinstance(lake, ObjectLake)
    return lake, bucket, key


def test_every_zone_round_trips_on_s3_and_identifier_zones_are_ciphertext(s3_server, s3_lake, tmp_path):  # noqa: F811
    lake, bucket, _ = s3_lake
    df = pd.DataFrame({"user_id": ["alice-raw-id", "bob-raw-id"], "watch_seconds": [1.5, 2.0]})
    for zone in ("raw", "quarantine", "clean", "features", "recs"):
        lake.write_frame(zone, "t", DAY, df)
        lake.write_frame(zone, "t", DAY + timedelta(days=1), df.iloc[:1])
        pd.testing.assert_frame_equal(lake.read_frame(zone, "t", DAY), df)
        assert lake.list_ds(zone, "t") == [DAY, DAY + timedelta(days=1)]
        assert len(lake.read_window(zone, "t", DAY, DAY + timedelta(days=1))) == 3
    lake.write_bytes("landing", "events", DAY, "part-0.jsonl", b'{"user_id": "alice-raw-id"}\n')
    assert lake.read_bytes("landing", "events", DAY, "part-0.jsonl") == b'{"user_id": "alice-raw-id"}\n'
    from recsys.data import sources

    sources.seal_landing(lake, "events", DAY)

    objects = _objects(s3_server, bucket)
    data_objects = {k: v for k, v in objects.items() if not k.endswith("_manifest.json")}
    for zone in ("landing", "raw", "quarantine"):
        mine = {k: v for k, v in data_objects.items() if k.startswith(f"{zone}/")}
        assert mine, f"nothing in {zone} on S3"
        for k, v in mine.items():
            assert v.startswith(MAGIC) and b"alice-raw-id" not in v, k
    clean = [v for k, v in data_objects.items() if k.startswith("clean/")]
    assert clean and all(v.startswith(b"PAR1") for v in clean)  # pseudonymous zones stay plain Parquet
    assert not (tmp_path / "data" / "raw").exists()  # nothing of the lake on local disk


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from recsys.config import load_settings
    from recsys.data import store as store_mod
    from recsys.data.object_lake import open_lake
    from recsys.privacy.crypto import Cipher

    settings = load_settings()  # the lake URL and the S3 server from RECSYS_* in the environment
    lake = open_lake(settings, settings.data_dir, Cipher([sys.argv[1]]))
    put, put_file = store_mod.PartitionStore._put, store_mod.PartitionStore._put_file
    done = []

    def announce(key):  # timing only: after the real upload, a pause after the 2nd part
        done.append(key)
        print("PUT", key, flush=True)
        if len(done) == 2:
            time.sleep(60)

    def announced_put(self, key, data):
        put(self, key, data)
        announce(key)

    def announced_put_file(self, key, path):
        out = put_file(self, key, path)
        announce(key)
        return out

    store_mod.PartitionStore._put = announced_put
    store_mod.PartitionStore._put_file = announced_put_file

    def build(d):
        for i in range(3):
            pd.DataFrame({"v": [2, 2, 2], "part": [i] * 3}).to_parquet(d / f"part-{i}.parquet")

    lake.replace_partition("features", "examples", "2026-01-02", build)
    """
)


def test_a_writer_killed_between_parts_leaves_the_previous_partition_whole(s3_server, tmp_path):  # noqa: F811
    bucket = s3_server.new_prefix()
    key = Fernet.generate_key().decode()
    settings = _settings(s3_server, bucket, tmp_path / "data")
    lake = open_lake(settings, settings.data_dir, Cipher([key]))

    def build_v1(d):
        for i in range(3):
            pd.DataFrame({"v": [1, 1, 1], "part": [i] * 3}).to_parquet(d / f"part-{i}.parquet")

    lake.replace_partition("features", "examples", DAY, build_v1)
    before = lake.store.manifest("features/examples/ds=2026-01-02")

    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, key],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            **s3_server.env(),
            "RECSYS_LAKE_URL": settings.lake_url,
            "RECSYS_DATA_DIR": str(settings.data_dir),
        },
    )
    puts = []
    deadline = time.monotonic() + 120
    while len(puts) < 2 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        puts.append(line.split()[1])
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert len(puts) == 2 and all("_attempt=" in p for p in puts), puts  # killed between part 2 and 3

    # the new attempt's parts are in the bucket, but no reader sees them
    keys = _objects(s3_server, bucket, "features/examples/ds=2026-01-02/")
    attempts = {k.split("/")[3] for k in keys if "_attempt=" in k}
    assert len(attempts) == 2
    assert lake.store.manifest("features/examples/ds=2026-01-02") == before
    local = lake.local_dir("features", "examples", DAY)
    parts = sorted(local.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert all(pd.read_parquet(p)["v"].eq(1).all() for p in parts)  # the previous partition, whole
    assert lake.list_ds("features", "examples") == [DAY]

    # the rerun commits and clears the orphan attempt
    lake.replace_partition("features", "examples", DAY, build_v1)
    keys = _objects(s3_server, bucket, "features/examples/ds=2026-01-02/")
    assert len({k.split("/")[3] for k in keys if "_attempt=" in k}) == 1


def test_ingestion_to_features_of_simulated_days_on_s3(s3_server, tmp_path, monkeypatch):  # noqa: F811
    """land -> collect -> validate -> anonymize over two days, then features, with the lake on S3; the
    training side reads the features through the local cache (one folder per commit)."""
    from recsys import stages

    bucket = s3_server.new_prefix()
    monkeypatch.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", "test-pseudonym-key-0123456789")
    monkeypatch.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("RECSYS_LAKE_URL", f"s3://{bucket}")
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    settings = load_settings(data_dir=tmp_path / "data", simulator=TINY_SIM)
    assert settings.lake_url == f"s3://{bucket}" and settings.s3.endpoint_url == s3_server.endpoint_url

    start = date(2026, 1, 1)
    summaries = {}
    for i in range(2):
        for st in (stages.land, stages.collect, stages.validate, stages.anonymize):
            summaries[st.__name__, i] = st(start + timedelta(days=i), settings)
    last = start + timedelta(days=1)
    feats = stages.features(last, settings)
    assert feats["path"] == f"s3://{bucket}/features/examples/ds={last}"
    assert feats["train_rows"] > 0 and feats["test_rows"] > 0

    keys = _objects(s3_server, bucket, "")
    for zone, dataset in (
        ("landing", "events"),
        ("raw", "events"),
        ("raw", "valid_events"),
        ("clean", "interactions"),
        ("clean", "users"),
        ("features", "examples"),
    ):
        manifests = [k for k in keys if k.startswith(f"{zone}/{dataset}/") and k.endswith("_manifest.json")]
        assert len(manifests) == (1 if zone == "features" else 2), (zone, dataset, manifests)
    landing = json.loads(keys[f"landing/events/ds={start}/_manifest.json"])
    assert list(landing["files"]) == ["part-0.jsonl.enc"]  # sealed once collected
    for k, v in keys.items():
        if k.startswith(("landing/", "raw/", "quarantine/")) and not k.endswith(".json"):
            assert v.startswith(MAGIC), k

    fdir = stages.features_dir(settings, last)
    assert fdir.is_relative_to(tmp_path / "data" / "cache" / "lake") and fdir.name == f"ds={last}"
    assert {"train.parquet", "valid.parquet", "test.parquet", "transform.json"} <= {
        p.name for p in fdir.iterdir()
    }
    assert len(pd.read_parquet(fdir / "train.parquet")) == feats["train_rows"]
    # the local data folder holds no lake zone: only run records, reports and the cache
    assert not any(
        (tmp_path / "data" / z).exists() for z in ("landing", "raw", "quarantine", "clean", "features")
    )

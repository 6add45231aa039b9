from __future__ import annotations

import os

import pandas as pd
import pytest
from cryptography.fernet import Fernet

from recsys.config import load_settings
from recsys.data.lake import Lake
from recsys.privacy.crypto import Cipher, DecryptionError, KeyConfigError, load_fernet_keys


def test_encrypted_zone_roundtrip_and_no_plaintext(tmp_path):
    lake = Lake(tmp_path, Cipher([Fernet.generate_key().decode()]))
    df = pd.DataFrame({"user_id": ["alice-123", "bob-456"], "x": [1, 2]})
    path = lake.write_frame("raw", "events", "2026-01-02", df)
    assert path.name.endswith(".parquet.enc")
    assert b"alice-123" not in path.read_bytes()
    pd.testing.assert_frame_equal(lake.read_frame("raw", "events", "2026-01-02"), df)


def test_wrong_key_fails_loudly(tmp_path):
    Lake(tmp_path, Cipher([Fernet.generate_key().decode()])).write_frame(
        "raw", "e", "2026-01-02", pd.DataFrame({"a": [1]})
    )
    with pytest.raises(DecryptionError, match="cannot be decrypted"):
        Lake(tmp_path, Cipher([Fernet.generate_key().decode()])).read_frame("raw", "e", "2026-01-02")


def test_plain_zone_rewrite_is_idempotent(tmp_path):
    lake = Lake(tmp_path)
    df = pd.DataFrame({"a": [1, 2, 3]})
    for _ in range(2):
        lake.write_frame("clean", "interactions", "2026-01-02", df)
    files = list(lake.partition("clean", "interactions", "2026-01-02").iterdir())
    assert [f.name for f in files] == ["part-0.parquet"]
    assert lake.list_ds("clean", "interactions") == [pd.Timestamp("2026-01-02").date()]


def test_replace_partition_keeps_old_on_failure(tmp_path):
    lake = Lake(tmp_path)
    lake.replace_partition("features", "examples", "2026-01-02", lambda d: (d / "a.txt").write_text("old"))

    def boom(d):
        (d / "a.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        lake.replace_partition("features", "examples", "2026-01-02", boom)
    part = lake.partition("features", "examples", "2026-01-02")
    assert (part / "a.txt").read_text() == "old"
    assert [p.name for p in part.parent.iterdir()] == ["ds=2026-01-02"]  # no temporary leftovers


def test_missing_key_is_a_clear_error_outside_demo(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("RECSYS_DEMO", raising=False)
    with pytest.raises(KeyConfigError, match="RECSYS_PRIVACY__ENCRYPTION_KEYS"):
        load_fernet_keys(load_settings(data_dir=tmp_path))


def test_demo_mode_creates_owner_only_key(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", raising=False)
    keys = load_fernet_keys(load_settings(data_dir=tmp_path, demo=True))
    path = tmp_path / "keys" / "fernet.keys"
    assert path.exists() and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert keys == load_fernet_keys(load_settings(data_dir=tmp_path, demo=True))


def test_rotation_reencrypts_under_new_key():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    blob = Cipher([old]).encrypt(b"secret")
    rotated = Cipher([new, old]).rotate(blob)
    assert Cipher([new]).decrypt(rotated) == b"secret"
    with pytest.raises(DecryptionError):
        Cipher([old]).decrypt(rotated)

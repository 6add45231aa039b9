from __future__ import annotations

import hashlib
import hmac

import pandas as pd
import pytest

from recsys.privacy.anonymize import PolicyError, anonymize_data, coarse_region, ip_prefix
from recsys.privacy.pseudonymize import pseudonym

KEY = b"k" * 32


def raw(**extra):
    df = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "user_id": ["u1", "u2"],
            "email": ["a@x.org", "b@x.org"],
            "ip": ["10.1.2.3", "10.9.9.9"],
            "device": ["ios", "web"],
            "region": ["EU-DE-BE", "NA-US-NY"],
            "ts": pd.to_datetime(["2026-01-02T10:00:00Z"] * 2),
            "session_id": ["s1", "s2"],
            "video_id": [1, 2],
            "position": [1, 2],
            "rec_version": [None, "v1"],
            "clicked": [1, 0],
            "watch_seconds": [3.0, 0.0],
            "liked": [0, 0],
            "shared": [0, 0],
        }
    )
    for k, v in extra.items():
        df[k] = v
    return df


def test_pseudonym_is_hmac_sha256_not_plain_hash():
    expected = hmac.new(KEY, b"user:u1", hashlib.sha256).hexdigest()[:32]
    assert pseudonym("u1", KEY) == expected
    assert pseudonym("u1", KEY) != hashlib.sha256(b"u1").hexdigest()[:32]
    assert pseudonym("u1", KEY) != pseudonym("u1", b"other-key-other-key")
    assert pseudonym("u1", KEY, domain="session") != pseudonym("u1", KEY)


def test_policy_drops_pii_and_generalizes():
    out = anonymize_data(raw(), key=KEY)
    assert "email" not in out and "ip" not in out and "user_id" not in out and "session_id" not in out
    assert out["user_key"].tolist() == [pseudonym("u1", KEY), pseudonym("u2", KEY)]
    assert out["region"].tolist() == ["EU-DE", "NA-US"]
    text = out.astype(str).to_csv()
    for pii in ("a@x.org", "10.1.2.3", "u1,", "EU-DE-BE"):
        assert pii not in text


def test_unknown_column_is_refused_by_name():
    with pytest.raises(PolicyError, match="phone"):
        anonymize_data(raw(phone=["+49", "+1"]), key=KEY)


def test_generalizers():
    assert coarse_region("EU-DE-BE") == "EU-DE"
    assert ip_prefix("192.168.7.9") == "192.168.7.0/24"
    assert ip_prefix("2001:db8::1") == "2001:db8::/48"
    assert ip_prefix("not-an-ip") is None

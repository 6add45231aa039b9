"""Issue 15 (bounded memory): anonymize reads the valid raw events in chunks and writes the clean zone as
row groups; the clean frames are those of the whole-frame minimization, whatever the chunk size."""

from __future__ import annotations

import pandas as pd
import pytest
from hostile import DS, event, jsonl, land

from recsys.privacy.anonymize import anonymize_data, anonymize_day, anonymize_users
from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym


def prepared(settings):
    from recsys import stages

    rows = [event(i, region=["EU-DE-BE", None, "US-CA-SF"][i % 3]) for i in range(40)]
    land(settings.data_dir, jsonl(rows))
    stages.collect(DS, settings)
    stages.validate(DS, settings)
    return stages.open_lake(settings), load_pseudonym_key(settings)


@pytest.mark.parametrize("chunk_rows", [1, 7, 10**6])
def test_chunked_anonymize_writes_the_frames_of_the_whole_day(settings, chunk_rows):
    lake, key = prepared(settings)
    erased = {pseudonym("u0001", key, domain="user")}
    valid = lake.read_frame("raw", "valid_events", DS)
    whole = anonymize_data(valid, key)
    whole = whole[~whole["user_key"].isin(erased)].reset_index(drop=True)
    users = anonymize_users(lake.read_frame("raw", "users", DS), key)
    users = users[~users["user_key"].isin(erased)].reset_index(drop=True)
    summary = anonymize_day(lake, DS, key, erased, chunk_rows)
    got = lake.read_frame("clean", "interactions", DS)
    pd.testing.assert_frame_equal(got, whole, check_exact=True)
    pd.testing.assert_frame_equal(lake.read_frame("clean", "users", DS), users, check_exact=True)
    assert summary == {"interactions_rows": len(whole), "users_rows": len(users)}
    assert 0 < len(whole) < len(valid)  # the erased user's rows are left out
    assert not list(settings.data_dir.rglob(".*.tmp-*"))


def test_a_failed_anonymize_commits_nothing(settings, monkeypatch):
    from recsys.privacy import anonymize

    lake, key = prepared(settings)
    calls = []
    original = anonymize.anonymize_data

    def fail_on_third_chunk(*args, **kw):
        calls.append(1)
        if len(calls) == 4:  # the empty frame, then chunks 1 and 2 written
            raise OSError("disk full")
        return original(*args, **kw)

    monkeypatch.setattr(anonymize, "anonymize_data", fail_on_third_chunk)
    with pytest.raises(anonymize.ChunkError, match=r"OSError at .*\(message withheld") as failed:
        anonymize_day(lake, DS, key, frozenset(), 5)
    assert "disk full" not in str(failed.value)
    clean = settings.data_dir / "clean"
    assert not [p for p in clean.rglob("*") if p.is_file()]  # nothing committed, nothing staged


def test_a_failed_chunk_names_no_raw_value(settings, monkeypatch):
    from recsys.privacy import anonymize

    lake, key = prepared(settings)
    original = anonymize.anonymize_data

    def quoting(frame, *args, **kw):  # an error whose message quotes a raw value, as pandas' can
        if len(frame):
            raise ValueError(f"cannot parse {frame['email'].iloc[0]!r}")
        return original(frame, *args, **kw)

    monkeypatch.setattr(anonymize, "anonymize_data", quoting)
    with pytest.raises(anonymize.ChunkError) as failed:
        anonymize_day(lake, DS, key, frozenset(), 5)
    assert "@example.org" not in str(failed.value) and "ValueError" in str(failed.value)
    chunk = anonymize.RawChunk(lake.read_frame("raw", "valid_events", DS))
    assert "@example.org" not in repr(chunk) and "values withheld" in repr(chunk)

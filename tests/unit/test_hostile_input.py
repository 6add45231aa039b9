"""Issue 18, fixes 1-9: what a hostile but realistic upstream delivers, through the real stages.

Each test writes landing files byte by byte in a temporary data dir, runs collect -> validate (->
anonymize) and checks where every line ended up and why.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

import pytest
from hostile import DS, event, jsonl, land, line, reasons, run_stages, users, videos, zone


def test_invalid_utf8_is_quarantined_as_bad_encoding_never_rewritten(settings):
    latin1 = line(event(1, user_id="uJOSX")).replace(b"uJOSX", b"uJOS\xe9")
    other = line(event(2, user_id="uJOSX")).replace(b"uJOSX", b"uJOS\xe8")
    land(settings.data_dir, jsonl([event(0), latin1, other, event(3)]))
    out = run_stages(settings)
    assert out["validate"]["input_rows"] == 4
    assert out["validate"]["accepted_rows"] == 2
    q = zone(settings, "quarantine", "events")
    bad = q[q["reason"] == "bad_encoding"]
    assert len(bad) == 2
    assert set(bad["raw_bytes"]) == {latin1, other}  # the original bytes, not U+FFFD
    clean = zone(settings, "clean", "interactions")
    assert len(clean) == 2 and clean["event_id"].str.contains("\ufffd").sum() == 0


def test_a_lone_surrogate_escape_is_quarantined_not_a_crash(settings):
    # "\\ud800" is valid JSON text but half a UTF-16 surrogate pair: no UTF-8 store can hold the value
    in_value = line(event(1)).replace(b'"ios"', b'"i\\ud800s"')
    in_key = line(event(2)).replace(b'"device"', b'"dev\\uDC00ice"')
    pair = line(event(3, note="ok")).replace(b'"ok"', b'"ok \\ud83d\\ude00"')  # a whole pair: an emoji
    land(settings.data_dir, jsonl([event(0), in_value, in_key, pair, event(4), event(5)]))
    out = run_stages(settings, names=("collect", "validate"))
    assert out["collect"]["input_rows"] == 6 and out["collect"]["malformed_rows"] == 2
    assert out["validate"]["accepted_rows"] == 4
    q = zone(settings, "quarantine", "events")
    bad = q[q["reason"] == "bad_encoding"]
    bad = bad.assign(line_number=bad["line_number"].astype(int)).sort_values("line_number")
    assert list(bad["line_number"]) == [2, 3]
    assert list(bad["raw_bytes"]) == [in_value, in_key]  # the line as delivered
    malformed = zone(settings, "raw", "events_malformed").sort_values("line_number")
    assert list(malformed["error"]) == [
        "lone surrogate escape in the value of 'device'",
        "lone surrogate escape in a key",
    ]
    raw = zone(settings, "raw", "events")
    assert list(raw.loc[raw["event_id"] == event(3)["event_id"], "note"]) == ["ok \U0001f600"]


def test_a_utf8_bom_does_not_cost_the_first_row(settings):
    land(settings.data_dir, b"\xef\xbb\xbf" + jsonl([event(0), event(1)]))
    out = run_stages(settings, names=("collect", "validate"))
    assert out["collect"]["malformed_rows"] == 0
    assert out["validate"]["accepted_rows"] == 2


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\u0085"])
def test_unicode_line_separators_inside_strings_are_data(settings, sep):
    rows = [event(0), event(1, rec_version=None, device="ios"), event(2)]
    raw = jsonl(rows).replace(b'"region": "EU-DE-BE"', f'"region": "EU-DE-BE", "note": "a{sep}b"'.encode())
    land(settings.data_dir, raw)
    out = run_stages(settings, names=("collect", "validate"))
    assert out["collect"]["input_rows"] == 3 and out["collect"]["malformed_rows"] == 0
    assert out["validate"]["accepted_rows"] == 3


def test_a_file_redelivered_during_collect_is_neither_mixed_nor_lost(settings, monkeypatch):
    from recsys.data.lake import Lake

    first = land(settings.data_dir, jsonl([event(i) for i in range(5)]))
    redelivered = jsonl([event(i) for i in range(100, 103)])
    original = Lake.commit
    done = []

    def commit_then_redeliver(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if not done:  # upstream replaces the file (atomically) while collect commits the raw zone
            tmp = first.with_name("incoming")
            tmp.write_bytes(redelivered)
            os.replace(tmp, first)
            done.append(True)
        return out

    monkeypatch.setattr(Lake, "commit", commit_then_redeliver)
    run_stages(settings, names=("collect",))
    monkeypatch.setattr(Lake, "commit", original)
    assert done
    from recsys.stages import open_lake

    lake = open_lake(settings)
    sealed = lake.cipher.decrypt(first.with_name("part-0.jsonl.enc").read_bytes())
    raw = zone(settings, "raw", "events")
    assert len(raw) == 5 and sealed.count(b"\n") == 5  # what was parsed is what was sealed
    assert first.read_bytes() == redelivered  # the new delivery waits for the next run
    run_stages(settings, names=("collect",))
    assert len(zone(settings, "raw", "events")) == 3


def test_a_symlinked_landing_file_is_refused_with_a_clear_error(settings, tmp_path):
    from recsys.data.sources import LandingError

    target = tmp_path / "passwd"
    target.write_text("root:x:0:0:root:/root:/bin/bash\n")
    path = land(settings.data_dir, jsonl([event(0)]))
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(LandingError, match=r"events/ds=2026-01-01/part-0.jsonl: is a symlink"):
        run_stages(settings, names=("collect",))
    assert not (settings.data_dir / "raw").exists()


@pytest.mark.timeout(60)
def test_a_fifo_landing_file_is_refused_not_read(settings):
    from recsys.data.sources import LandingError

    path = land(settings.data_dir, jsonl([event(0)]))
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(LandingError, match="is not a regular file"):
        run_stages(settings, names=("collect",))


def test_reference_file_errors_name_the_file_and_line_not_the_value(settings):
    from recsys.data.sources import LandingError

    vids = videos()
    vids[1]["duration_seconds"] = "secret-value-42"
    land(settings.data_dir, jsonl([event(0)]), video_rows=vids)
    with pytest.raises(LandingError) as err:
        run_stages(settings, names=("collect",))
    msg = str(err.value)
    assert "videos/ds=2026-01-01/part-0.jsonl line 2" in msg and "duration_seconds" in msg
    assert "secret-value-42" not in msg

    land(settings.data_dir, jsonl([event(0)]), user_rows=users()[:2] + [b'{"user_id": "u9", oops}'])
    with pytest.raises(LandingError, match=r"users/ds=2026-01-01/part-0.jsonl line 3: malformed_json"):
        run_stages(settings, names=("collect",))


def test_duplicates_keep_the_first_valid_copy_and_flag_conflicts(settings):
    rows = [
        event(0, video_id="not-a-number"),  # invalid first copy of e0
        event(0),  # its valid second copy: kept
        event(1),
        event(1),  # an exact repeat
        event(2),
        event(2, watch_seconds=7.0, clicked=1),  # a different version of the same event
    ]
    land(settings.data_dir, jsonl(rows))
    out = run_stages(settings, names=("collect", "validate"))
    assert out["validate"]["accepted_rows"] == 3
    ok = zone(settings, "raw", "valid_events")
    assert sorted(ok["event_id"]) == [event(i)["event_id"] for i in range(3)]
    assert ok.set_index("event_id").loc[event(2)["event_id"], "watch_seconds"] == 0.0
    assert sorted(reasons(settings)) == ["bad_type_video_id", "conflicting_duplicate", "duplicate_event_id"]


def test_an_event_id_reused_on_a_later_day_is_quarantined(settings):
    land(settings.data_dir, jsonl([event(0), event(1)]))
    run_stages(settings, names=("collect", "validate"))
    day2 = DS + timedelta(days=1)
    reused = event(0, ts=f"{day2}T10:00:00Z")
    fresh = event(5, event_id="e20260102-000005", ts=f"{day2}T10:00:00Z")
    land(settings.data_dir, jsonl([reused, fresh]), ds=day2)
    out = run_stages(settings, ds=day2, names=("collect", "validate"))
    assert out["validate"]["accepted_rows"] == 1
    assert reasons(settings, day2) == ["reused_event_id"]
    # rerunning the first day does not see its own ids as reused
    assert run_stages(settings, names=("validate",))["validate"]["accepted_rows"] == 2


def test_json_boolean_labels_are_accepted_as_documented(settings):
    land(settings.data_dir, jsonl([event(0, clicked=True, liked=False), event(1, shared=True)]))
    out = run_stages(settings, names=("collect", "validate"))
    assert out["validate"]["accepted_rows"] == 2
    ok = zone(settings, "raw", "valid_events").sort_values("event_id")
    assert list(ok["clicked"]) == [1, 1] and list(ok["liked"]) == [0, 0] and list(ok["shared"]) == [0, 1]


def test_integers_beyond_int64_have_their_own_rule(settings):
    big = b'"video_id": 99999999999999999999'
    raw = line(event(0)).replace(b'"video_id": 1000', big)
    land(settings.data_dir, jsonl([raw, event(1), event(2, position=2**64), event(3), event(4)]))
    run_stages(settings, names=("collect", "validate"))
    assert sorted(reasons(settings)) == ["int_out_of_range_position", "int_out_of_range_video_id"]
    ok = zone(settings, "raw", "valid_events")
    assert (ok["video_id"] > 0).all()  # nothing wrapped to -2**63


def test_orphan_temp_files_of_dead_runs_are_cleaned_on_the_next_run(settings):
    land(settings.data_dir, jsonl([event(0), event(1)]))
    run_stages(settings, names=("collect",))
    part = settings.data_dir / "raw" / "events" / f"ds={DS}"
    host = socket.gethostname()
    dead = part / f".part-0.parquet.enc.tmp-{host}.999999999-0123abcd"  # no such pid
    old = part / ".part-0.parquet.enc.tmp-89abcdef"  # an old-style name, an hour old
    alive = part / f".part-0.parquet.enc.tmp-{host}.{os.getpid()}-fedcba98"  # a live writer
    young = part / ".part-0.parquet.enc.tmp-76543210"  # unknown writer, just written
    orphan_dir = part.parent / f".ds={DS}.tmp-{host}.999999999-00112233"
    for p in (dead, old, alive, young):
        p.write_bytes(b"partial")
    orphan_dir.mkdir()
    stale = time.time() - 7200
    os.utime(old, (stale, stale))
    run_stages(settings, names=("collect",))
    assert not dead.exists() and not old.exists() and not orphan_dir.exists()
    assert alive.exists() and young.exists()


def test_a_second_run_of_a_busy_stage_fails_fast_with_a_clear_message(settings):
    from recsys.config import load_settings
    from recsys.data.locks import StageBusyError, file_lock

    land(settings.data_dir, jsonl([event(0)]))
    impatient = load_settings(lock_timeout_seconds=0.2)
    busy = pytest.raises(StageBusyError, match=r"stage collect for ds=2026-01-01 is already running")
    with file_lock(settings.data_dir, "collect", DS, 1.0), busy:
        run_stages(impatient, names=("collect",))
    assert not (settings.data_dir / "raw").exists()
    run_stages(impatient, names=("collect",))  # free again
    assert len(zone(settings, "raw", "events")) == 1

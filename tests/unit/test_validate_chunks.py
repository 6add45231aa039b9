"""Issue 15 (bounded memory): the validate stage reads, judges and writes the raw day in chunks.

Whatever the chunk size (and the id bucket size), the stage commits the frames the whole-day path gives
(:func:`recsys.data.validate.validate_events` on the whole frame, then the quarantine of
:func:`quarantine_frame`): same accepted rows, same quarantined rows with the same reasons, order and
types, same summary; duplicates straddling chunks keep their first valid copy; a failed or killed run
commits nothing.
"""

from __future__ import annotations

import io
import os
from datetime import timedelta

import pandas as pd
import pytest
from hostile import DS, event, hostile_day, jsonl, land

from recsys.data import collect
from recsys.data.ingest import validate_day
from recsys.data.validate import accepted_event_ids, quarantine_frame, validate_events

PREVIOUS = DS - timedelta(days=1)
REUSED = [event(2)["event_id"], event(8)["event_id"]]  # accepted yesterday, back today


def lake_of(settings):
    from recsys.stages import open_lake

    return open_lake(settings)


def collected_day(settings):
    """The hostile day collected into the raw zone, and yesterday's accepted ids (two of them reused)."""
    land(settings.data_dir, hostile_day())
    lake = lake_of(settings)
    collect.collect_day(lake, DS, 50)
    lake.write_frame("raw", "valid_events", PREVIOUS, pd.DataFrame({"event_id": [*REUSED, "old-1"]}))
    return lake


def lenient(settings, **update):
    """The corpus is mostly bad rows (many files reuse the same ids): no quarantine-share limit."""
    return settings.validation.model_copy(update={"max_quarantine_share": 1.0, **update})


def whole_day(lake, settings):
    """The whole-day path (as validate_day was before chunking): one frame, one GX run."""
    events = lake.read_frame("raw", "events", DS)
    malformed = lake.read_frame("raw", "events_malformed", DS)
    videos = lake.read_frame("raw", "videos", DS)
    durations = dict(
        zip(videos["video_id"].astype(int), videos["duration_seconds"].astype(float), strict=True)
    )
    cfg = lenient(settings)
    res = validate_events(
        events,
        DS,
        set(durations),
        [],
        None,
        durations=durations,
        n_malformed=len(malformed),
        seen_event_ids=accepted_event_ids(lake, DS, 14),
        max_watch_multiple=cfg.max_watch_multiple,
        min_volume_fraction=cfg.min_volume_fraction,
        max_quarantine_share=cfg.max_quarantine_share,
    )
    return res, quarantine_frame(res.quarantined, malformed)


@pytest.mark.parametrize(
    ("chunk_rows", "bucket_rows"),
    [
        # one GX run per row (~200 runs of ~0.5 s of GX's fixed cost each): in the slow suite
        pytest.param(1, 50, marks=pytest.mark.slow),
        (7, 3),
        (10**6, 10**6),
    ],
)
def test_chunked_validate_commits_the_frames_of_the_whole_day(settings, tmp_path, chunk_rows, bucket_rows):
    lake = collected_day(settings)
    whole, whole_quarantine = whole_day(lake, settings)
    cfg = lenient(settings, id_bucket_rows=bucket_rows)
    summary = validate_day(lake, DS, [], tmp_path / "reports", cfg, 14, chunk_rows)
    valid = lake.read_frame("raw", "valid_events", DS)
    quarantine = lake.read_frame("quarantine", "events", DS)
    pd.testing.assert_frame_equal(valid, whole.accepted, check_exact=True)
    pd.testing.assert_frame_equal(quarantine, whole_quarantine, check_exact=True)
    n_in = len(lake.read_frame("raw", "events", DS)) + len(lake.read_frame("raw", "events_malformed", DS))
    assert summary["input_rows"] == n_in == len(valid) + len(quarantine)  # row conservation, exact
    assert summary["accepted_rows"] == len(valid) and summary["quarantined_rows"] == len(quarantine)
    assert summary["rules"] == {k: v for k, v in whole.report["rule_counts"].items() if v}
    rules = {r for reason in quarantine["reason"] for r in str(reason).split(";")}
    # the hostile corpus reaches the rules that are not about one row, across chunk boundaries
    assert {"duplicate_event_id", "conflicting_duplicate", "reused_event_id", "malformed_json"} <= rules
    assert len(rules) >= 15, sorted(rules)
    assert set(quarantine.loc[quarantine["reason"] == "reused_event_id", "event_id"]) == set(REUSED)
    assert summary["data_docs"] and os.path.exists(summary["data_docs"])


def test_a_failed_batch_commits_nothing(settings, tmp_path):
    lake = collected_day(settings)
    with pytest.raises(Exception, match="volume collapse"):
        validate_day(lake, DS, [10**6, 10**6], tmp_path / "reports", lenient(settings), 14, 7)
    for zone in ("raw", "quarantine"):
        part = settings.data_dir / zone / ("valid_events" if zone == "raw" else "events") / f"ds={DS}"
        assert not part.exists() or not list(part.iterdir())  # nothing committed, nothing staged


def test_the_gx_verdicts_are_the_sums_of_the_chunks(settings, tmp_path):
    lake = collected_day(settings)
    whole, _ = whole_day(lake, settings)
    from recsys.data.validate import EventsValidation, day_duplicates, event_id_text

    events = lake.read_frame("raw", "events", DS)
    ids = event_id_text(events["event_id"])
    day = {"duplicated_ids": day_duplicates(ids), "reused_ids": set(REUSED), "max_quarantine_share": 1.0}
    run = EventsValidation(DS, None, [], None, **day)
    for i in range(0, len(events), 7):
        run.chunk(events.iloc[i : i + 7])
    report, _ = run.finish(0)
    one = EventsValidation(DS, None, [], None, **day)
    one.chunk(events)
    whole_report, _ = one.finish(0)
    assert report["expectations"] == whole_report["expectations"]
    assert report["rule_counts"] == whole_report["rule_counts"]
    unique = next(e for e in report["expectations"] if e["rule"] == "duplicate_event_id")
    assert unique["unexpected_count"] == int(ids.isin(day_duplicates(ids)).sum()) > 0


def test_the_decrypting_reader_reads_any_range():
    import random

    from cryptography.fernet import Fernet

    from recsys.privacy.crypto import Cipher, DecryptionError

    cipher = Cipher([Fernet.generate_key().decode()])
    rng = random.Random(15)
    for n in (0, 1, 15, 16, 17, 4096, 100_003):
        data = rng.randbytes(n)
        f = cipher.open_file(io.BytesIO(cipher.encrypt(data)))
        assert f.size == n and f.read() == data
        for _ in range(30):
            a = rng.randint(0, n)
            b = rng.randint(a, n + 5)
            f.seek(a)
            assert f.read(b - a) == data[a:b]
    blob = bytearray(cipher.encrypt(b"x" * 1000))
    blob[100] = ord("A") if blob[100] != ord("A") else ord("B")
    with pytest.raises(DecryptionError):
        cipher.open_file(io.BytesIO(bytes(blob)))


KILLED_CHILD = """
import sys, time
from pathlib import Path
from recsys import stages
from recsys.config import load_settings
from recsys.data import validate

original, calls = validate.EventsValidation.chunk, []

def stall(self, frame):
    calls.append(1)
    if len(calls) == 3:  # two chunks are in the staged files: stop here until killed
        Path(sys.argv[2]).write_text("staged")
        time.sleep(600)
    return original(self, frame)

validate.EventsValidation.chunk = stall
stages.validate(sys.argv[1], load_settings())
"""


def test_a_killed_validate_commits_nothing_and_the_next_run_cleans_up(settings, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from recsys import stages

    land(settings.data_dir, jsonl([event(i) for i in range(40)]))
    stages.collect(DS, settings)
    marker = tmp_path / "marker"
    env = {**os.environ, "RECSYS_DATA_DIR": str(settings.data_dir), "RECSYS_VALIDATION__CHUNK_ROWS": "5"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(DS), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, "validate ended before it could be killed"
            assert time.monotonic() < deadline, "validate did not reach its third chunk"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    staged = [p for p in settings.data_dir.rglob(".*.tmp-*") if p.is_file()]
    assert staged  # the dead run's staged files (encrypted, hidden) ...
    for p in staged:  # written through the cipher (possibly still in its buffer): never plaintext
        data = p.read_bytes()
        assert (not data or data.startswith(b"RSENC1\n")) and b"u0001" not in data
    outputs = [settings.data_dir / "raw" / "valid_events", settings.data_dir / "quarantine"]
    visible = [p for o in outputs for p in o.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert not visible  # ... and no partition
    summary = stages.validate(DS, settings)  # the next run removes them and succeeds
    assert summary["input_rows"] == summary["accepted_rows"] == 40
    assert not list(settings.data_dir.rglob(".*.tmp-*"))
    assert len(lake_of(settings).read_frame("raw", "valid_events", DS)) == 40


@pytest.mark.parametrize("chunk_rows", [7, 10**6])
def test_a_clean_day_commits_the_whole_day_s_empty_quarantine_types_and_all(settings, tmp_path, chunk_rows):
    land(settings.data_dir, jsonl([event(i) for i in range(20)]))
    lake = lake_of(settings)
    collect.collect_day(lake, DS, 50)
    whole, whole_quarantine = whole_day(lake, settings)
    assert whole_quarantine.empty and len(whole.accepted) == 20
    validate_day(lake, DS, [], tmp_path / "reports", lenient(settings), 14, chunk_rows)
    valid = lake.read_frame("raw", "valid_events", DS)
    pd.testing.assert_frame_equal(valid, whole.accepted, check_exact=True)
    quarantine = lake.read_frame("quarantine", "events", DS)
    pd.testing.assert_frame_equal(quarantine, whole_quarantine, check_exact=True)

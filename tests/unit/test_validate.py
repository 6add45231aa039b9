"""recsys.data.validate: quarantine reasons, batch failures, conservation, Data Docs."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import pandas as pd
import pytest

from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS
from recsys.data.validate import (
    BatchValidationError,
    ValidationResult,
    read_landing_jsonl,
    validate_events,
    validate_users,
    validate_videos,
)

DS = date(2026, 1, 1)
VIDEO_IDS = {1000, 1001, 1002}
DURATIONS = {1000: 10.0, 1001: 60.0, 1002: 120.0}


def events(n: int = 6) -> pd.DataFrame:
    """``n`` clean raw events of DS, loosely typed as json.loads gives them."""
    return pd.DataFrame(
        [
            {
                "event_id": f"e{i}",
                "user_id": f"u{i % 3}",
                "email": f"u{i % 3}@example.org",
                "ip": "10.0.0.1",
                "device": "ios",
                "region": "EU-DE-BE",
                "ts": f"2026-01-01T{i % 24:02d}:{i // 24:02d}:30.000000Z",
                "session_id": "s1",
                "video_id": 1000 + i % 3,
                "position": i + 1,
                "rec_version": None,
                "clicked": i % 2,
                "watch_seconds": 5.0 * (i % 2),
                "liked": 0,
                "shared": 0,
            }
            for i in range(n)
        ]
    )


def run(frame: pd.DataFrame, **kw) -> ValidationResult:
    kw.setdefault("durations", DURATIONS)
    result = validate_events(frame, DS, kw.pop("known", VIDEO_IDS), kw.pop("trailing", []), **kw)
    assert len(result.accepted) + len(result.quarantined) == len(frame)
    assert (
        result.report["accepted"] + result.report["quarantined"] == result.report["input_rows"] == len(frame)
    )
    return result


def test_clean_batch_passes_with_nothing_quarantined():
    result = run(events())
    assert len(result.quarantined) == 0 and len(result.accepted) == 6
    assert {c: str(t) for c, t in result.accepted.dtypes.items()} == {
        c: str(t)
        for c, t in pd.DataFrame({c: pd.Series(dtype=t) for c, t in RAW_EVENTS.items()}).dtypes.items()
    }
    assert result.report["gx_success"] and result.report["passed"]
    assert all(e["success"] for e in result.report["expectations"])
    assert set(result.report["rule_counts"].values()) == {0}
    assert result.data_docs_path is None


def test_castable_loose_values_are_accepted_and_typed():
    frame = events(3).astype(object)
    frame.loc[0, ["video_id", "watch_seconds", "clicked"]] = ["1001", "12.5", True]
    frame.loc[1, ["video_id", "ts"]] = [1002.0, "2026-01-01 05:00:00+00:00"]
    result = run(frame)
    assert len(result.quarantined) == 0
    assert result.accepted.loc[0, "video_id"] == 1001 and result.accepted.loc[0, "watch_seconds"] == 12.5
    assert result.accepted.loc[0, "clicked"] == 1
    assert result.accepted.loc[1, "ts"] == pd.Timestamp("2026-01-01 05:00", tz="UTC")
    assert len(run(result.accepted).quarantined) == 0  # typed input (e.g. read back from parquet) passes too


# One bad value per row: (column, value, the reason it must be quarantined for).
FAULTS = [
    ("event_id", "  ", "null_event_id"),
    ("user_id", None, "null_user_id"),
    ("video_id", None, "null_video_id"),
    ("ts", None, "null_ts"),
    ("video_id", "abc", "bad_type_video_id"),
    ("video_id", 1000.5, "bad_type_video_id"),
    ("position", "first", "bad_type_position"),
    ("watch_seconds", "12.3s", "bad_type_watch_seconds"),
    ("clicked", "yes", "bad_type_clicked"),
    ("ts", "yesterday", "bad_type_ts"),
    ("clicked", 2, "not_binary_clicked"),
    ("device", "fridge", "unknown_device"),
    ("watch_seconds", -1.0, "negative_watch_seconds"),
    ("watch_seconds", 51.0, "watch_exceeds_duration"),  # video 1000 lasts 10 s; 5x is allowed
    ("position", 0, "position_below_1"),
    ("ts", "2030-06-01T12:00:00Z", "ts_outside_ds"),  # future
    ("ts", "2026-01-02T00:00:00Z", "ts_outside_ds"),  # the end of the day is exclusive
    ("ts", "2025-12-31T23:59:59Z", "ts_outside_ds"),
    ("video_id", 4242, "unknown_video_id"),
]


def test_each_bad_row_is_quarantined_with_its_reason():
    frame = events(2 * len(FAULTS)).assign(video_id=1000).astype(object)
    for i, (column, value, _) in enumerate(FAULTS):
        frame.at[2 * i, column] = value  # odd rows stay clean
    result = run(frame)
    expected = pd.DataFrame({"row": [2 * i for i in range(len(FAULTS))], "reason": [f[2] for f in FAULTS]})
    got = pd.DataFrame({"row": result.quarantined.index * 2, "reason": result.quarantined["reason"].tolist()})
    pd.testing.assert_frame_equal(got, expected)
    assert result.accepted["event_id"].tolist() == [f"e{2 * i + 1}" for i in range(len(FAULTS))]
    counts = pd.Series([f[2] for f in FAULTS]).value_counts().to_dict()
    assert {k: v for k, v in result.report["rule_counts"].items() if v} == counts
    verdicts = {e["rule"]: e["success"] for e in result.report["expectations"]}
    assert {rule for rule, ok in verdicts.items() if not ok} == set(counts)
    assert not result.report["gx_success"] and result.report["passed"]


def test_quarantine_keeps_original_values_as_strings_and_joins_reasons():
    frame = events().astype(object)
    frame.loc[1, ["user_id", "watch_seconds", "device"]] = [None, "12.3s", "fridge"]
    result = run(frame)
    row = result.quarantined.iloc[0]
    assert row["reason"] == "null_user_id;bad_type_watch_seconds;unknown_device"
    assert row["watch_seconds"] == "12.3s" and pd.isna(row["user_id"]) and row["video_id"] == "1001"
    assert all(str(t) == "string" for t in result.quarantined.dtypes)
    assert list(result.quarantined.columns) == [*frame.columns, "reason"]


def test_duplicate_events_keep_the_first_copy():
    frame = pd.concat([events(), events().iloc[[1, 1]]], ignore_index=True)
    result = run(frame)
    assert result.quarantined["event_id"].tolist() == ["e1", "e1"]
    assert set(result.quarantined["reason"]) == {"duplicate_event_id"}
    assert result.accepted["event_id"].tolist() == [f"e{i}" for i in range(6)]
    # GX's verdict counts every copy; the quarantine only the later ones.
    unique = next(e for e in result.report["expectations"] if e["rule"] == "duplicate_event_id")
    assert unique["success"] is False and unique["unexpected_count"] == 3


def test_missing_column_fails_the_batch_and_names_it():
    with pytest.raises(
        BatchValidationError, match=r"expect_table_columns_to_match_set.*\['video_id', 'position'\]"
    ):
        run(events().drop(columns=["video_id", "position"]))


def test_empty_partition_fails_the_batch():
    with pytest.raises(BatchValidationError, match="partition is empty.*observed 0 rows"):
        run(events().iloc[:0])
    with pytest.raises(BatchValidationError, match="empty"):
        run(pd.DataFrame())


def test_volume_collapse_fails_the_batch_with_the_observed_count(tmp_path):
    with pytest.raises(
        BatchValidationError,
        match=r"volume collapse, observed 6 rows < 30% of the trailing "
        r"median 100",
    ) as err:
        run(events(), trailing=[90, 100, 120], reports_dir=tmp_path)
    assert err.value.report["failed"] == "volume_collapse"
    assert err.value.data_docs_path.exists()  # the failing batch is in the Data Docs
    assert run(events(), trailing=[20, 20]).report["volume"]["min_rows"] == 6
    assert run(events(), trailing=[1000]).report["passed"]  # one trailing day is not a baseline


def test_mostly_bad_batch_fails():
    frame = events().astype(object)
    frame.loc[:3, "watch_seconds"] = "1s"
    with pytest.raises(BatchValidationError, match=r"max_quarantine_share=50% failed: observed 66.7%") as err:
        run(frame)
    assert err.value.report["rule_counts"]["bad_type_watch_seconds"] == 4


def test_malformed_json_lines_are_set_aside(tmp_path):
    good = events(3).to_json(orient="records", lines=True).strip().split("\n")
    path = tmp_path / "part-0.jsonl"
    path.write_text("\n".join([good[0], '{"event_id": "e9", ', good[1], "", "[1, 2]", good[2]]) + "\n")
    rows, malformed = read_landing_jsonl(tmp_path)
    assert len(rows) == 3 and rows["event_id"].tolist() == ["e0", "e1", "e2"]
    assert malformed["reason"].tolist() == ["malformed_json", "not_json_object"]
    assert malformed["raw_line"].tolist() == ['{"event_id": "e9", ', "[1, 2]"]
    assert malformed["line_number"].tolist() == [2, 5]
    result = run(rows, n_malformed=len(malformed))
    assert result.report["malformed_lines"] == 2 and result.report["quarantine_share"] == pytest.approx(0.4)


def test_data_docs_are_built_under_reports_dir(tmp_path):
    result = run(events(), reports_dir=tmp_path / "reports")
    assert result.data_docs_path is not None and result.data_docs_path.name == "index.html"
    assert result.data_docs_path.is_file() and result.data_docs_path.is_relative_to(tmp_path / "reports")
    html = " ".join(p.read_text() for p in result.data_docs_path.parent.rglob("*.html"))
    assert "u0@example.org" not in html and "10.0.0.1" not in html  # identifiers are masked before GX


def test_reference_tables_pass_and_fail():
    videos = pd.DataFrame(
        {
            "video_id": [1, 2],
            "author_id": [7, 7],
            "category": ["music", "news"],
            "tags": ["a", "b"],
            "duration_seconds": [10.0, 20.0],
            "title": ["x", "y"],
            "upload_ts": ["2025-12-01T00:00:00Z"] * 2,
            "visible": [True, True],
        }
    )
    result = validate_videos(videos)
    assert list(result.accepted.columns) == list(VIDEOS) and result.report["passed"]
    with pytest.raises(BatchValidationError, match=r"expect_column_values_to_be_unique\(video_id\)"):
        validate_videos(videos.assign(video_id=[1, 1]))
    with pytest.raises(BatchValidationError, match=r"expect_column_values_to_be_between\(duration_seconds\)"):
        validate_videos(videos.assign(duration_seconds=[0.0, 20.0]))
    with pytest.raises(BatchValidationError, match="cannot be read as Int64"):
        validate_videos(videos.assign(video_id=["1", "two"]))

    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "email": ["a@x.org", "b@x.org"],
            "age_band": ["18-24"] * 2,
            "gender": ["f", "m"],
            "region": ["EU-DE-BE"] * 2,
            "device": ["ios", "web"],
            "activity": ["low", "mid"],
            "signup_ts": ["2025-01-01T00:00:00Z"] * 2,
        }
    )
    assert list(validate_users(users).accepted.columns) == list(RAW_USERS)
    with pytest.raises(BatchValidationError, match=r"to_not_be_null\(user_id\)") as err:
        validate_users(users.assign(user_id=["u1", None]))
    assert "u1" not in str(err.value)
    with pytest.raises(BatchValidationError, match="missing required column"):
        validate_users(users.drop(columns=["email"]))


def test_importing_the_module_does_not_import_great_expectations():
    code = "import sys, recsys.data.validate; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

"""One Great Expectations Data Docs site for every day: the index lists each day's runs of the events and
of the reference tables (users, videos), and stays one site (one index) however many days are validated."""

from __future__ import annotations

from datetime import date

import pandas as pd
from test_validate import DURATIONS, VIDEO_IDS, events

from recsys.catalog import Catalog
from recsys.config import Settings
from recsys.data.validate import validate_events, validate_users, validate_videos

DAYS = [date(2026, 1, 1), date(2026, 1, 2)]
VIDEOS = pd.DataFrame(
    {
        "video_id": [1000, 1001, 1002],
        "author_id": [7, 7, 8],
        "category": ["music", "news", "news"],
        "tags": ["a", "b", "c"],
        "duration_seconds": [10.0, 60.0, 120.0],
        "title": ["x", "y", "z"],
        "upload_ts": ["2025-12-01T00:00:00Z"] * 3,
        "visible": [True, True, True],
    }
)
USERS = pd.DataFrame(
    {
        "user_id": ["u0", "u1", "u2"],
        "email": ["u0@example.org", "u1@example.org", "u2@example.org"],
        "age_band": ["18-24"] * 3,
        "gender": ["f", "m", "f"],
        "region": ["EU-DE-BE"] * 3,
        "device": ["ios", "web", "ios"],
        "activity": ["low", "mid", "high"],
        "signup_ts": ["2025-01-01T00:00:00Z"] * 3,
    }
)


def day_events(ds: date) -> pd.DataFrame:
    frame = events()
    return frame.assign(ts=frame["ts"].str.replace("2026-01-01", ds.isoformat()))


def test_the_catalog_names_one_validation_project_for_every_day(tmp_path):
    catalog = Catalog.from_settings(Settings(data_dir=tmp_path))
    assert catalog.validation_reports == tmp_path / "reports" / "validation"


def test_one_site_lists_every_day_and_the_reference_tables(tmp_path):
    reports = tmp_path / "reports" / "validation"
    indexes = set()
    for ds in DAYS:
        for result in (
            validate_videos(VIDEOS, ds=ds, reports_dir=reports),
            validate_users(USERS, ds=ds, reports_dir=reports),
            validate_events(day_events(ds), ds, VIDEO_IDS, [], reports, durations=DURATIONS),
        ):
            indexes.add(result.data_docs_path)
    (index,) = indexes  # one site, one index
    assert index.is_file() and index.is_relative_to(reports)
    assert len(list(reports.rglob("index.html"))) == 1
    html = index.read_text()
    for ds in DAYS:
        assert f"ds={ds}" in html
    for suite in ("raw_events", "raw_users", "videos"):
        assert suite in html, suite
    pages = " ".join(p.read_text() for p in index.parent.rglob("*.html"))
    assert "u0@example.org" not in pages and "10.0.0.1" not in pages  # identifiers masked before GX


def test_deferred_docs_are_built_once_on_the_way_out_and_list_every_run(tmp_path):
    from recsys.data.suite_run import deferred_data_docs

    reports = tmp_path / "reports" / "validation"
    with deferred_data_docs(reports):
        for ds in DAYS:
            result = validate_events(day_events(ds), ds, VIDEO_IDS, [], reports, durations=DURATIONS)
            assert not result.data_docs_path.exists()  # not rebuilt after each run
        validate_users(USERS, ds=DAYS[-1], reports_dir=reports)
    index = result.data_docs_path
    assert index.is_file() and list(reports.rglob("index.html")) == [index]
    html = index.read_text()
    for ds in DAYS:
        assert f"ds={ds}" in html
    assert "raw_events" in html and "raw_users" in html


def test_deferred_docs_are_built_when_the_block_fails(tmp_path):
    import pytest

    from recsys.data.suite_run import deferred_data_docs

    reports = tmp_path / "reports" / "validation"
    with pytest.raises(RuntimeError, match="stopped"), deferred_data_docs(reports):
        result = validate_events(day_events(DAYS[0]), DAYS[0], VIDEO_IDS, [], reports, durations=DURATIONS)
        raise RuntimeError("stopped")
    assert result.data_docs_path.is_file() and f"ds={DAYS[0]}" in result.data_docs_path.read_text()

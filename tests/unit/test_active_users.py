"""Lists go to every user engaged in the active window, plus the day's actives (issue 13, point 5)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from recsys.data.lake import Lake
from recsys.serving.active import active_user_keys


def _day(lake: Lake, ds: date, rows: list[tuple[str, int]]) -> None:
    frame = pd.DataFrame(
        {
            "user_key": [u for u, _ in rows],
            "clicked": [c for _, c in rows],
            "ts": pd.Timestamp(ds, tz="UTC"),
        }
    )
    lake.write_frame("clean", "interactions", ds, frame)


def test_window_of_engaged_users_plus_today(tmp_path):
    lake = Lake(tmp_path)
    ds = date(2026, 3, 31)
    _day(lake, ds - timedelta(days=40), [("too-old", 1)])
    _day(lake, ds - timedelta(days=29), [("edge", 1), ("only-saw", 0)])
    _day(lake, ds - timedelta(days=3), [("returning", 1)])
    _day(lake, ds, [("today-no-click", 0), ("returning", 1)])
    _day(lake, ds + timedelta(days=1), [("future", 1)])
    assert active_user_keys(lake, ds, 30) == ["edge", "returning", "today-no-click"]
    assert active_user_keys(lake, ds, 1) == ["returning", "today-no-click"]

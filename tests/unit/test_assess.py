"""The monitor's day as pure functions on small frames: figures, drift probe, retrain decision, record."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from recsys.config import MonitoringSettings
from recsys.monitoring.assess import (
    assess_day,
    day_figures,
    quality_snapshot,
    record,
    served_model,
)

DS = date(2026, 1, 10)
CFG = MonitoringSettings()  # ctr_drop 0.2, baseline_days 3, min_baseline_days 2, cooldown_days 3


def _events(rows: list[tuple[str, int, int, str | None, str]]) -> pd.DataFrame:
    """(user_key, video_id, clicked, rec_version, ts) rows in the clean interactions' columns."""
    return pd.DataFrame(
        {
            "user_key": [r[0] for r in rows],
            "video_id": pd.array([r[1] for r in rows], dtype="Int64"),
            "clicked": [r[2] for r in rows],
            "rec_version": [r[3] for r in rows],
            "ts": pd.to_datetime([r[4] for r in rows], utc=True),
            "watch_seconds": [10.0 * r[2] for r in rows],
            "liked": 0,
            "shared": 0,
            "device": "ios",
        }
    )


VIDEOS = pd.DataFrame({"video_id": [1, 2, 3], "category": ["a", "b", "a"], "visible": [True, True, False]})


def test_day_figures_measure_the_recommended_impressions_and_leave_the_inputs_alone():
    today = _events(
        [
            ("u1", 1, 1, "v9", "2026-01-10T08:00Z"),
            ("u1", 2, 0, "v9", "2026-01-10T08:01Z"),
            ("u2", 1, 0, None, "2026-01-10T09:00Z"),
            ("u3", 2, 1, None, "2026-01-10T21:00Z"),
        ]
    )
    past = _events([("u1", 1, 0, None, "2026-01-09T08:00Z"), ("u2", 2, 1, None, "2026-01-09T21:00Z")])
    before = (today.copy(), past.copy())
    day = day_figures(today, VIDEOS, past)
    assert day["ctr"] == 0.5 and day["ctr_exploration"] == 0.5
    assert day["recommended_impressions"] == 2 and day["exploration_impressions"] == 2
    assert day["coverage"] == pytest.approx(2 / 2)  # two recommended videos, two visible
    assert day["cold_start_share"] == pytest.approx(1 / 3)  # u3 is new
    assert "by_rec_version" not in day
    assert set(day["psi"]) == {"device", "category", "hour"}
    assert day["psi"]["device"] == pytest.approx(0.0)  # one device on both sides
    pd.testing.assert_frame_equal(today, before[0])  # no category/hour columns added to the caller's frames
    pd.testing.assert_frame_equal(past, before[1])


def test_day_figures_without_a_past_have_no_drift():
    today = _events([("u1", 1, 1, None, "2026-01-10T08:00Z")])
    day = day_figures(today, VIDEOS, today.iloc[:0])
    assert day["psi"] == {} and day["cold_start_share"] is None


def test_served_model_is_the_one_model_behind_the_lists_or_none():
    assert served_model({"7"}) == "7"
    assert served_model(set()) is None
    assert served_model({"7", "8"}) is None


def _history(ctrs: list[float], model: str = "3") -> list[dict]:
    days = [DS - timedelta(days=len(ctrs) - i) for i in range(len(ctrs))]
    return [
        {"ds": str(d), "ctr": c, "served_model": model, "psi": {}} for d, c in zip(days, ctrs, strict=True)
    ]


def test_a_ctr_drop_against_the_baseline_fires_a_retrain_with_the_degraded_window():
    a = assess_day({"ctr": 0.05, "served_model": "3", "psi": {}}, _history([0.10, 0.10, 0.10]), CFG, DS)
    assert a.retrain and any("ctr" in r.lower() for r in a.reasons)
    assert a.window_days == 1  # only the degraded day is fresh data for the retrain
    rec = record({"ctr": 0.05}, a, "3")
    assert rec["retrain"] is True and rec["window_days"] == 1 and rec["model_version"] == "3"


def test_a_steady_ctr_does_not_fire_and_records_no_window():
    a = assess_day({"ctr": 0.10, "served_model": "3", "psi": {}}, _history([0.10, 0.11, 0.10]), CFG, DS)
    assert not a.retrain
    assert record({"ctr": 0.10}, a, "3")["window_days"] is None


def test_popularity_days_and_days_before_the_last_retrain_are_no_baseline():
    # the fallback's CTR says nothing about a model: no baseline, no CTR rule
    a = assess_day(
        {"ctr": 0.01, "served_model": "3", "psi": {}}, _history([0.2, 0.2], "baseline-popularity"), CFG, DS
    )
    assert not a.retrain
    # a retrain answered the high days: they are not the level to return to
    b = assess_day(
        {"ctr": 0.05, "served_model": "3", "psi": {}},
        _history([0.10, 0.10, 0.10]),
        CFG,
        DS,
        last_retrain=DS - timedelta(days=1),
    )
    assert not b.retrain


def test_a_stale_model_fires_and_the_snapshot_says_so():
    a = assess_day(
        {"ctr": 0.10, "served_model": "3", "psi": {}},
        [],
        CFG,
        DS,
        model_trained_at=DS - timedelta(days=CFG.max_model_age_days + 1),
    )
    assert a.retrain
    snap = quality_snapshot(DS, "3", {"ctr": 0.10, "psi": {"device": 0.01}}, a)
    assert snap == {
        "ds": "2026-01-10",
        "model_version": "3",
        "online": {"ctr": 0.10, "psi": {"device": 0.01}},
        "psi": {"device": 0.01},
        "retrain_recommended": True,
    }

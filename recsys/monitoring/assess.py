"""The monitor's day: online figures and drift of one day, then the retrain decision over the history.

Pure functions of frames and dicts; the monitor stage reads their inputs (the clean zone, the run
records, the retrain log, the registry) and writes their outputs (the quality snapshot, the retrain log,
its run record):

    day = day_figures(events, videos, past)          # CTR, coverage, ..., PSI of the day's population
    a = assess_day(day, history, settings.monitoring, ds, last_retrain=..., model_trained_at=...)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from recsys.config import MonitoringSettings
from recsys.monitoring.drift import feature_psi
from recsys.monitoring.online import compute_metrics
from recsys.monitoring.rules import (
    RetrainDecision,
    check_retraining_needed,
    ctr_baseline_rows,
    degraded_streak_days,
)

log = logging.getLogger(__name__)
DRIFT_FEATURES = ("device", "category", "hour")


def day_figures(events: pd.DataFrame, videos: pd.DataFrame, past: pd.DataFrame) -> dict[str, Any]:
    """What users did on the day (``events``) with the catalog ``videos``, against the ``past`` window.

    The PSI of the population is measured on impressions not from a published list (exploration and users
    without a list): what the model chose to show would otherwise read as drift whenever it changes. The
    inputs are not modified.
    """
    known = set(past["user_key"].dropna().astype(str))
    day = compute_metrics(
        events,
        catalog_size=int(videos["visible"].astype(bool).sum()),
        known_users=known if len(past) else None,
    )
    cat = dict(zip(videos["video_id"].astype("Int64"), videos["category"], strict=True))
    now, before = events.copy(), past.copy()
    for f in (now, before):
        f["category"] = f["video_id"].map(cat)
        f["hour"] = pd.to_datetime(f["ts"], utc=True).dt.hour
    probe_past, probe_now = before[before["rec_version"].isna()], now[now["rec_version"].isna()]
    if not len(probe_past) or not len(probe_now):
        probe_past, probe_now = before, now
    psi = feature_psi(probe_past, probe_now, list(DRIFT_FEATURES)) if len(past) else {}
    return {k: v for k, v in day.items() if k != "by_rec_version"} | {"psi": psi}


def served_model(models: set[str]) -> str | None:
    """The one model behind the day's list versions; None when there were none or several."""
    return next(iter(models)) if len(models) == 1 else None


@dataclass(frozen=True)
class Assessment:
    """The monitor's verdict on a day."""

    decision: RetrainDecision
    window_days: int | None  # the retrain's fresh window: the degraded days after a CTR drop

    @property
    def retrain(self) -> bool:
        return bool(self.decision.retrain)

    @property
    def reasons(self) -> list[str]:
        return self.decision.reasons


def assess_day(
    day: dict[str, Any],
    history: list[dict[str, Any]],
    settings: MonitoringSettings,
    ds: date,
    *,
    last_retrain: date | None = None,
    model_trained_at: date | None = None,
) -> Assessment:
    """Decide on a retrain from ``day`` (:func:`day_figures` plus model figures) and earlier days' figures.

    The CTR baseline is the earlier days whose lists came from a model (the popularity fallback's CTR says
    nothing about a model), since the last monitor-triggered retrain (that retrain answered a degradation:
    the days before it are not the level to return to). Scheduled retrains stay in the baseline, so a
    daily-trained model that gets worse is caught like a stale one.
    """
    rows = ctr_baseline_rows(history, last_retrain=last_retrain) + [day | {"ds": str(ds)}]
    decision = check_retraining_needed(
        rows, settings, today=ds, last_retrain=last_retrain, model_trained_at=model_trained_at
    )
    return Assessment(decision, degraded_streak_days(rows, settings, today=ds) or None)


def quality_snapshot(ds: date, model_version: str, day: dict[str, Any], a: Assessment) -> dict[str, Any]:
    """The figures the exporter serves to Prometheus until the next monitor run."""
    return {
        "ds": str(ds),
        "model_version": model_version,
        "online": day,
        "psi": day.get("psi", {}),
        "retrain_recommended": a.retrain,
    }


def record(day: dict[str, Any], a: Assessment, model_version: str) -> dict[str, Any]:
    """The monitor's run record of the day (what later days read back as history)."""
    return {
        "metrics": day,
        "retrain": a.retrain,
        "reasons": a.reasons,
        "window_days": a.window_days if a.retrain else None,
        "model_version": model_version,
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def log_assessment(ds: date, model_version: str, day: dict[str, Any], a: Assessment) -> None:
    """The day's headline figures and the decision in the task log."""
    ctx = {"ds": str(ds), "stage": "monitor", "model_version": model_version}
    log.info(
        "monitor ds=%s model=%s: ctr recommended %s (%d impressions), exploration %s (%d)",
        ds,
        model_version,
        _fmt(day.get("ctr")),
        day.get("recommended_impressions", 0),
        _fmt(day.get("ctr_exploration")),
        day.get("exploration_impressions", 0),
        extra=ctx,
    )
    if a.retrain:
        log.warning(
            "monitor ds=%s: RETRAIN (window %s day(s)): %s",
            ds,
            a.window_days or "default",
            "; ".join(a.reasons),
            extra=ctx,
        )
    elif a.reasons:
        log.info("monitor ds=%s: no retrain: %s", ds, "; ".join(a.reasons), extra=ctx)

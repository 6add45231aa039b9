"""Online quality: what users did with the published lists.

Everything here is pure (frames and dicts in, dicts out). Logging interactions lives in
:mod:`recsys.monitoring.interactions`, drift in :mod:`recsys.monitoring.drift`, the retrain rules in
:mod:`recsys.monitoring.rules` (all re-exported here); :func:`recsys.monitoring.assess.assess_day`
strings them together::

    day = compute_metrics(events, catalog_size=n_videos, known_users=seen_before)
    day |= {"ds": ds, "psi": feature_psi(train_window, events, ["device", "position"])}
    decision = check_retraining_needed(history + [day], settings.monitoring, today=ds, ...)
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.monitoring.drift import feature_psi, population_stability_index  # noqa: F401  (re-exported)
from recsys.monitoring.interactions import log_user_interaction, read_interaction_log  # noqa: F401
from recsys.monitoring.rules import (  # noqa: F401  (re-exported)
    FALLBACK_MODEL,
    RetrainDecision,
    check_retraining_needed,
    ctr_baseline_rows,
    degraded_streak_days,
)

# --------------------------------------------------------------------------------------------------
# Online metrics of one day
# --------------------------------------------------------------------------------------------------


def _mean(values: pd.Series) -> float | None:
    """Mean over the known values (missing labels are left out); None when nothing is known."""
    known = pd.to_numeric(values, errors="coerce").dropna()
    return float(known.mean()) if len(known) else None


def compute_metrics(
    events: pd.DataFrame | list[dict[str, Any]] | str | Path | None = None,
    *,
    catalog_size: int | None = None,
    known_users: Collection[str] | None = None,
) -> dict[str, Any]:
    """Online metrics of one day's impressions (columns as in ``CLEAN_EVENTS``).

    An impression with a ``rec_version`` came from a published list ("recommended"); one without is
    exploration. The quality figures describe recommended impressions, so they measure the model;
    exploration CTR is the yardstick next to it. Missing labels are left out of a rate.

    Args:
        events: the day's impressions: a frame (the clean zone's, or :func:`read_interaction_log`'s),
            a list of :func:`log_user_interaction` records or their JSON-lines file; default today's
            interaction log.
        catalog_size: number of recommendable videos; ``coverage`` is None without it.
        known_users: user keys with history before this day; ``cold_start_share`` is None without it.

    Returns:
        ``impressions``, ``recommended_impressions``, ``exploration_impressions``, ``users``,
        ``ctr`` (recommended), ``ctr_exploration``, ``watch_seconds_per_impression``, ``like_rate``,
        ``share_rate``, ``coverage`` (distinct recommended videos / catalog size),
        ``cold_start_share`` (share of the day's users not in ``known_users``), and
        ``by_rec_version``: ``{version: {impressions, ctr, watch_seconds_per_impression, like_rate}}``.
        Rates are None when there is nothing to divide. ``ds``: the latest day of the impressions (ISO
        date; None without any), so a list of these dicts is a history for :func:`check_retraining_needed`.
    """
    if not isinstance(events, pd.DataFrame):
        events = read_interaction_log(events)
    recommended_mask = events["rec_version"].notna()
    rec = events[recommended_mask]
    explore = events[~recommended_mask]
    users = set(events["user_key"].dropna())
    by_version = {
        str(version): {
            "impressions": int(len(group)),
            "ctr": _mean(group["clicked"]),
            "watch_seconds_per_impression": _mean(group["watch_seconds"]),
            "like_rate": _mean(group["liked"]),
        }
        for version, group in rec.groupby("rec_version", sort=True)
    }
    coverage = None
    if catalog_size:
        coverage = rec["video_id"].dropna().nunique() / catalog_size
    cold_start = None
    if known_users is not None and users:
        cold_start = len(users - set(known_users)) / len(users)
    return {
        "impressions": int(len(events)),
        "recommended_impressions": int(len(rec)),
        "exploration_impressions": int(len(explore)),
        "users": len(users),
        "ctr": _mean(rec["clicked"]),
        "ctr_exploration": _mean(explore["clicked"]),
        "watch_seconds_per_impression": _mean(rec["watch_seconds"]),
        "like_rate": _mean(rec["liked"]),
        "share_rate": _mean(rec["shared"]),
        "coverage": coverage,
        "cold_start_share": cold_start,
        "by_rec_version": by_version,
        "ds": _latest_day(events),
    }


def _latest_day(events: pd.DataFrame) -> str | None:
    if "ts" not in events.columns or not len(events):
        return None
    ts = pd.to_datetime(events["ts"], utc=True, errors="coerce").max()
    return None if pd.isna(ts) else ts.date().isoformat()

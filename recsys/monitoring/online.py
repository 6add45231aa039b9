"""Online quality: what users did with the published lists.

Everything here is pure (frames and dicts in, dicts out) except :func:`log_user_interaction`, which
appends to the sink it is given. Drift lives in :mod:`recsys.monitoring.drift`, the retrain rules in
:mod:`recsys.monitoring.rules` (both re-exported here); :func:`recsys.monitoring.assess.assess_day`
strings them together::

    day = compute_metrics(events, catalog_size=n_videos, known_users=seen_before)
    day |= {"ds": ds, "psi": feature_psi(train_window, events, ["device", "position"])}
    decision = check_retraining_needed(history + [day], settings.monitoring, today=ds, ...)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.monitoring.drift import feature_psi, population_stability_index  # noqa: F401  (re-exported)
from recsys.monitoring.rules import (  # noqa: F401  (re-exported)
    FALLBACK_MODEL,
    RetrainDecision,
    check_retraining_needed,
    ctr_baseline_rows,
    degraded_streak_days,
)

# --------------------------------------------------------------------------------------------------
# Logging interactions
# --------------------------------------------------------------------------------------------------


def log_user_interaction(
    sink: list[dict[str, Any]] | str | Path,
    *,
    user_key: str,
    video_id: int,
    rec_version: str | None,
    position: int | None,
    clicked: int = 0,
    watch_seconds: float = 0.0,
    liked: int = 0,
    shared: int = 0,
    device: str | None = None,
    region: str | None = None,
    session_key: str | None = None,
    ts: datetime | str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Record one impression and the user's response, linked to the list version and slate position.

    The record has the columns of ``recsys.data.schema.CLEAN_EVENTS``, so
    ``conform(pd.DataFrame(records), CLEAN_EVENTS)`` reads a batch of them. ``user_key`` is the keyed
    pseudonym (``recsys.privacy``), never a raw user id. ``rec_version=None`` marks an exploration
    impression (not from a published list).

    Args:
        sink: a list (the record is appended) or a path (the record is appended as one JSON line).
        ts: when it happened (default: now, UTC).
        event_id: default a random UUID; pass one to make reruns idempotent.

    Returns:
        The record that was logged.
    """
    when = ts if ts is not None else datetime.now(UTC)
    record = {
        "event_id": event_id or uuid.uuid4().hex,
        "user_key": user_key,
        "session_key": session_key,
        "device": device,
        "region": region,
        "ts": when.isoformat() if isinstance(when, datetime) else str(when),
        "video_id": int(video_id),
        "position": None if position is None else int(position),
        "rec_version": rec_version,
        "clicked": int(clicked),
        "watch_seconds": float(watch_seconds),
        "liked": int(liked),
        "shared": int(shared),
    }
    if isinstance(sink, list):
        sink.append(record)
    else:
        path = Path(sink)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return record


# --------------------------------------------------------------------------------------------------
# Online metrics of one day
# --------------------------------------------------------------------------------------------------


def _mean(values: pd.Series) -> float | None:
    """Mean over the known values (missing labels are left out); None when nothing is known."""
    known = pd.to_numeric(values, errors="coerce").dropna()
    return float(known.mean()) if len(known) else None


def compute_metrics(
    events: pd.DataFrame,
    *,
    catalog_size: int | None = None,
    known_users: Collection[str] | None = None,
) -> dict[str, Any]:
    """Online metrics of one day's impressions (columns as in ``CLEAN_EVENTS``).

    An impression with a ``rec_version`` came from a published list ("recommended"); one without is
    exploration. The quality figures describe recommended impressions, so they measure the model;
    exploration CTR is the yardstick next to it. Missing labels are left out of a rate.

    Args:
        catalog_size: number of recommendable videos; ``coverage`` is None without it.
        known_users: user keys with history before this day; ``cold_start_share`` is None without it.

    Returns:
        ``impressions``, ``recommended_impressions``, ``exploration_impressions``, ``users``,
        ``ctr`` (recommended), ``ctr_exploration``, ``watch_seconds_per_impression``, ``like_rate``,
        ``share_rate``, ``coverage`` (distinct recommended videos / catalog size),
        ``cold_start_share`` (share of the day's users not in ``known_users``), and
        ``by_rec_version``: ``{version: {impressions, ctr, watch_seconds_per_impression, like_rate}}``.
        Rates are None when there is nothing to divide.
    """
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
    }

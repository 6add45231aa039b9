"""Online quality: what users did with the published lists, drift, and the decision to retrain.

Everything here is pure (frames and dicts in, dicts out). Logging interactions lives in
:mod:`recsys.monitoring.interactions` (``log_user_interaction`` is re-exported here). The monitor stage
strings them together::

    day = compute_metrics(events, catalog_size=n_videos, known_users=seen_before)
    day |= {"ds": ds, "psi": feature_psi(train_window, events, ["device", "position"])}
    decision = check_retraining_needed(history + [day], settings.monitoring, today=ds, ...)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import MonitoringSettings
from recsys.monitoring.interactions import log_user_interaction, read_interaction_log  # noqa: F401

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


# --------------------------------------------------------------------------------------------------
# Drift
# --------------------------------------------------------------------------------------------------

_MISSING = "__missing__"


def _as_series(values: Iterable[Any]) -> pd.Series:
    """A Series; an object column holding only numbers (and nulls) becomes numeric."""
    s = values if isinstance(values, pd.Series) else pd.Series(list(values))
    if s.dtype == object:
        known = s.dropna()
        if len(known) and all(
            isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in known
        ):
            s = pd.to_numeric(s.where(s.notna(), np.nan)).astype(float)
    return s


def _is_categorical(values: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))


def population_stability_index(
    expected: Iterable[Any], actual: Iterable[Any], bins: int = 10, *, eps: float = 1e-4
) -> float:
    """PSI = sum over bins of (a - e) * ln(a / e), with e, a the bin shares of expected and actual.

    Numeric values are binned at the expected sample's quantiles (``bins`` bins, fewer when values
    tie; the outer bins are open). Strings, booleans and categoricals use one bin per category seen in
    either sample. Missing values form a bin of their own, so a rise in nulls shows as drift. Shares
    of empty bins are floored at ``eps`` so the log stays finite. Rule of thumb: < 0.1 stable,
    0.1-0.25 moderate, > 0.25 large.

    Raises:
        ValueError: either sample is empty.
    """
    exp, act = _as_series(expected), _as_series(actual)
    if exp.empty or act.empty:
        raise ValueError("population_stability_index needs two non-empty samples")
    if _is_categorical(exp) or _is_categorical(act):
        exp_keys = exp.astype("object").where(exp.notna(), _MISSING).astype(str)
        act_keys = act.astype("object").where(act.notna(), _MISSING).astype(str)
    else:
        exp_num = pd.to_numeric(exp, errors="coerce").astype(float)
        act_num = pd.to_numeric(act, errors="coerce").astype(float)
        known = exp_num.dropna().to_numpy()
        if len(known):
            inner = np.unique(np.quantile(known, np.linspace(0, 1, bins + 1))[1:-1])
        else:
            inner = np.array([])

        def bin_of(values: pd.Series) -> pd.Series:
            # bin i holds (inner[i-1], inner[i]]; missing values get their own key
            idx = np.searchsorted(inner, values.fillna(0).to_numpy(), side="left")
            return pd.Series(idx.astype(str), index=values.index).where(values.notna(), _MISSING)

        exp_keys, act_keys = bin_of(exp_num), bin_of(act_num)
    keys = sorted(set(exp_keys) | set(act_keys))
    e = exp_keys.value_counts(normalize=True).reindex(keys, fill_value=0).to_numpy(dtype=float)
    a = act_keys.value_counts(normalize=True).reindex(keys, fill_value=0).to_numpy(dtype=float)
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(
    expected: pd.DataFrame, actual: pd.DataFrame, columns: Iterable[str], bins: int = 10
) -> dict[str, float]:
    """PSI per column shared by both frames (the training window vs the day being monitored)."""
    return {
        col: population_stability_index(expected[col], actual[col], bins)
        for col in columns
        if col in expected.columns and col in actual.columns and len(expected) and len(actual)
    }


# --------------------------------------------------------------------------------------------------
# Retrain decision
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain, and why (or why not, when the cooldown holds a retrain back)."""

    retrain: bool
    reasons: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.retrain


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _history_rows(history: list[Mapping[str, Any]] | pd.DataFrame) -> list[dict[str, Any]]:
    rows = history.to_dict("records") if isinstance(history, pd.DataFrame) else [dict(r) for r in history]
    rows = [r for r in rows if _known(r.get("ds"))]
    return sorted(({**r, "ds": _as_date(r["ds"])} for r in rows), key=lambda r: r["ds"])


def _psi_of(row: Mapping[str, Any]) -> dict[str, float]:
    """PSI figures of a history row: a ``psi`` mapping and/or flat ``psi_<feature>`` keys."""
    out: dict[str, float] = {}
    nested = row.get("psi")
    if isinstance(nested, Mapping):
        out.update(nested)
    out.update({k[len("psi_") :]: v for k, v in row.items() if k.startswith("psi_")})
    return {k: float(v) for k, v in out.items() if v is not None and not pd.isna(v)}


def _known(value: Any) -> bool:
    return value is not None and not pd.isna(value)


def check_retraining_needed(
    metrics_history: list[dict[str, Any]] | pd.DataFrame,
    settings: MonitoringSettings | None = None,
    *,
    today: date | str | None = None,
    last_retrain: date | None = None,
    model_trained_at: date | None = None,
) -> RetrainDecision:
    """Apply the configured retrain rules to the monitor's daily history.

    ``metrics_history`` has one row per day: ``ds``, ``ctr`` and PSI per feature (a ``psi`` mapping or
    ``psi_<feature>`` columns), e.g. :func:`compute_metrics` output plus ``ds`` and ``psi``. The
    current day is the latest row on or before ``today``. Rules, each adding a reason:

    * CTR fell by more than ``ctr_drop`` (relative) below the mean of the rows in the
      ``baseline_days`` days before the current day;
    * CTR has been more than ``sustained_ctr_drop`` below its baseline (the ``baseline_days`` days
      before the streak) for ``sustained_days`` days in a row: a smaller drop that lasts is not noise;
    * a feature's PSI on the current day is above ``psi_threshold``;
    * the model is more than ``max_model_age_days`` old (``today - model_trained_at``).

    A CTR rule needs a baseline of at least ``min_baseline_days`` days with a CTR. A retrain less than
    ``cooldown_days`` before ``today`` holds back a new one; the reasons then say so. Rules that cannot
    be evaluated (too short a baseline, unknown model date) do not fire.

    Defaults: ``settings`` = the configured ``settings.monitoring``; ``today`` = the latest ``ds`` of the
    history (today, UTC, for an empty one). Rows without a ``ds`` are left out.

    Returns:
        :class:`RetrainDecision` (``retrain``: bool, ``reasons``: list of str); truthy when retraining.
    """
    if settings is None:
        from recsys.defaults import settings_or_default

        settings = settings_or_default().monitoring
    history = _history_rows(metrics_history)
    today = _as_date(today) if today is not None else max((r["ds"] for r in history), default=None)
    today = today or datetime.now(UTC).date()
    rows = [r for r in history if r["ds"] <= today]
    reasons: list[str] = []

    if rows:
        current = rows[-1]
        window_start = date.fromordinal(current["ds"].toordinal() - settings.baseline_days)
        baseline = [
            float(r["ctr"])
            for r in rows[:-1]
            if window_start <= r["ds"] < current["ds"] and _known(r.get("ctr"))
        ]
        if len(baseline) >= max(1, settings.min_baseline_days) and _known(current.get("ctr")):
            mean, ctr = float(np.mean(baseline)), float(current["ctr"])
            drop = (mean - ctr) / mean if mean > 0 else 0.0
            if drop > settings.ctr_drop:
                reasons.append(
                    f"ctr dropped {drop:.0%} vs trailing {len(baseline)}-day mean {mean:.3f} -> {ctr:.3f} "
                    f"(threshold {settings.ctr_drop:.0%})"
                )
        if settings.sustained_days > 0 and not reasons:
            streak = degraded_streak_days(rows, settings, today=today, drop=settings.sustained_ctr_drop)
            if streak >= settings.sustained_days:
                first = rows[-streak]["ds"]
                start = date.fromordinal(first.toordinal() - settings.baseline_days)
                base = [
                    float(r["ctr"])
                    for r in rows[:-streak]
                    if start <= r["ds"] < first and _known(r.get("ctr"))
                ]
                mean = float(np.mean(base))
                ctrs = ", ".join(f"{float(r['ctr']):.3f}" for r in rows[-streak:])
                reasons.append(
                    f"ctr dropped for {streak} days in a row since {first}: {ctrs} "
                    f"vs the {len(base)}-day mean {mean:.3f} before "
                    f"(threshold {settings.sustained_ctr_drop:.0%} for {settings.sustained_days} days)"
                )
        for feature, psi in sorted(_psi_of(current).items(), key=lambda kv: -kv[1]):
            if psi > settings.psi_threshold:
                reasons.append(
                    f"psi of {feature} is {psi:.3f} on {current['ds']} "
                    f"(threshold {settings.psi_threshold:.2f})"
                )

    if model_trained_at is not None:
        age = (today - _as_date(model_trained_at)).days
        if age > settings.max_model_age_days:
            reasons.append(
                f"model is {age} days old, trained {_as_date(model_trained_at)} "
                f"(max {settings.max_model_age_days} days)"
            )

    if reasons and last_retrain is not None:
        since = (today - _as_date(last_retrain)).days
        if since < settings.cooldown_days:
            reasons.append(
                f"cooldown: last retrain {_as_date(last_retrain)} was {since} day(s) ago "
                f"(cooldown {settings.cooldown_days} days), so no retrain now"
            )
            return RetrainDecision(False, reasons)
    return RetrainDecision(bool(reasons), reasons)


FALLBACK_MODEL = "baseline-popularity"  # recsys.serving.BASELINE_VERSION (not imported: that pulls pandas IO)


def ctr_baseline_rows(
    metrics_history: list[dict[str, Any]], *, last_retrain: date | str | None = None
) -> list[dict[str, Any]]:
    """The monitor's past days that may serve as a CTR baseline.

    Only days whose lists came from a model (``served_model`` set and not the popularity fallback: its
    CTR says nothing about a model), and only days after the last monitor-triggered retrain (that
    retrain answered a degradation; the level before it is not the one to compare with). Scheduled
    retrains do not reset the baseline, so a daily-trained model that gets worse is caught too.
    """
    last = _as_date(last_retrain) if last_retrain is not None else None
    return [
        r
        for r in metrics_history
        if r.get("served_model") not in (None, FALLBACK_MODEL) and (last is None or _as_date(r["ds"]) > last)
    ]


def degraded_streak_days(
    metrics_history: list[dict[str, Any]] | pd.DataFrame,
    settings: MonitoringSettings,
    *,
    today: date | str,
    drop: float | None = None,
) -> int:
    """How many days, ending ``today``, the CTR has been degraded (0 when today's CTR is not).

    Day ``k`` of a streak counts when its CTR is more than ``drop`` (relative; default the smaller of
    ``ctr_drop`` and ``sustained_ctr_drop``) below the mean CTR of the ``baseline_days`` days before the
    streak began, and those hold at least ``min_baseline_days`` days with a CTR. The retrain uses it as
    its "fresh window": after a preference shift the days before the streak describe a world that is
    gone.
    """
    today = _as_date(today)
    if drop is None:
        drop = (
            min(settings.ctr_drop, settings.sustained_ctr_drop)
            if settings.sustained_days
            else settings.ctr_drop
        )
    rows = [r for r in _history_rows(metrics_history) if r["ds"] <= today and _known(r.get("ctr"))]
    best = 0
    for k in range(1, len(rows)):
        # the streak is the last k days, each compared with the days before the streak began (so a
        # first degraded day does not lower the bar for the next one)
        streak, start = rows[-k:], rows[-k]["ds"]
        window_start = date.fromordinal(start.toordinal() - settings.baseline_days)
        baseline = [float(r["ctr"]) for r in rows[:-k] if window_start <= r["ds"] < start]
        if len(baseline) < max(1, settings.min_baseline_days):
            break
        limit = (1 - drop) * float(np.mean(baseline))
        if all(float(r["ctr"]) < limit for r in streak):
            best = k
    return best

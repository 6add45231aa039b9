"""The retrain rules: from a history of daily online figures to a decision, with reasons.

A CTR drop against the trailing baseline, a smaller drop that lasts, PSI drift, or a stale model fires a
retrain, unless the cooldown since the last monitor-triggered retrain holds it back. All thresholds are
``settings.monitoring``; everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import MonitoringSettings


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

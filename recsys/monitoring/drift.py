"""Drift: the population stability index of a day's traffic against a trailing window.

A PSI per feature (device, category, hour, ...) says how far the day's mix moved from the window's: the
monitor measures it on impressions the model did not choose, so a new model's picks do not read as drift.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

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

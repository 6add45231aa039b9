"""How feature values become vocabulary keys: the text of a value (``_key``), computed once per distinct
value of a column where that gives the per-row result exactly (``_keys``, ``_key_counts``, ``_lookup``),
and the title tokenizer. Shared by the transform, its chunked statistics and the serving refresh."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(str(text).lower()) if isinstance(text, str) else []


def _key(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    return str(v)


def _keys(col: pd.Series) -> np.ndarray:
    """``_key`` of every value (object array of str), computed once per distinct value."""
    codes, uniques = _factorize(col)
    table = np.array([_key(v) for v in uniques] + [""], dtype=object)
    return table[np.where(codes < 0, len(uniques), codes)]


def _factorize(col: pd.Series) -> tuple[np.ndarray, list]:
    """Codes and distinct values of ``col``; -1 marks missing values (None, NaN, NA)."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return np.asarray(codes), list(uniques)


def _per_row(col: pd.Series) -> bool:
    """An object column holding anything but strings: hashing could merge values that ``str`` spells
    differently (1 and 1.0), so per-distinct-value shortcuts must take the per-row path."""
    return col.dtype == object and not all(type(v) is str for v in col.dropna().unique())


def _key_counts(col: pd.Series) -> Counter:
    """``Counter(_key(v) for v in col)``, computed once per distinct value."""
    if _per_row(col):
        return Counter(_key(v) for v in col)
    codes, uniques = _factorize(col)
    counts: Counter = Counter()
    for v, n in zip(uniques, np.bincount(codes[codes >= 0], minlength=len(uniques)), strict=True):
        counts[_key(v)] += int(n)
    if (codes < 0).any():  # missing values: _key decides (NaT, for one, has a spelling)
        counts.update(_key(v) for v in col.to_numpy(dtype=object)[codes < 0])
    return counts


def _lookup(col: pd.Series, vocab: dict[str, int]) -> np.ndarray:
    """``vocab.get(_key(v), 0)`` for every value, computed once per distinct value.

    Exactly the per-row result: hashing may only merge values that ``str`` spells the same, so an object
    column holding anything but strings (1 and 1.0 would merge) takes the per-row path.
    """
    if _per_row(col):
        return np.fromiter((vocab.get(_key(v), 0) for v in col), dtype=np.int32, count=len(col))
    codes, uniques = _factorize(col)
    table = np.fromiter((vocab.get(_key(v), 0) for v in uniques), dtype=np.int32, count=len(uniques))
    out = np.zeros(len(col), dtype=np.int32)
    ok = codes >= 0
    out[ok] = table[codes[ok]]
    if not ok.all():  # missing values: _key decides (NaT, for one, has a spelling)
        values = col.to_numpy(dtype=object)
        out[~ok] = [vocab.get(_key(v), 0) for v in values[~ok]]
    return out

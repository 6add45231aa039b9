"""Loose JSON values -> typed columns, strictly: what parses, what does not, what does not fit.

Raw events arrive with every value as text (``recsys.data.sources`` keeps them loose so nothing is lost
before validation). These helpers decide, per value, whether it is missing, parses as the column's type,
does not parse (``bad_type_<col>``), or is an integer beyond int64 (``int_out_of_range_<col>``), without
ever going through a float for integers (so nothing wraps to -2**63 or loses digits).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import formats

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
INT64 = (-(2**63), 2**63 - 1)
JSON_BOOLS = {"true": 1, "false": 0}  # JSON literals, as the loose raw zone keeps them


def _number(v: Any, integral: bool, allow_bool: bool) -> tuple[Any, str]:
    """One loose value -> (number or None, "ok" | "missing" | "bad" | "range")."""
    if is_missing(v):
        return None, "missing"
    if isinstance(v, bool | np.bool_):
        return (int(v), "ok") if allow_bool else (None, "bad")
    if isinstance(v, str):
        text = v.strip()
        if allow_bool and text in JSON_BOOLS:
            return JSON_BOOLS[text], "ok"
        if integral and _INTEGER.fullmatch(text):
            v = int(text)  # exact: no detour through a float
        elif _NUMBER.fullmatch(text):
            v = float(text)
        else:
            return None, "bad"
    elif isinstance(v, int | np.integer):
        v = int(v)
    elif isinstance(v, float | np.floating):
        v = float(v)
    else:
        return None, "bad"
    if isinstance(v, float):
        if not math.isfinite(v):
            return None, "bad"
        if not integral:
            return v, "ok"
        if v != round(v):
            return None, "bad"
        v = int(v)
    if integral and not INT64[0] <= v <= INT64[1]:
        return None, "range"
    return v, "ok"


def parse_number(
    s: pd.Series, *, integral: bool, allow_bool: bool
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Loose values -> Int64/Float64 (null when missing or unusable), the unparseable rows and the rows
    whose integer does not fit in 64 bits.

    Numbers and numeric strings parse; ``"12.3s"``, ``"1_000"``, infinities, booleans (except ``true`` /
    ``false`` for 0/1 labels) and non-integral values of integer columns do not. Integers are parsed
    exactly (never through a float), so one beyond int64 is reported as such instead of wrapping.
    """
    parsed = formats.map_values(s, lambda v: _number(v, integral, allow_bool))
    status = np.array([st for _, st in parsed], dtype=object)
    values = [v if st == "ok" else None for v, st in parsed]
    out = pd.Series(pd.array(values, dtype="Int64" if integral else "Float64"), index=s.index)
    return out, status == "bad", status == "range"


def text_values(s: pd.Series) -> np.ndarray:
    """``None if is_missing(v) else str(v)`` of every value, as an object array: in Arrow when every
    value is a str or null (:func:`recsys.data.formats.arrow_text`), else value by value."""
    arr = formats.arrow_text(s)
    if arr is None:
        return formats.map_values(s, lambda v: None if is_missing(v) else str(v))
    out = arr.to_numpy(zero_copy_only=False)
    out[formats.blank_or_null(arr)] = None
    return out


def parse_ts(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """ISO-8601 strings or datetimes -> UTC timestamps (naive ones are taken as UTC)."""
    obj = s.astype(object)
    text = formats.arrow_text(s)
    if text is not None:  # every value a str or null (a raw column): decided in Arrow
        missing = formats.blank_or_null(text)
        is_str, is_dt = ~missing, np.zeros(len(obj), dtype=bool)
    else:
        missing = obj.map(is_missing).to_numpy(bool)
        is_str = obj.map(lambda v: isinstance(v, str)).to_numpy(bool) & ~missing
        is_dt = obj.map(lambda v: isinstance(v, datetime | np.datetime64)).to_numpy(bool) & ~missing
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    if is_str.any():
        out[is_str] = pd.to_datetime(obj[is_str], utc=True, format="ISO8601", errors="coerce")
    if is_dt.any():
        out[is_dt] = pd.to_datetime(obj[is_dt], utc=True, errors="coerce")
    return out, ~missing & out.isna().to_numpy()


def is_null(v: Any) -> bool:
    """None, NaN, NA or NaT."""
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def is_missing(v: Any) -> bool:
    """Null, NaN, NaT or a blank string."""
    return is_null(v) or (isinstance(v, str) and not v.strip())

"""The validate stage's text parsing decided in Arrow (``parsing.text_values``, ``parsing.parse_ts``) gives
what the value-by-value rules give: ``None if is_missing(v) else str(v)`` and the timestamp parse, for
hostile values too (every kind of Unicode whitespace, lone surrogates, values that are not text)."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data import formats
from recsys.data.parsing import is_missing, parse_ts, text_values


def _by_value(values) -> list:
    return [None if is_missing(v) else str(v) for v in values]


def test_blank_is_exactly_what_str_isspace_is_true_of_for_every_code_point():
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]  # Arrow holds no surrogate
    blank = pc.match_substring_regex(pa.array(chars), formats._BLANK).to_pylist()
    assert [c for c, b in zip(chars, blank, strict=True) if b != c.isspace()] == []
    assert sum(blank) == sum(c.isspace() for c in chars) > 20


HOSTILE = [
    "e1",
    " e2 ",
    "",
    " ",
    "\t\n",
    "\x1c\x1f",  # blank to str.strip, not to Unicode's White_Space
    "\u3000\u2028",
    "\u200b",  # zero-width space: not blank
    "a\x00b",
    "é🙂",
    None,
    "2026-01-05T10:00:00Z",
    "2026-01-05 10:00:00+02:00",
    "2026-13-45T99:00:00Z",
    "not a time",
]


def test_text_values_equal_the_value_by_value_rule():
    for values, arrow in (
        (HOSTILE, True),
        (pd.Series(HOSTILE, dtype="string"), True),
        (pd.Series(HOSTILE, dtype="str"), True),
        ([None, None], True),
        ([], True),
        (["x", 1, 2.5, True, float("nan"), pd.NA, None, " "], False),  # not all text: value by value
        (["ok", "\ud800", " "], False),  # a lone surrogate: Arrow cannot hold it
    ):
        s = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
        assert (formats.arrow_text(s) is not None) == arrow, values
        got = text_values(s)
        assert got.dtype == object and list(got) == _by_value(s.astype(object)), values


def test_parse_ts_in_arrow_equals_the_value_by_value_parse():
    """A column of text (Arrow path) parses as the same column with one non-text value added (the value
    by value path) does, row for row."""
    values = HOSTILE * 3
    fast, fast_bad = parse_ts(pd.Series(values, dtype="string"))
    slow, slow_bad = parse_ts(pd.Series([*values, datetime(2026, 1, 5, 12)], dtype=object))
    assert formats.arrow_text(pd.Series(values)) is not None
    assert formats.arrow_text(pd.Series([*values, datetime(2026, 1, 5)], dtype=object)) is None
    pd.testing.assert_series_equal(fast, slow.iloc[:-1])
    np.testing.assert_array_equal(fast_bad, slow_bad[:-1])
    assert fast.notna().sum() == 6 and fast_bad.sum() == 21  # per copy: 2 parse, 6 missing, 7 do not
    assert not math.isnan(slow.iloc[-1].timestamp())

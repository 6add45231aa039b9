"""Great Expectations suites for the raw zone and the frames they run on.

The suites are declared as plain :class:`Spec` records (an expectation class name, its keyword
arguments and the rule it enforces), so declaring them needs no GX import. :func:`run_suite` (in
:mod:`recsys.data.suite_run`, the one place that talks to GX; re-exported here) imports
GX lazily (the import alone takes seconds, and Airflow parses DAG files that import ``recsys``), builds
one data context per call, runs the suite through a Checkpoint and reduces the GX result to
:class:`Check` records: one verdict per expectation, with the positions of the failing rows.

Raw events arrive with loose types; :func:`events_check_frame` parses them into typed columns plus
helper columns (did each raw value parse? the longest plausible watch time), so GX can judge every rule
row by row. GX only ever sees frames whose raw identifiers are replaced by integer codes
(:func:`mask_identifiers`): validation results and Data Docs go to the unencrypted ``reports`` zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import formats
from recsys.data.parsing import parse_number, parse_ts, text_values
from recsys.data.schema import DEVICES, RAW_EVENTS
from recsys.data.suite_run import Check, ChunkedSuite, SuiteRun, run_suite  # noqa: F401  (re-exported)

KEYS = ("event_id", "user_id", "video_id", "ts")
BINARY = ("clicked", "liked", "shared")
# Raw columns parsed from loose JSON values, with the type a value must parse as.
PARSED = {
    "video_id": "an integer",
    "position": "an integer",
    "watch_seconds": "a number",
    "clicked": "an integer",
    "liked": "an integer",
    "shared": "an integer",
    "ts": "a timestamp",
}
PARSES_SUFFIX = "__parses"  # helper column: True when the raw value is null or parses
INTEGERS = tuple(c for c in PARSED if RAW_EVENTS.get(c) == "Int64")
IN_RANGE_SUFFIX = "__in_int64"  # helper column: False when an integer does not fit in 64 bits
MAX_WATCH = "max_watch_seconds"  # helper column: duration x allowed multiple (null when unknown)
# Masked (integer codes) before GX: reports are not encrypted. event_id is id-like, so it is masked too.
PII_COLUMNS = ("event_id", "user_id", "email", "ip", "session_id")
TEXT = tuple(c for c, t in RAW_EVENTS.items() if t == "string")
FORMAT_SUFFIX = "__format_ok"  # helper column: the value matches its column's pattern and length
PERSONAL_SUFFIX = "__not_personal"  # helper column: the value does not look like an e-mail/phone/IP
REUSED = "event_id__unseen"  # helper column: the event id was not accepted on an earlier day
ONCE = "event_id__once"  # helper column: the event id appears once in the whole day (null: True)


@dataclass(frozen=True)
class Spec:
    """One expectation: the GX class name, its arguments, and the rule name it enforces.

    ``level`` is ``"row"`` (failing rows go to quarantine with ``rule`` as the reason) or ``"batch"``
    (a failure stops the batch).
    """

    expectation: str
    rule: str
    kwargs: dict[str, Any]
    level: str = "row"
    description: str | None = None


# Suites ---------------------------------------------------------------------------------------------
def events_suite(
    columns: list[str],
    *,
    ds_start: datetime,
    ds_end: datetime,
    min_rows: int,
    known_video_ids: list[int] | None,
    check_reused: bool = False,
) -> list[Spec]:
    """The interactions suite, run on the frame built by :func:`events_check_frame`.

    ``check_reused``: the frame has the :data:`REUSED` column (event ids accepted on earlier days).
    """
    specs = [
        _columns_spec(columns),
        Spec("ExpectTableRowCountToBeBetween", "volume_collapse", {"min_value": min_rows}, "batch"),
    ]
    specs += [Spec("ExpectColumnValuesToNotBeNull", f"null_{c}", {"column": c}) for c in KEYS]
    specs += [
        Spec(
            "ExpectColumnValuesToBeInSet",
            f"bad_type_{c}",
            {"column": c + PARSES_SUFFIX, "value_set": [True]},
            description=f"raw `{c}` values are null or parse as {kind}",
        )
        for c, kind in PARSED.items()
    ]
    specs += [
        Spec(
            "ExpectColumnValuesToBeInSet",
            f"int_out_of_range_{c}",
            {"column": c + IN_RANGE_SUFFIX, "value_set": [True]},
            description=f"raw `{c}` integers fit in 64 bits",
        )
        for c in INTEGERS
    ]
    specs += [
        Spec(
            "ExpectColumnValuesToBeInSet",
            f"bad_format_{c}",
            {"column": c + FORMAT_SUFFIX, "value_set": [True]},
            description=f"`{c}` matches its pattern and length limit (recsys.data.formats)",
        )
        for c in TEXT
    ]
    specs += [
        Spec(
            "ExpectColumnValuesToBeInSet",
            f"pii_in_{c}",
            {"column": c + PERSONAL_SUFFIX, "value_set": [True]},
            description=f"`{c}` holds no value that looks like an e-mail, phone number or IP address",
        )
        for c in TEXT
        if c not in formats.EXPECTED_PII
    ]
    specs += [
        Spec("ExpectColumnValuesToBeInSet", f"not_binary_{c}", {"column": c, "value_set": [0, 1]})
        for c in BINARY
    ]
    specs += [
        Spec(
            "ExpectColumnValuesToBeInSet", "unknown_device", {"column": "device", "value_set": list(DEVICES)}
        ),
        Spec(
            "ExpectColumnValuesToBeBetween",
            "negative_watch_seconds",
            {"column": "watch_seconds", "min_value": 0},
        ),
        Spec(
            "ExpectColumnPairValuesAToBeGreaterThanB",
            "watch_exceeds_duration",
            {
                "column_A": MAX_WATCH,
                "column_B": "watch_seconds",
                "or_equal": True,
                "ignore_row_if": "either_value_is_missing",
            },
            description="`watch_seconds` is at most the allowed multiple of the video's duration",
        ),
        Spec("ExpectColumnValuesToBeBetween", "position_below_1", {"column": "position", "min_value": 1}),
        Spec(
            "ExpectColumnValuesToBeBetween",
            "ts_outside_ds",
            {"column": "ts", "min_value": ds_start, "max_value": ds_end, "strict_max": True},
        ),
        Spec(
            "ExpectColumnValuesToBeInSet",
            "duplicate_event_id",
            {"column": ONCE, "value_set": [True]},
            description="the event id appears once in the day (counted over the whole day, every chunk)",
        ),
    ]
    if check_reused:
        specs.append(
            Spec(
                "ExpectColumnValuesToBeInSet",
                "reused_event_id",
                {"column": REUSED, "value_set": [True]},
                description="the event id was not accepted on an earlier day of the window",
            )
        )
    if known_video_ids is not None:
        specs.append(
            Spec(
                "ExpectColumnValuesToBeInSet",
                "unknown_video_id",
                {"column": "video_id", "value_set": known_video_ids},
            )
        )
    return specs


def reference_suite(columns: list[str], key: str, extra: list[Spec] = ()) -> list[Spec]:
    """A reference table (videos, users): the columns, at least one row, a non-null unique key."""
    specs = [
        _columns_spec(columns),
        Spec("ExpectTableRowCountToBeBetween", "empty_table", {"min_value": 1}, "batch"),
        Spec("ExpectColumnValuesToNotBeNull", f"null_{key}", {"column": key}, "batch"),
        Spec("ExpectColumnValuesToBeUnique", f"duplicate_{key}", {"column": key}, "batch"),
    ]
    return specs + [Spec(s.expectation, s.rule, s.kwargs, "batch", s.description) for s in extra]


def _columns_spec(columns: list[str]) -> Spec:
    return Spec(
        "ExpectTableColumnsToMatchSet",
        "missing_columns",
        {"column_set": columns, "exact_match": False},
        "batch",
    )


def videos_suite(columns: list[str]) -> list[Spec]:
    return reference_suite(
        columns,
        "video_id",
        [
            Spec(
                "ExpectColumnValuesToBeBetween",
                "nonpositive_duration",
                {"column": "duration_seconds", "min_value": 0, "strict_min": True},
            ),
        ],
    )


def users_suite(columns: list[str]) -> list[Spec]:
    return reference_suite(
        columns,
        "user_id",
        [
            Spec(
                "ExpectColumnValuesToBeInSet",
                "unknown_device",
                {"column": "device", "value_set": list(DEVICES)},
            ),
        ],
    )


# The frame GX checks --------------------------------------------------------------------------------
def events_check_frame(
    raw: pd.DataFrame, durations: dict[int, float] | None, max_watch_multiple: float
) -> tuple[pd.DataFrame, dict[str, np.ndarray], pd.DataFrame]:
    """Parse loose raw events into what the events suite checks.

    Returns:
        typed: the RAW_EVENTS columns with parsed values (a value that does not parse becomes null).
        unusable: per parsed column, the rows whose non-null value did not parse or is out of range.
        frame: ``typed`` with identifiers masked, plus the helper columns the suite names
            (``<col>__parses`` and ``max_watch_seconds``).
    """
    typed, bad, too_big = {}, {}, {}
    for col, dtype in RAW_EVENTS.items():
        if col == "ts":
            typed[col], bad[col] = parse_ts(raw[col])
            too_big[col] = np.zeros(len(raw), dtype=bool)
        elif dtype in ("Int64", "Float64"):
            typed[col], bad[col], too_big[col] = parse_number(
                raw[col], integral=dtype == "Int64", allow_bool=col in BINARY
            )
        else:
            values = text_values(raw[col])
            typed[col] = pd.array(values, dtype="string")
    typed = pd.DataFrame(typed, index=raw.index)
    frame = mask_identifiers(typed, PII_COLUMNS)
    for col in TEXT:
        ok = formats.format_ok(col, typed[col])
        personal = np.zeros(len(typed), dtype=bool)
        if col not in formats.EXPECTED_PII:
            personal = formats.looks_personal(col, typed[col])
            frame[col + PERSONAL_SUFFIX] = ~personal
        frame[col + FORMAT_SUFFIX] = ok | personal  # personal data is reported as such, not as a format
        if col not in PII_COLUMNS:
            # GX (so Data Docs) never sees a rejected value; as a null it adds no second rule either
            frame[col] = frame[col].mask(personal | ~ok, pd.NA)
    for col in PARSED:
        frame[col + PARSES_SUFFIX] = ~bad[col]
    for col in INTEGERS:
        frame[col + IN_RANGE_SUFFIX] = ~too_big[col]
    known = typed["video_id"].map(durations or {})
    frame[MAX_WATCH] = pd.to_numeric(known, errors="coerce").astype("Float64") * max_watch_multiple
    unusable = {c: bad[c] | too_big[c] for c in PARSED}
    return typed, unusable, frame


def mask_identifiers(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """Replace raw identifiers by integer codes: nulls and equalities survive, the values do not."""
    out = frame.copy()
    for c in columns:
        if c in out.columns:
            codes = pd.factorize(out[c], use_na_sentinel=True)[0]
            out[c] = pd.Series(codes, index=out.index, dtype="Int64").mask(codes < 0)
    return out

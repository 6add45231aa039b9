"""Great Expectations suites for the raw zone, the frames they run on, and the one place that talks to GX.

The suites are declared as plain :class:`Spec` records (an expectation class name, its keyword
arguments and the rule it enforces), so declaring them needs no GX import. :func:`run_suite` imports
GX lazily (the import alone takes seconds, and Airflow parses DAG files that import ``recsys``), builds
one data context per call, runs the suite through a Checkpoint and reduces the GX result to
:class:`Check` records: one verdict per expectation, with the positions of the failing rows.

Raw events arrive with loose types; :func:`events_check_frame` parses them into typed columns plus
helper columns (did each raw value parse? the longest plausible watch time), so GX can judge every rule
row by row. GX only ever sees frames whose raw identifiers are replaced by integer codes
(:func:`mask_identifiers`): validation results and Data Docs go to the unencrypted ``reports`` zone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import formats
from recsys.data.parsing import is_missing, parse_number, parse_ts
from recsys.data.schema import DEVICES, RAW_EVENTS

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

_RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": 20,
    "return_unexpected_index_query": False,
}


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


@dataclass(frozen=True)
class Check:
    """GX's verdict on one expectation."""

    expectation: str  # snake-case GX type, e.g. expect_column_values_to_not_be_null
    rule: str
    level: str
    column: str | None
    success: bool
    unexpected_rows: tuple[int, ...] = ()  # positions in the validated frame (it has a RangeIndex)
    unexpected_count: int | None = None
    observed_value: Any = None
    sample: tuple = ()  # a few unexpected values (identifiers are masked before GX sees them)
    error: str | None = None  # GX could not evaluate the expectation

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly record for the validation report."""
        out: dict[str, Any] = {"expectation": self.expectation, "rule": self.rule, "success": self.success}
        if self.column is not None:
            out["column"] = self.column
        if self.unexpected_count is not None:
            out["unexpected_count"] = self.unexpected_count
        if self.observed_value is not None:
            out["observed_value"] = _jsonable(self.observed_value)
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class SuiteRun:
    """One GX run of a suite: the overall verdict, one :class:`Check` per expectation, the Data Docs."""

    suite: str
    success: bool
    checks: tuple[Check, ...]
    data_docs_path: Path | None = None
    by_rule: dict[str, Check] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_rule", {c.rule: c for c in self.checks})


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
        Spec("ExpectColumnValuesToBeUnique", "duplicate_event_id", {"column": "event_id"}),
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
            values = formats.map_values(raw[col], lambda v: None if is_missing(v) else str(v))
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


# Running --------------------------------------------------------------------------------------------
def _gx():
    """Import GX with analytics off (GX 1.x reads GX_ANALYTICS_ENABLED; nothing is written to $HOME)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def run_suite(
    frame: pd.DataFrame, suite_name: str, specs: list[Spec], *, run_name: str, reports_dir: Path | None = None
) -> SuiteRun:
    """Validate ``frame`` against ``specs`` with GX and return its verdicts.

    One context per call: an ephemeral one, or a file context rooted at ``reports_dir`` whose Data Docs
    the Checkpoint updates (``reports_dir/gx/uncommitted/data_docs/local_site/index.html``).
    """
    gx = _gx()
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if reports_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        reports_dir = Path(reports_dir)
        reports_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=reports_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)

    # A rerun in the same reports_dir replaces the definitions (add_or_update is quadratic in the suite).
    for factory in (context.checkpoints, context.validation_definitions, context.suites):
        if suite_name in {x.name for x in factory.all()}:
            factory.delete(name=suite_name)
    source = context.data_sources.add_or_update_pandas(name=suite_name)
    batch_definition = source.add_dataframe_asset(name=suite_name).add_batch_definition_whole_dataframe(
        name="whole_frame"
    )
    expectations = [
        getattr(gxe, s.expectation)(
            **s.kwargs,
            meta={"rule": s.rule, "level": s.level},
            **({"description": s.description} if s.description else {}),
        )
        for s in specs
    ]
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
    )
    actions = [UpdateDataDocsAction(name="update_data_docs")] if reports_dir is not None else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[definition],
            actions=actions,
            result_format=_RESULT_FORMAT,
        )
    )

    frame = frame.reset_index(drop=True)
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
    (validation,) = result.run_results.values()
    order = {s.rule: i for i, s in enumerate(specs)}  # GX groups results its own way; keep the suite's
    checks = tuple(
        sorted((_check(r) for r in validation.results), key=lambda c: order.get(c.rule, len(order)))
    )
    docs = None
    if reports_dir is not None:
        docs = Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site" / "index.html"
        if not docs.exists():
            raise RuntimeError(f"GX did not build Data Docs at {docs}")
    return SuiteRun(suite_name, bool(validation.success), checks, docs)


def _check(r) -> Check:
    config = r.expectation_config
    meta = config.meta or {}
    res = r.result or {}
    info = r.exception_info or {}
    # exception_info is either one record or a dict of records keyed by metric.
    records = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    errors = [str(x.get("exception_message")) for x in records if x.get("raised_exception")]
    return Check(
        expectation=config.type,
        rule=meta.get("rule", config.type),
        level=meta.get("level", "row"),
        column=config.kwargs.get("column") or config.kwargs.get("column_B"),
        success=bool(r.success),
        unexpected_rows=tuple(int(i) for i in res.get("unexpected_index_list") or ()),
        unexpected_count=res.get("unexpected_count"),
        observed_value=res.get("observed_value"),
        sample=tuple(res.get("partial_unexpected_list") or ())[:5],
        error="; ".join(errors) or None,
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return str(v)

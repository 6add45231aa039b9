"""Validate a day's raw data before anything downstream reads it.

Two levels of failure:

* **Row rules** (null keys, values that do not parse, out-of-range values, timestamps outside the day,
  duplicate events, unknown videos): the row goes to quarantine with the rule name as its ``reason``
  (several joined by ``;``) and the batch goes on.
* **Batch rules** (missing columns, an empty partition, a volume collapse against the trailing days, too
  many quarantined rows, a broken reference table): :class:`BatchValidationError`, whose message names
  the expectation and the observed value; the task fails and nothing downstream runs.

Great Expectations evaluates the rules (suites in :mod:`recsys.data.expectations`, imported lazily).
This module parses the loose raw values into the typed frame GX checks and turns GX's per-row verdicts
into the quarantine. With ``reports_dir`` the run is also recorded in GX Data Docs there.

Conservation: every input row ends up in exactly one of ``accepted`` and ``quarantined``
(``len(accepted) + len(quarantined) == len(events)``, checked on every call). Lines of a landing file
that are not JSON objects never become rows: :func:`read_landing_jsonl` returns them apart, so
``len(rows) + len(malformed) ==`` the number of non-blank lines; pass ``len(malformed)`` to
:func:`validate_events` as ``n_malformed`` so the report and the quarantine-share limit count them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import expectations as ex
from recsys.data.lake import as_date
from recsys.data.parsing import is_null, text_values
from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS, SchemaError, conform
from recsys.data.validate_io import (  # noqa: F401  (re-exported)
    accepted_event_ids,
    parse_jsonl,
    quarantine_frame,
    read_landing_jsonl,
)


@dataclass(frozen=True)
class ValidationResult:
    """What a validation produced.

    Attributes:
        accepted: the valid rows, conformed to the dataset's schema.
        quarantined: the rejected rows, every original column as a string, plus ``reason``.
        report: a JSON-friendly summary (row counts, per-rule counts, per-expectation verdicts).
        data_docs_path: the Data Docs ``index.html`` when a ``reports_dir`` was given.
    """

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    report: dict[str, Any]
    data_docs_path: Path | None = None


class BatchValidationError(ValueError):
    """The batch as a whole is unusable. ``report`` and ``data_docs_path`` are set when GX ran."""

    def __init__(self, message: str, report: dict | None = None, data_docs_path: Path | None = None):
        super().__init__(message)
        self.report = report or {}
        self.data_docs_path = data_docs_path


# Events ---------------------------------------------------------------------------------------------
def event_id_text(values) -> pd.Series:
    """Raw event ids as the typed frame holds them (a string, or null for a missing value)."""
    return pd.Series(pd.array(text_values(pd.Series(values)), "string"))


def day_duplicates(event_ids: pd.Series) -> set[str]:
    """The ids that appear more than once among ``event_ids`` (typed, nulls ignored)."""
    ids = event_ids.dropna()
    return set(ids[ids.duplicated(keep=False)])


def validate_events(
    events: pd.DataFrame,
    ds: date | str,
    known_video_ids: Iterable[int] | None,
    trailing_volumes: list[int],
    reports_dir: Path | None = None,
    *,
    durations: dict[int, float] | None = None,
    n_malformed: int = 0,
    seen_event_ids: Iterable[str] | None = None,
    max_watch_multiple: float = 5.0,
    min_volume_fraction: float = 0.3,
    max_quarantine_share: float = 0.5,
) -> ValidationResult:
    """Validate one day of raw interaction events (loose types, as parsed from JSON), held in memory.

    The whole frame is one chunk of :class:`EventsValidation` (the validate stage streams the day in
    chunks through the same class: :func:`recsys.data.ingest.validate_day`).

    Args:
        known_video_ids: the catalog; a row with another video id is quarantined (None: no check).
        trailing_volumes: input row counts of the previous days; with two or more, a day with fewer
            than ``min_volume_fraction`` x their median rows fails the batch.
        reports_dir: a folder for the GX project and its Data Docs (None: in-memory context, no docs).
        durations: video id -> duration in seconds; ``watch_seconds`` above ``max_watch_multiple`` x
            the duration is quarantined (videos without a known duration are not checked).
        n_malformed: landing lines that never became rows, for the report and the quarantine share.
        seen_event_ids: event ids accepted on earlier days of the window; a row reusing one is
            quarantined as ``reused_event_id`` (None: no check).
        max_quarantine_share: above this share of quarantined rows (malformed lines included) the
            batch fails.

    Raises:
        BatchValidationError: an empty partition, missing columns, a volume collapse, or too many
            quarantined rows.
    """
    check_columns(ds, list(events.columns), len(events), n_malformed)
    raw = events.reset_index(drop=True)
    ids = event_id_text(raw["event_id"])
    reused = None if seen_event_ids is None else set(ids.dropna()) & {str(e) for e in seen_event_ids}
    run = EventsValidation(
        ds,
        known_video_ids,
        trailing_volumes,
        reports_dir,
        durations=durations,
        duplicated_ids=day_duplicates(ids),
        reused_ids=reused,
        max_watch_multiple=max_watch_multiple,
        min_volume_fraction=min_volume_fraction,
        max_quarantine_share=max_quarantine_share,
    )
    accepted, quarantined = run.chunk(raw)
    report, docs = run.finish(n_malformed)
    return ValidationResult(accepted, quarantined, report, docs)


def check_columns(ds: date | str, columns: list[str], n: int, n_malformed: int = 0) -> None:
    """The batch rules known before any row is read: a non-empty partition with every raw column."""
    name = f"raw_events ds={as_date(ds)}"
    if n == 0:
        raise BatchValidationError(
            f"{name}: expect_table_row_count_to_be_between(min_value=1) failed: the partition is empty "
            f"(observed 0 rows, {n_malformed} malformed line(s))"
        )
    missing = [c for c in RAW_EVENTS if c not in columns]
    if missing:
        raise BatchValidationError(
            f"{name}: expect_table_columns_to_match_set failed: missing required column(s) {missing} "
            f"(observed columns {sorted(map(str, columns))})"
        )


class EventsValidation:
    """One day of raw events validated chunk by chunk, in order; the results are those of the whole day.

    Per chunk (:meth:`chunk`): the typed frame, GX's suite (:class:`recsys.data.expectations.ChunkedSuite`),
    the row rules' verdicts, the accepted and the quarantined rows of that chunk. What is not a property
    of one row is given for the whole day or carried from chunk to chunk:

    * ``duplicated_ids``: the ids that appear more than once in the day (any chunks); GX flags their rows.
      The first *valid* copy is kept whichever chunk holds it: ``kept`` remembers, for those ids only,
      the content hash of the kept copy, so a later copy is ``duplicate_event_id`` (identical) or
      ``conflicting_duplicate`` (different) in any later chunk.
    * ``reused_ids``: the ids of the day accepted on earlier days (None: no check).
    * the row count (volume collapse) and the quarantine share: from the summed counts, in :meth:`finish`,
      which also sums GX's verdicts and raises :class:`BatchValidationError` for a bad batch.
    """

    def __init__(
        self,
        ds: date | str,
        known_video_ids: Iterable[int] | None,
        trailing_volumes: list[int],
        reports_dir: Path | None = None,
        *,
        durations: dict[int, float] | None = None,
        duplicated_ids: set[str] = frozenset(),
        reused_ids: set[str] | None = None,
        max_watch_multiple: float = 5.0,
        min_volume_fraction: float = 0.3,
        max_quarantine_share: float = 0.5,
    ):
        self.ds = as_date(ds)
        self.name = f"raw_events ds={self.ds}"
        self.durations, self.max_watch_multiple = durations, max_watch_multiple
        self.duplicated, self.reused = set(duplicated_ids), reused_ids
        self.min_volume_fraction, self.max_quarantine_share = min_volume_fraction, max_quarantine_share
        start = datetime.combine(self.ds, time(), tzinfo=UTC)
        self.min_rows, self.median, self.volumes = _volume_floor(trailing_volumes, min_volume_fraction)
        ids = None if known_video_ids is None else sorted({int(v) for v in known_video_ids if not is_null(v)})
        specs = ex.events_suite(
            list(RAW_EVENTS),
            ds_start=start,
            ds_end=start + timedelta(days=1),
            min_rows=self.min_rows,
            known_video_ids=ids,
            check_reused=reused_ids is not None,
        )
        self.suite = ex.ChunkedSuite("raw_events", specs, run_name=f"ds={self.ds}", reports_dir=reports_dir)
        self.kept: dict[str, int] = {}
        self.rows = self.accepted = self.quarantined = 0
        self.rule_counts: dict[str, int] = {}

    def chunk(self, raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The next chunk of raw rows (every raw column, loose values): (accepted, quarantined) rows."""
        raw = raw.reset_index(drop=True)
        n = len(raw)
        typed, bad_type, frame = ex.events_check_frame(raw, self.durations, self.max_watch_multiple)
        event_id = typed["event_id"]
        frame[ex.ONCE] = ~event_id.isin(self.duplicated).to_numpy(bool)
        if self.reused is not None:
            frame[ex.REUSED] = ~event_id.isin(self.reused).to_numpy(bool)
        run = self.suite.run(frame)
        _raise_on_gx_errors(self.name, run)
        masks = self._resolve_duplicates(_row_masks(run, event_id, bad_type, self.duplicated), raw, event_id)
        reason = _join_reasons(masks, n)
        bad = reason.notna().to_numpy()
        accepted = conform(typed[~bad], RAW_EVENTS, name="accepted raw_events")
        quarantined = _as_strings(raw[bad]).assign(reason=reason[bad].astype("string")).reset_index(drop=True)
        _invariant(
            len(accepted) + len(quarantined) == n,
            f"{self.name}: {len(accepted)} accepted + {len(quarantined)} quarantined != {n} input rows",
        )
        self.rows += n
        self.accepted += len(accepted)
        self.quarantined += len(quarantined)
        for rule, m in masks.items():
            self.rule_counts[rule] = self.rule_counts.get(rule, 0) + int(m.sum())
        return accepted, quarantined

    def _resolve_duplicates(
        self, masks: dict[str, np.ndarray], raw: pd.DataFrame, event_id: pd.Series
    ) -> dict:
        """Keep the first *valid* copy of each event id of the day; quarantine the other valid copies.

        A later copy identical to the kept one is ``duplicate_event_id``; one that differs from it is
        ``conflicting_duplicate`` (two versions of one event: the second is not silently dropped as a
        repeat). Invalid copies keep only their own reasons, so a bad first copy never hides a good
        second, in this chunk or a later one.
        """
        dup = masks.get("duplicate_event_id")
        if dup is None:
            return masks
        others = [m for r, m in masks.items() if r != "duplicate_event_id"]
        invalid = np.logical_or.reduce(others) if others else np.zeros(len(raw), dtype=bool)
        rows = np.flatnonzero(dup & ~invalid)
        later = np.zeros(len(raw), dtype=bool)
        differs = np.zeros(len(raw), dtype=bool)
        if len(rows):
            content = pd.util.hash_pandas_object(_as_strings(raw.iloc[rows]), index=False).to_numpy()
            for i, e, h in zip(rows, event_id.iloc[rows], content, strict=True):
                kept = self.kept.get(e)
                if kept is None:
                    self.kept[e] = h  # the first valid copy of the day
                else:
                    later[i], differs[i] = True, kept != h
        out = dict(masks)
        out["duplicate_event_id"] = later & ~differs
        out["conflicting_duplicate"] = later & differs
        return out

    def finish(self, n_malformed: int = 0) -> tuple[dict[str, Any], Path | None]:
        """The day's report (summed over the chunks) and Data Docs; raises for a bad batch."""
        name, n = self.name, self.rows
        check_columns(self.ds, list(RAW_EVENTS), n, n_malformed)
        run = self.suite.finish()
        share = (self.quarantined + n_malformed) / (n + n_malformed)
        report = {
            "dataset": "raw_events",
            "ds": self.ds.isoformat(),
            "input_rows": n,
            "malformed_lines": int(n_malformed),
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "quarantine_share": round(share, 6),
            "rule_counts": dict(self.rule_counts),
            "expectations": [c.summary() for c in run.checks],
            "gx_success": run.success,
            "volume": {
                "observed": n,
                "min_rows": self.min_rows,
                "trailing_median": self.median,
                "trailing_volumes": self.volumes,
            },
            "data_docs_path": str(run.data_docs_path) if run.data_docs_path else None,
            "passed": True,
        }
        # Batch rules are judged after GX has recorded the run, so the Data Docs show the failing batch.
        volume = run.by_rule["volume_collapse"]
        if not volume.success:
            report.update(passed=False, failed="volume_collapse")
            raise BatchValidationError(
                f"{name}: expect_table_row_count_to_be_between(min_value={self.min_rows}) failed: volume "
                f"collapse, observed {volume.observed_value} rows < {self.min_volume_fraction:.0%} of the "
                f"trailing median {self.median:g} (trailing volumes {self.volumes})",
                report,
                run.data_docs_path,
            )
        if share > self.max_quarantine_share:
            report.update(passed=False, failed="max_quarantine_share")
            top = dict(sorted(((r, k) for r, k in self.rule_counts.items() if k), key=lambda kv: -kv[1])[:5])
            raise BatchValidationError(
                f"{name}: max_quarantine_share={self.max_quarantine_share:.0%} failed: observed {share:.1%} "
                f"({self.quarantined} of {n} rows quarantined, {n_malformed} malformed line(s)); "
                f"top rules {top}",
                report,
                run.data_docs_path,
            )
        return report, run.data_docs_path


def _row_masks(
    run: ex.SuiteRun, event_id: pd.Series, bad_type: dict, duplicated: set[str]
) -> dict[str, np.ndarray]:
    """Per row rule, the rows to quarantine for it, from GX's unexpected row positions."""
    n, masks = len(event_id), {}
    for check in run.checks:
        if check.level != "row":
            continue
        rows = np.zeros(n, dtype=bool)
        rows[list(check.unexpected_rows)] = True
        _invariant(
            check.success != rows.any(), f"GX verdict of {check.rule} disagrees with its unexpected rows"
        )
        col = check.rule.removeprefix("null_")
        if check.rule.startswith("null_") and col in bad_type:
            # A value that does not parse is null in the typed frame too; it is reported as bad_type_<col>.
            _invariant(not (bad_type[col] & ~rows).any(), f"GX missed unparseable {col} values")
            rows &= ~bad_type[col]
        if check.rule == "duplicate_event_id":
            # GX flags every copy; :meth:`EventsValidation._resolve_duplicates` decides which one is kept.
            _invariant(
                bool((rows == (event_id.isin(duplicated) & event_id.notna()).to_numpy(bool)).all()),
                "GX duplicate rows disagree with the day's duplicated ids",
            )
        masks[check.rule] = rows
    return masks


def _join_reasons(masks: dict[str, np.ndarray], n: int) -> pd.Series:
    """``rule1;rule2`` per failing row (suite order), null for accepted rows."""
    out = pd.Series(pd.NA, index=range(n), dtype="string")
    if not masks:
        return out
    rules = list(masks)
    matrix = np.column_stack([masks[r] for r in rules])
    for i in np.flatnonzero(matrix.any(axis=1)):
        out.iat[i] = ";".join(r for r, hit in zip(rules, matrix[i], strict=True) if hit)
    return out


def _volume_floor(trailing: list[int], fraction: float) -> tuple[int, float | None, list[int]]:
    volumes = [int(v) for v in trailing or () if v is not None]
    if len(volumes) < 2:
        return 1, None, volumes
    median = float(np.median(volumes))
    return max(1, math.ceil(fraction * median)), median, volumes


# Reference tables -----------------------------------------------------------------------------------
def validate_videos(
    videos: pd.DataFrame, *, reports_dir: Path | None = None, ds: date | str | None = None
) -> ValidationResult:
    """Validate the video catalog (columns, types, non-null unique ``video_id``, duration > 0).

    Raises:
        BatchValidationError: any failure; a reference table is used whole or not at all.
    """
    return _validate_reference(videos, VIDEOS, "videos", ex.videos_suite, (), reports_dir, ds)


def validate_users(
    users: pd.DataFrame, *, reports_dir: Path | None = None, ds: date | str | None = None
) -> ValidationResult:
    """Validate the raw user table (columns, types, non-null unique ``user_id``, known devices).

    Raises:
        BatchValidationError: any failure.
    """
    return _validate_reference(
        users, RAW_USERS, "raw_users", ex.users_suite, ("user_id", "email"), reports_dir, ds
    )


def _validate_reference(frame, schema, dataset, suite, pii, reports_dir, ds) -> ValidationResult:
    name = dataset if ds is None else f"{dataset} ds={as_date(ds)}"
    if len(frame) == 0:
        raise BatchValidationError(
            f"{name}: expect_table_row_count_to_be_between(min_value=1) failed: observed 0 rows"
        )
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise BatchValidationError(
            f"{name}: expect_table_columns_to_match_set failed: missing required column(s) {missing} "
            f"(observed columns {sorted(map(str, frame.columns))})"
        )
    try:
        typed = conform(frame, schema, name=name)
    except SchemaError as exc:
        raise BatchValidationError(
            f"{name}: types_castable failed: {str(exc).removeprefix(name + ': ')}"
        ) from exc
    run = ex.run_suite(
        ex.mask_identifiers(typed, pii),
        dataset,
        suite(list(schema)),
        run_name="adhoc" if ds is None else f"ds={as_date(ds)}",
        reports_dir=reports_dir,
    )
    _raise_on_gx_errors(name, run)
    failed = [c for c in run.checks if not c.success]
    report = {
        "dataset": dataset,
        "ds": None if ds is None else as_date(ds).isoformat(),
        "input_rows": len(frame),
        "accepted": len(typed),
        "quarantined": 0,
        "expectations": [c.summary() for c in run.checks],
        "gx_success": run.success,
        "data_docs_path": str(run.data_docs_path) if run.data_docs_path else None,
        "passed": not failed,
    }
    if failed:
        raise BatchValidationError(
            f"{name}: " + "; ".join(_describe(c) for c in failed), report, run.data_docs_path
        )
    quarantined = pd.DataFrame({c: pd.Series(dtype="string") for c in [*frame.columns, "reason"]})
    return ValidationResult(typed, quarantined, report, run.data_docs_path)


# Helpers --------------------------------------------------------------------------------------------
def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as strings (nulls stay null): a quarantine file takes any garbage without a schema."""
    return pd.DataFrame(
        {
            str(c): pd.array(
                [None if is_null(v) else str(v) for v in frame[c].astype(object)], dtype="string"
            )
            for c in frame.columns
        },
        index=frame.index,
    )


def _describe(check: ex.Check) -> str:
    col = f"({check.column})" if check.column else ""
    if check.unexpected_count is not None:
        seen = f"{check.unexpected_count} unexpected value(s), e.g. {list(check.sample)}"
    else:
        seen = f"observed {check.observed_value}"
    return f"{check.expectation}{col} failed: {seen}"


def _raise_on_gx_errors(name: str, run: ex.SuiteRun) -> None:
    errors = [f"{c.expectation}({c.column}): {c.error}" for c in run.checks if c.error]
    if errors:
        raise BatchValidationError(f"{name}: GX could not evaluate {errors}", None, run.data_docs_path)


def _invariant(condition: bool, message: str) -> None:
    """An internal invariant (kept under ``python -O``, unlike ``assert``)."""
    if not condition:
        raise AssertionError(message)

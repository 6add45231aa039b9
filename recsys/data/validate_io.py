"""The edges of the validate stage: landing files in, earlier accepted ids, the quarantine file out.

Kept apart from the rules (:mod:`recsys.data.validate`, which re-exports these): they read bytes, files
and the lake, or shape the quarantine frame, and judge nothing.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from recsys.data.lake import as_date
from recsys.data.sources import split_jsonl


# Landing files --------------------------------------------------------------------------------------
def parse_jsonl(data: bytes | str, source: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse JSON lines one by one: (rows, malformed lines). Blank lines are skipped.

    Strict (:func:`recsys.data.sources.split_jsonl`): a line that is not UTF-8 gets reason
    ``bad_encoding``, one that is not JSON ``malformed_json``, valid JSON that is not an object (a list,
    a number) ``not_json_object``. The batch never fails on a bad line.
    """
    rows, _, malformed = split_jsonl(data, source)
    return (pd.DataFrame.from_records(rows) if rows else pd.DataFrame()), malformed


def read_landing_jsonl(path: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a landing file, or every ``*.jsonl`` file of a partition folder: (rows, malformed lines)."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    parts = [parse_jsonl(f.read_bytes(), source=f.name) for f in files]
    if not parts:
        return parse_jsonl(b"")
    frames = [p[0] for p in parts if len(p[0])]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return rows, pd.concat([p[1] for p in parts], ignore_index=True)


# The stage's edges ----------------------------------------------------------------------------------
def accepted_event_ids(lake, ds: date | str, days: int) -> set[str]:
    """Event ids accepted on the ``days`` days before ``ds`` (an id may not be reused within them)."""
    ds = as_date(ds)
    seen: set[str] = set()
    for d in lake.list_ds("raw", "valid_events"):
        if ds - timedelta(days=days) <= d < ds and lake.has_frame("raw", "valid_events", d):
            ids = lake.read_frame("raw", "valid_events", d)["event_id"]
            seen.update(ids.dropna().astype(str))
    return seen


def quarantine_frame(quarantined: pd.DataFrame, malformed: pd.DataFrame) -> pd.DataFrame:
    """Quarantined rows, then malformed lines (their text, reason, line and original bytes)."""
    out = quarantined.astype("string")
    if len(malformed):
        bad = pd.DataFrame(
            {
                "raw_line": malformed["raw_line"].astype("string"),
                "reason": malformed["reason"].astype("string"),
                "line_number": malformed["line_number"].astype("string"),
            }
        )
        if "raw_bytes" in malformed.columns:
            bad["raw_bytes"] = malformed["raw_bytes"].astype(object)
        out = pd.concat([out, bad], ignore_index=True)
    return out

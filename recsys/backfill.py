"""Backfill: import a source's history day by day through the daily ingest path (issue 13, point 1).

Why: a new deployment on a real source (MovieLens, KuaiRand, a PostgreSQL log) starts with months of
history; the daily DAG reads one day. ``recsys backfill [--from D1] [--to D2]`` (and the manual DAG
``recsys_backfill``) runs every day of the range through the same stages as a daily run, ``land ->
collect -> validate -> anonymize``, so each day is validated, quarantined, encrypted and pseudonymized
exactly as it would be, and rows are conserved (validate asserts accepted + quarantined = input).

* Bounded memory: one day at a time; nothing holds the whole history in one frame (the source reader may
  cache its parsed file, which is the size of the source, not of the lake).
* Idempotent and resumable: a day is *done* when its marker ``backfill/ds=D.json`` exists, written
  atomically after the day's last stage. A rerun skips done days; a day killed half-way has no marker and
  is imported again from ``land`` (each stage replaces its partitions atomically, so a rerun of a day
  leaves one copy of it). So a killed backfill, rerun, imports every day exactly once.
* Validation Data Docs are built once, when the backfill ends or fails (a killed one: by the next run),
  not after each suite: a rebuild renders every stored run, so per-day rebuilds made the backfill slower
  the more days it had imported (bench/backfill.py).
* Days of the range without data (a gap in the history) are listed as ``empty_days`` in the summary and
  in each marker's neighbourhood, never invented.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import date
from pathlib import Path

from recsys.data.lake import atomic_write_bytes

log = logging.getLogger(__name__)


def marker(settings, ds: date) -> Path:
    return Path(settings.data_dir) / "backfill" / f"ds={ds}.json"


def done_days(settings) -> list[date]:
    """Days already imported by a backfill (their marker exists)."""
    base = Path(settings.data_dir) / "backfill"
    if not base.exists():
        return []
    return sorted(date.fromisoformat(p.name[3:-5]) for p in base.glob("ds=*.json"))


def source_days(settings) -> list[date]:
    """The days on which the configured source has data."""
    from recsys.data.importers import available_days

    return available_days(settings)


def plan(settings, start: date | None = None, end: date | None = None) -> dict:
    """Which days a backfill of ``[start, end]`` (default: the whole history) would import or skip."""
    days = source_days(settings)
    if not days:
        raise ValueError(f"source {settings.source!r} at {settings.source_path} has no days with data")
    start, end = start or days[0], end or days[-1]
    if start > end:
        raise ValueError(f"backfill range is empty: from {start} is after to {end}")
    in_range = [d for d in days if start <= d <= end]
    done = set(done_days(settings))
    have = set(in_range)
    span = (end - start).days + 1
    empty = [d for d in (start.fromordinal(start.toordinal() + i) for i in range(span)) if d not in have]
    return {
        "from": start,
        "to": end,
        "todo": [d for d in in_range if d not in done],
        "skipped": [d for d in in_range if d in done],
        "empty_days": empty,
    }


def import_day(ds: date, settings) -> dict:
    """One day through land -> collect -> validate -> anonymize, then its marker."""
    from recsys import stages

    out = {}
    for name in ("land", "collect", "validate", "anonymize"):
        out[name] = getattr(stages, name)(ds, settings)
    summary = {
        "ds": str(ds),
        "input_rows": out["validate"].get("input_rows"),
        "accepted_rows": out["validate"].get("accepted_rows"),
        "quarantined_rows": out["validate"].get("quarantined_rows"),
        "clean_rows": out["anonymize"].get("interactions_rows"),
    }
    atomic_write_bytes(marker(settings, ds), json.dumps(summary).encode())
    return summary


def backfill(settings, start: date | None = None, end: date | None = None, limit: int | None = None) -> dict:
    """Import every not-yet-imported day of ``[start, end]``; ``limit``: at most that many days this call."""
    from recsys.catalog import Catalog
    from recsys.data.suite_run import deferred_data_docs

    p = plan(settings, start, end)
    todo = p["todo"][:limit] if limit is not None else p["todo"]
    t0 = time.monotonic()
    rows = {"input_rows": 0, "accepted_rows": 0, "quarantined_rows": 0}
    # the validation Data Docs are built once at the end (also if a day fails), not after every suite
    with deferred_data_docs(Catalog.from_settings(settings).validation_reports):
        for i, ds in enumerate(todo, 1):
            s = import_day(ds, settings)
            for k in rows:
                rows[k] += int(s.get(k) or 0)
            log.info("backfill %s: day %d/%d done (%s rows)", ds, i, len(todo), s["input_rows"])
    return {
        "from": str(p["from"]),
        "to": str(p["to"]),
        "imported_days": len(todo),
        "skipped_days": len(p["skipped"]),
        "remaining_days": len(p["todo"]) - len(todo),
        "empty_days": [str(d) for d in p["empty_days"]],
        **rows,
        "seconds": round(time.monotonic() - t0, 1),
    }


def backfill_range(start: str | None = None, end: str | None = None, settings=None) -> dict:
    """:func:`backfill` with ISO-date strings (empty or None: the history's first / last day), for the CLI
    and the ``recsys_backfill`` DAG's params."""
    from recsys.config import load_settings

    def parse(s):
        return date.fromisoformat(str(s)) if s else None

    return backfill(settings or load_settings(), parse(start), parse(end))


from recsys.features.partition import HISTORY_SOURCES, training_window_days  # noqa: E402,F401  (re-exported)

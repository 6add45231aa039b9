"""A day's ingestion over the lake: landing checked, collected into the raw zone, validated.

These are the bodies of the ``land`` (for an upstream that delivers), ``collect`` and ``validate``
stages: each reads the zone before it, calls the parsing or validation functions of this package, and
writes the zone after it, returning the summary the stage records.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

from recsys.config import ValidationSettings
from recsys.data import collect, sources
from recsys.data.collect import DEFAULT_CHUNK_ROWS
from recsys.data.lake import Lake

log = logging.getLogger(__name__)
LANDING_DATASETS = ("events", "videos", "users")


def check_delivered(lake: Lake, ds: date) -> dict:
    """An upstream writes landing itself: fail clearly when a file of ``ds`` is missing."""
    for dataset in LANDING_DATASETS:
        if not any(
            lake.has_file("landing", dataset, ds, f) for f in (sources.LANDING_FILE, sources.SEALED_FILE)
        ):
            expected = f"{lake.partition('landing', dataset, ds)}/{sources.LANDING_FILE}"
            raise FileNotFoundError(f"upstream has not delivered {dataset} for ds={ds} (expected {expected})")
    return {"source": "landing"}


def collect_day(lake: Lake, ds: date, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """Landing -> raw zone (encrypted Parquet); each landing file is read once and exactly those bytes are
    then encrypted in place; the events are parsed and written ``chunk_rows`` lines at a time, so memory
    does not grow with the day (:func:`recsys.data.collect.collect_day`)."""
    return collect.collect_day(lake, ds, chunk_rows)


def validate_day(
    lake: Lake,
    ds: date,
    trailing_volumes: list[int],
    reports_dir: Path,
    cfg: ValidationSettings,
    id_window_days: int = 14,
) -> dict:
    """Great Expectations on the raw day: bad rows to quarantine (with the rule), bad batches fail.

    ``trailing_volumes``: the input rows of the days before (newest first), for the volume check.
    ``id_window_days``: an event id accepted on one of these days before ``ds`` may not come back.
    """
    from recsys.data.validate import (
        accepted_event_ids,
        quarantine_frame,
        validate_events,
        validate_users,
        validate_videos,
    )

    events = lake.read_frame("raw", "events", ds)
    malformed = lake.read_frame("raw", "events_malformed", ds)
    videos = lake.read_frame("raw", "videos", ds)
    users = lake.read_frame("raw", "users", ds)
    # reference tables: any failure stops the run; their runs go to the same Data Docs as the events'
    validate_videos(videos, ds=ds, reports_dir=reports_dir)
    validate_users(users, ds=ds, reports_dir=reports_dir)
    durations = dict(
        zip(videos["video_id"].astype(int), videos["duration_seconds"].astype(float), strict=True)
    )
    res = validate_events(
        events,
        ds,
        set(durations),
        trailing_volumes,
        reports_dir,
        durations=durations,
        n_malformed=len(malformed),
        seen_event_ids=accepted_event_ids(lake, ds, id_window_days),
        max_watch_multiple=cfg.max_watch_multiple,
        min_volume_fraction=cfg.min_volume_fraction,
        max_quarantine_share=cfg.max_quarantine_share,
    )
    quarantine = quarantine_frame(res.quarantined, malformed)
    lake.write_frame("quarantine", "events", ds, quarantine)
    lake.write_frame("raw", "valid_events", ds, res.accepted)
    if res.data_docs_path:
        log.info("validation Data Docs: %s", res.data_docs_path)
    if len(res.accepted) + len(res.quarantined) != len(events):
        raise AssertionError("validation lost rows: accepted + quarantined != input")
    return {
        "input_rows": len(events) + len(malformed),
        "accepted_rows": len(res.accepted),
        "quarantined_rows": len(quarantine),
        "data_docs": str(res.data_docs_path or ""),
        "rules": {k: v for k, v in res.report.get("rule_counts", {}).items() if v},
    }

"""A day's ingestion over the lake: landing checked, collected into the raw zone, validated.

These are the bodies of the ``land`` (for an upstream that delivers), ``collect`` and ``validate``
stages: each reads the zone before it, calls the parsing or validation functions of this package, and
writes the zone after it, returning the summary the stage records.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pandas as pd

from recsys.config import ValidationSettings
from recsys.data import sources
from recsys.data.lake import Lake

log = logging.getLogger(__name__)
LANDING_DATASETS = ("events", "videos", "users")


def check_delivered(lake: Lake, ds: date) -> dict:
    """An upstream writes landing itself: fail clearly when a file of ``ds`` is missing."""
    for dataset in LANDING_DATASETS:
        p = sources.landing_file(lake, dataset, ds)
        if not p.exists() and not p.with_name(p.name + ".enc").exists():
            raise FileNotFoundError(f"upstream has not delivered {dataset} for ds={ds} (expected {p})")
    return {"source": "landing"}


def collect_day(lake: Lake, ds: date) -> dict:
    """Landing -> raw zone (encrypted Parquet); the landing files are then encrypted in place."""
    events, malformed = sources.collect_user_interactions(lake, ds)
    videos = sources.collect_content_metadata(lake, ds)
    users = sources.collect_contextual_info(lake, ds)
    lake.write_frame("raw", "events", ds, events)
    lake.write_frame("raw", "events_malformed", ds, malformed)
    lake.write_frame("raw", "videos", ds, videos)
    lake.write_frame("raw", "users", ds, users)
    for dataset in LANDING_DATASETS:
        sources.seal_landing(lake, dataset, ds)
    return {
        "input_rows": len(events) + len(malformed),
        "malformed_rows": len(malformed),
        "videos_rows": len(videos),
        "users_rows": len(users),
    }


def validate_day(
    lake: Lake, ds: date, trailing_volumes: list[int], reports_dir: Path, cfg: ValidationSettings
) -> dict:
    """Great Expectations on the raw day: bad rows to quarantine (with the rule), bad batches fail.

    ``trailing_volumes``: the input rows of the days before (newest first), for the volume check.
    """
    from recsys.data.validate import validate_events, validate_users, validate_videos

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
        max_watch_multiple=cfg.max_watch_multiple,
        min_volume_fraction=cfg.min_volume_fraction,
        max_quarantine_share=cfg.max_quarantine_share,
    )
    quarantine = res.quarantined.astype("string")
    if len(malformed):
        bad = pd.DataFrame({"raw_line": malformed["raw_line"].astype("string"), "reason": "malformed_json"})
        quarantine = pd.concat([quarantine, bad], ignore_index=True)
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

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


def collect_day(lake: Lake, ds: date, chunk_rows: int = DEFAULT_CHUNK_ROWS, map_chunks=None) -> dict:
    """Landing -> raw zone (encrypted Parquet); each landing file is read once and exactly those bytes are
    then encrypted in place; the events are parsed and written ``chunk_rows`` lines at a time, so memory
    does not grow with the day (:func:`recsys.data.collect.collect_day`); ``map_chunks``: where the
    chunks are parsed (default: this process)."""
    if map_chunks is None:
        return collect.collect_day(lake, ds, chunk_rows)
    return collect.collect_day(lake, ds, chunk_rows, map_chunks)


def validate_day(
    lake: Lake,
    ds: date,
    trailing_volumes: list[int],
    reports_dir: Path,
    cfg: ValidationSettings,
    id_window_days: int = 14,
    chunk_rows: int | None = None,
) -> dict:
    """Great Expectations on the raw day: bad rows to quarantine (with the rule), bad batches fail.

    The raw events are read ``chunk_rows`` rows at a time (default ``cfg.chunk_rows``) through the
    decrypting reader; each chunk is validated (:class:`recsys.data.validate.EventsValidation`) and its
    accepted and quarantined rows written as row groups of staged encrypted files, committed only when the
    whole day passed. The outputs do not depend on ``chunk_rows``.

    ``trailing_volumes``: the input rows of the days before (newest first), for the volume check.
    ``id_window_days``: an event id accepted on one of these days before ``ds`` may not come back.
    """
    from recsys.data.validate_chunks import validate_events_chunked

    summary = validate_events_chunked(
        lake, ds, trailing_volumes, reports_dir, cfg, id_window_days, chunk_rows or cfg.chunk_rows
    )
    if summary["data_docs"]:
        log.info("validation Data Docs: %s", summary["data_docs"])
    return summary

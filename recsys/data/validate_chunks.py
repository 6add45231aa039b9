"""The validate stage over the lake, in chunks: memory follows the chunk, not the day.

1. The day-wide facts a chunk cannot see are computed first from the ``event_id`` columns alone (read by
   column, decrypted where read): the ids that appear more than once in the day, and the ids accepted on
   the earlier days of the window. Ids are held one hash bucket at a time (``id_bucket_rows`` ids), so
   neither the day's ids nor the window's are ever all in memory.
2. The raw events are read ``chunk_rows`` rows at a time; :class:`recsys.data.validate.EventsValidation`
   judges each chunk (GX per chunk, verdicts summed) and its accepted rows and quarantined rows (with the
   rules) go to staged encrypted files as Parquet row groups; then the malformed lines, in chunks too.
3. Only when the day passed (volume, quarantine share: from the sums) are the inputs authenticated again
   and the two files committed (quarantine, then the valid events, as before). A failed or killed run
   leaves hidden staged files only (removed on failure, or by the next run: ``clean_orphans``).

The outputs are the frames the whole-day path gives (same rows, order, columns, reasons, counts).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa

from recsys.config import ValidationSettings
from recsys.data.lake import FrameReader, Lake
from recsys.data.schema import RAW_EVENTS, conform
from recsys.data.staged import FrameFile


def _bucket_of(ids: pd.Series, buckets: int) -> pd.Series:
    if buckets == 1:
        return pd.Series(0, index=ids.index)
    return pd.Series(pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy() % buckets, ids.index)


def day_ids(
    events: FrameReader,
    previous: list[Callable[[], ContextManager[FrameReader]]],
    chunk_rows: int,
    bucket_rows: int,
    check_reused: bool,
) -> tuple[set[str], set[str] | None]:
    """(the ids that appear more than once in the day, the day's ids accepted on the earlier days).

    ``previous`` opens each earlier day's accepted events; one is open at a time (on a lake at a URL an
    open file is its whole object in memory), and each is authenticated again after it was read."""
    from recsys.data.validate import day_duplicates, event_id_text

    buckets = max(1, math.ceil(events.num_rows / bucket_rows))
    duplicated: set[str] = set()
    reused: set[str] | None = set() if check_reused else None
    for b in range(buckets):
        parts = []
        for table in events.batches(chunk_rows, ["event_id"]):
            ids = event_id_text(table.column(0).to_pandas()).dropna()
            parts.append(ids[(_bucket_of(ids, buckets) == b).to_numpy()])
        today = pd.concat(parts, ignore_index=True) if parts else pd.Series([], dtype="string")
        del parts
        duplicated |= day_duplicates(today)
        if reused is None:
            continue
        today = pd.Index(today.unique())
        for open_day in previous:
            with open_day() as reader:
                found: set[str] = set()
                for table in reader.batches(chunk_rows, ["event_id"]):
                    seen = table.column(0).to_pandas().dropna().astype(str)
                    seen = seen[(_bucket_of(seen, buckets) == b).to_numpy()]
                    found.update(seen[seen.isin(today)])
                reader.verify()  # the day did not change while it was read
            reused |= found
    return duplicated, reused


def _previous_days(lake: Lake, ds: date, days: int) -> list[date]:
    return [
        d
        for d in lake.list_ds("raw", "valid_events")
        if ds - timedelta(days=days) <= d < ds and lake.has_frame("raw", "valid_events", d)
    ]


def _quarantine_schema(raw_columns: list[str], malformed: FrameReader) -> tuple[list[str], pa.Schema]:
    """The quarantine file's columns and types: the raw columns and ``reason`` as strings, then (when
    there are malformed lines) ``raw_line``, ``line_number`` and ``raw_bytes`` (binary)."""
    from recsys.data.validate_io import quarantine_frame

    template = pd.DataFrame({c: pd.Series(dtype="string") for c in [*raw_columns, "reason"]})
    if malformed.num_rows:
        bad = next(malformed.frame_batches(1))
        template = quarantine_frame(template, bad).iloc[:0]
    schema = pa.Schema.from_pandas(template, preserve_index=False)
    if "raw_bytes" in template.columns:
        schema = schema.set(schema.get_field_index("raw_bytes"), pa.field("raw_bytes", pa.binary()))
    return list(template.columns), schema


def _table(frame: pd.DataFrame, columns: list[str], schema: pa.Schema) -> pa.Table:
    """``frame`` in the quarantine file's columns; a column it lacks is null (of the column's type)."""
    arrays = [
        pa.array(frame[c], type=schema.field(c).type, from_pandas=True)
        if c in frame.columns
        else pa.nulls(len(frame), schema.field(c).type)
        for c in columns
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def validate_events_chunked(
    lake: Lake,
    ds: date,
    trailing_volumes: list[int],
    reports_dir: Path,
    cfg: ValidationSettings,
    id_window_days: int,
    chunk_rows: int,
) -> dict:
    """The validate stage's body for the events of ``ds`` (see the module's docstring); its summary."""
    from recsys.data.validate import (
        EventsValidation,
        check_columns,
        validate_users,
        validate_videos,
    )
    from recsys.data.validate_io import quarantine_frame

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    videos = lake.read_frame("raw", "videos", ds)
    users = lake.read_frame("raw", "users", ds)
    # reference tables: any failure stops the run; their runs go to the same Data Docs as the events'
    validate_videos(videos, ds=ds, reports_dir=reports_dir)
    validate_users(users, ds=ds, reports_dir=reports_dir)
    del users
    durations = dict(
        zip(videos["video_id"].astype(int), videos["duration_seconds"].astype(float), strict=True)
    )
    del videos
    outputs: list[FrameFile] = []
    committed = False
    with contextlib.ExitStack() as stack:
        events = stack.enter_context(lake.open_frame("raw", "events", ds))
        malformed = stack.enter_context(lake.open_frame("raw", "events_malformed", ds))
        columns = list(events.schema.names)
        check_columns(ds, columns, events.num_rows, malformed.num_rows)
        previous = [
            functools.partial(lake.open_frame, "raw", "valid_events", d)
            for d in _previous_days(lake, ds, id_window_days)
        ]
        duplicated, reused = day_ids(events, previous, chunk_rows, cfg.id_bucket_rows, True)
        run = EventsValidation(
            ds,
            set(durations),
            trailing_volumes,
            reports_dir,
            durations=durations,
            duplicated_ids=duplicated,
            reused_ids=reused,
            max_watch_multiple=cfg.max_watch_multiple,
            min_volume_fraction=cfg.min_volume_fraction,
            max_quarantine_share=cfg.max_quarantine_share,
        )
        q_columns, q_schema = _quarantine_schema(columns, malformed)
        empty_valid = conform(pd.DataFrame({c: [] for c in RAW_EVENTS}), RAW_EVENTS, name="valid_events")
        valid = FrameFile(lake, "valid_events", ds, empty_valid, zone="raw")
        quarantine = FrameFile(
            lake, "events", ds, q_schema.empty_table().to_pandas(), q_schema, zone="quarantine"
        )
        outputs = [quarantine, valid]
        try:
            for frame in events.frame_batches(chunk_rows):
                accepted, quarantined = run.chunk(frame)
                valid.write(pa.Table.from_pandas(accepted, preserve_index=False))
                quarantine.write(_table(quarantined, q_columns, q_schema))
            for bad in malformed.frame_batches(chunk_rows):
                rows = quarantine_frame(pd.DataFrame(columns=[*columns, "reason"], dtype="string"), bad)
                quarantine.write(_table(rows, q_columns, q_schema))
            # the inputs did not change while they were read (authenticated again; the earlier days
            # were, each after its read), before anything is reported or stored from them
            for reader in (events, malformed):
                reader.verify()
            report, docs = run.finish(malformed.num_rows)
            for f in outputs:
                f.finish()
            if run.accepted + run.quarantined != events.num_rows:
                raise AssertionError("validation lost rows: accepted + quarantined != input")
            for f in outputs:
                f._staged.commit()
            committed = True
        finally:
            if not committed:
                for f in outputs:
                    with contextlib.suppress(Exception):  # one failed clean-up must not keep the others
                        f.discard()
    return {
        "input_rows": events.num_rows + malformed.num_rows,
        "accepted_rows": run.accepted,
        "quarantined_rows": run.quarantined + malformed.num_rows,
        "data_docs": str(docs or ""),
        "rules": {k: v for k, v in report.get("rule_counts", {}).items() if v},
    }

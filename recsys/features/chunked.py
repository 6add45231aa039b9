"""The features stage in chunks (issue 15): the window is never held in memory as one frame.

The same outputs as the whole-frame path (:func:`recsys.features.partition.split_and_fit` then
:func:`~recsys.features.partition.write_split`): the same rows in the same order, the same ``x_*`` values,
the same ``transform.json``. How:

1. **Order.** The clean partitions are not in (ts, event_id) order (anonymize keeps the delivery order), so
   each day of the window is sorted on its own (Arrow's sort, the byte order of UTF-8 being the code point
   order pandas sorts strings by) into sorted work files. A day above ``sort_bucket_rows`` rows is sorted
   externally (:mod:`recsys.features.daysort`): routed by timestamp into time buckets, each bucket sorted
   alone, the buckets laid end to end (rows of equal ts share a bucket). Days do not overlap in time, so
   the sorted days laid end to end are the window's order; that is checked (each day's first key after the
   previous day's last), and a window where it fails takes the whole path. Memory here follows
   ``sort_bucket_rows`` (one bucket's table and its sorted copy), not the day nor the window.
2. **Split.** The time split needs only counts: the rows before ``ds``, of ``ds`` and after it (dropped),
   so train, valid and test are row ranges of the ordered window.
3. **Fit.** The train range in chunks: :class:`~recsys.features.transform.FitStats` adds counts and sums;
   the affinity features' (user, side) counts in arrays (:mod:`recsys.features.pair_counts`), from which
   ``transform.json`` is written piece by piece (the same bytes as the whole path's dicts give).
4. **Normalize.** The train range again: the ordered raw numerics, chunk by chunk with the statistics
   carried (:class:`~recsys.features.transform.OrderedState`), written to a work file; their mean and
   standard deviation are summed over fixed blocks of rows (the whole path sums the same way).
5. **Encode and write.** Each split in chunks, appended as row groups to its Parquet file in the staged
   partition, which the lake commits whole (:meth:`Lake.replace_partition`) or not at all.

Kept on the whole path (and said so in the stage's summary, ``chunked: false`` with the reason): a
positive-only source (the sampled negatives draw over a whole split), click labels that are not whole
numbers (their sums would depend on the chunking), rows without a timestamp, and overlapping days.
On a lake at a URL each day's object is fetched whole (compressed) before it is sorted.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.features.build import build_examples, encode, window_start
from recsys.features.coengagement import use_coengagement
from recsys.features.daysort import ORDER, sorted_runs, ts_range
from recsys.features.transform import FitStats

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
SPLITS = ("train", "valid", "test")


class Fallback(Exception):
    """The window cannot be built in chunks with outputs equal to the whole path's: build it whole."""


class OrderedWindow:
    """The window's clean interactions as sorted day files in ``work``, read back by global row range."""

    def __init__(self, lake, days: list[date], work: Path, ds: date, chunk_rows: int, bucket_rows: int):
        from recsys import tasks

        self.files: list[tuple[Path, int]] = []  # (sorted run of a day, rows), in the window's order
        self._start = pd.Timestamp(ds, tz="UTC")
        self.history = self.today = self.total = 0
        self._engagement = next((t for t in tasks.current() if t.name == tasks.ENGAGEMENT), None)
        self.positive_only = True
        self._last = None
        for d in days:
            for i, table in enumerate(_day_runs(lake, d, work, chunk_rows, bucket_rows)):
                self._add_run(table, work / f"day-{d.isoformat()}-{i:05d}.parquet", d, i, chunk_rows)
        self.positive_only = self.positive_only and self.total > 0

    def _add_run(self, table: pa.Table, path: Path, d: date, i: int, chunk_rows: int) -> None:
        """Check and count a sorted run (the next rows of the window's order) and keep it as a file."""
        if table.column("event_id").null_count:
            raise Fallback(f"rows without ts or event_id on {d}")
        ts = pd.to_datetime(table.column("ts").to_pandas(), utc=True)
        first = (ts.iloc[0], table.column("event_id")[0].as_py())
        if self._last is not None and not self._last < first:
            if i:  # the runs of one day are its time buckets, in order by construction
                raise RuntimeError(f"the time buckets of {d} are out of order")
            raise Fallback(f"day {d} overlaps the day before it in time")
        self._last = (ts.iloc[-1], table.column("event_id")[-1].as_py())
        end = self._start + pd.Timedelta(days=1)
        before = int((ts < self._start).sum())
        on = int(((ts >= self._start) & (ts < end)).sum())
        if self.today and before:  # sorted: every earlier row must come before every row of ds
            raise Fallback(f"day {d} has rows before {self._start.date()} after rows of it")
        self.history += before
        self.today += on
        self.total += table.num_rows
        if self.positive_only:
            self.positive_only = _positive_only(table, self._engagement)
        pq.write_table(table, path, row_group_size=max(1, min(chunk_rows, 1 << 20)))
        self.files.append((path, table.num_rows))
        del table, ts
        pa.default_memory_pool().release_unused()  # the next bucket's table does not stack on this one's

    def ranges(self, valid_fraction: float) -> dict[str, tuple[int, int]]:
        """Row ranges of train, valid and test (what :func:`recsys.features.build.split_by_time` gives)."""
        h, n = self.history, self.today
        if h == 0:  # first day: the day itself split by time, 70/15/15
            a, b = int(n * 0.70), int(n * 0.85)
            return {"train": (0, a), "valid": (a, b), "test": (b, n)}
        cut = int(h * (1 - valid_fraction))
        return {"train": (0, cut), "valid": (cut, h), "test": (h, h + n)}

    def events(self, lo: int, hi: int, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """The window's rows ``lo:hi`` in order, at most ``chunk_rows`` at a time (frames as the lake's)."""
        offset = 0
        for path, rows in self.files:
            a, b = max(lo, offset), min(hi, offset + rows)
            if a < b:
                pf = pq.ParquetFile(path)
                pos = offset
                for batch in pf.iter_batches(batch_size=chunk_rows):
                    s, e = max(a, pos), min(b, pos + batch.num_rows)
                    if s < e:
                        table = pa.Table.from_batches([batch.slice(s - pos, e - s)], schema=pf.schema_arrow)
                        yield table.to_pandas().reset_index(drop=True)
                    pos += batch.num_rows
                    if pos >= b:
                        break
            offset += rows
            if offset >= hi:
                break


def _day_runs(lake, d: date, work: Path, chunk_rows: int, bucket_rows: int) -> Iterator[pa.Table]:
    """Day ``d``'s clean interactions sorted by (ts, event_id), as consecutive tables of at most about
    ``bucket_rows`` rows (:func:`recsys.features.daysort.sorted_runs`); a smaller day as one table."""
    with lake.open_frame("clean", "interactions", d) as reader:
        if reader.num_rows <= bucket_rows:
            table = reader.file.read()
            reader.verify()
            if table.column("ts").null_count:
                raise Fallback(f"rows without ts or event_id on {d}")
            if table.num_rows:
                yield table.sort_by(ORDER)
            return

        @contextlib.contextmanager
        def source(columns):
            yield reader.file.iter_batches(batch_size=max(1, min(chunk_rows, 1 << 16)), columns=columns)

        n, nulls, lo, hi = ts_range(source)
        if nulls:
            raise Fallback(f"rows without ts or event_id on {d}")
        metadata = reader.schema.metadata
        for run in sorted_runs(source, n, lo, hi, bucket_rows, work):
            yield run.replace_schema_metadata(metadata)
        reader.verify()


def _positive_only(table: pa.Table, engagement) -> bool:
    """:func:`recsys.features.negatives.is_positive_only` of these rows' click labels."""
    if engagement is None:
        return False
    cols = [c for c in dict.fromkeys((engagement.column, "clicked")) if c in table.column_names]
    frame = table.select(cols).to_pandas()
    try:
        click = pd.Series(engagement.label(frame))
    except KeyError:
        return False
    return bool(len(click)) and bool((click.fillna(1) > 0).all())


def _chunks(window, lo, hi, chunk_rows, videos, users) -> Iterator[pd.DataFrame]:
    for events in window.events(lo, hi, chunk_rows):
        # only the chunk's users: the same join (build_examples keeps each user's last row), without
        # hashing the whole users table (500k rows at 10M interactions: 0.4 s) for every chunk
        yield build_examples(events, videos, users[users["user_key"].isin(events["user_key"].unique())])


def build_chunked(
    lake, ds: date, settings, window_days: int, chunk_rows: int, work: Path, videos, users
) -> tuple[dict, callable]:
    """Fit in chunks; returns (summary, build) where ``build(folder)`` writes the partition's files.
    Raises :class:`Fallback` when the whole path must be taken."""
    days = [
        d
        for d in lake.list_ds("clean", "interactions")
        if window_start(ds, window_days) <= d <= ds and lake.has_frame("clean", "interactions", d)
    ]
    if not days:
        raise FileNotFoundError(
            f"no clean/interactions partitions between {window_start(ds, window_days)} and {ds}"
        )
    window = OrderedWindow(lake, days, work, ds, chunk_rows, settings.sort_bucket_rows)
    if window.positive_only:
        raise Fallback("positive-only source: sampled negatives are drawn over a whole split")
    ranges = window.ranges(settings.valid_fraction)
    sizes = {name: hi - lo for name, (lo, hi) in ranges.items()}
    if min(sizes.values()) == 0:
        raise ValueError(
            f"not enough data to split ds={ds}: "
            f"train={sizes['train']} valid={sizes['valid']} test={sizes['test']}"
        )
    coengagement = use_coengagement(settings.coengagement, False)
    stats = FitStats(coengagement=coengagement, compact=True)
    for chunk in _chunks(window, *ranges["train"], chunk_rows, videos, users):
        stats.add(chunk)
    if not stats.integral:
        raise Fallback("click labels that are not whole numbers")
    transform = stats.transform(
        title_len=settings.title_max_tokens,
        title_vocab_size=settings.title_vocab_size,
        min_count=settings.min_count,
        affinity_strength=settings.affinity_strength,
    )
    state = stats.ordered_state()
    del stats
    k = len(transform.numeric)
    raw_path = work / "train_raw.f8"
    with open(raw_path, "wb") as f:
        for chunk in _chunks(window, *ranges["train"], chunk_rows, videos, users):
            f.write(np.ascontiguousarray(transform._raw_numeric(chunk, ordered=True, state=state)).tobytes())
    del state

    def raw_chunks(rows: int = chunk_rows) -> Iterator[np.ndarray]:
        with open(raw_path, "rb") as f:
            while True:
                block = np.fromfile(f, dtype=np.float64, count=rows * k)
                if not len(block):
                    return
                yield block.reshape(-1, k)

    transform.set_normalization(raw_chunks)

    def build(folder: Path) -> None:
        folder = Path(folder)
        for name in SPLITS:
            lo, hi = ranges[name]
            with open(raw_path, "rb") as raws, _SplitWriter(folder / f"{name}.parquet") as out:
                for chunk in _chunks(window, lo, hi, chunk_rows, videos, users):
                    raw = None
                    if name == "train":  # the ordered raw numerics of these rows, kept from the fit
                        raw = np.fromfile(raws, dtype=np.float64, count=len(chunk) * k).reshape(-1, k)
                    out.write(encode(chunk, transform, ordered=name == "train", raw=raw))
        transform.save(folder / "transform.json")
        videos.to_parquet(folder / "catalog.parquet", index=False)

    summary = {
        "train_rows": sizes["train"],
        "valid_rows": sizes["valid"],
        "test_rows": sizes["test"],
        "positive_only": False,
        "window_start": str(window_start(ds, window_days)),
        "vocab_users": len(transform.vocabs["user"]),
        "vocab_videos": len(transform.vocabs["video"]),
    }
    return summary, build


class _SplitWriter:
    """One split's frames appended as row groups of one Parquet file (the first chunk's schema)."""

    def __init__(self, path: Path):
        self.path, self._writer = path, None

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        elif not table.schema.equals(self._writer.schema):
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._writer is not None:
            self._writer.close()


def build_feature_partition_chunked(lake, ds: date, settings, seed: int, window_days: int, chunk_rows: int):
    """The features partition built in chunks; ``None`` (with the reason logged) when it must be built
    whole (:class:`Fallback`). Work files live in a hidden temporary folder of the lake's features zone,
    removed when done (or by :func:`recsys.data.lake.clean_orphans` after a killed run)."""
    from recsys.data.lake import temp_name

    videos = lake.read_frame("clean", "videos", ds)
    users = lake.read_frame("clean", "users", ds)
    parent = Path(lake.root) / "features" / "examples"
    parent.mkdir(parents=True, exist_ok=True)
    work = parent / temp_name(f"ds={ds.isoformat()}")
    work.mkdir()
    try:
        try:
            summary, build = build_chunked(lake, ds, settings, window_days, chunk_rows, work, videos, users)
        except Fallback as why:
            log.info("features ds=%s: built whole (%s)", ds, why)
            return None, str(why)
        path = lake.replace_partition("features", "examples", ds, build)
        return {"path": str(path), **summary}, None
    finally:
        with contextlib.suppress(Exception):
            shutil.rmtree(work)

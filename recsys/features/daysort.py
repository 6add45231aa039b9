"""One day of clean interactions in (ts, event_id) order in bounded memory: an external sort by time.

The features stage (:mod:`recsys.features.chunked`) needs each day of its window in (ts, event_id) order,
and the clean partitions keep the delivery order. A day of at most ``bucket_rows`` rows is read and sorted
whole (Arrow's sort, as before); a larger day is sorted in buckets of time:

1. **Range.** A pass over the ``ts`` column alone gives the day's rows, its smallest and largest timestamp
   (and rejects a null timestamp).
2. **Histogram.** A second pass over ``ts`` counts the rows of ``BINS`` equal-width bins of timestamps
   between the two; the bin of a row is ``(ts - lo) // width``, a non-decreasing function of ``ts``, so rows
   with equal timestamps share a bin and every row of a bin comes before every row of the next bin in the
   sort order. Consecutive bins are packed greedily into buckets of at most ``bucket_rows`` rows.
3. **Route.** The day is read in record batches and each row appended to its bucket's work file (Arrow IPC,
   uncompressed: written once and read once).
4. **Sort.** Each bucket is read and sorted on its own; laid end to end in bucket order they are the day's
   order, because a bucket's timestamps are all below the next bucket's (ties on ``ts`` never straddle an
   edge, and ``event_id`` only orders rows of equal ``ts``). A bucket still above the budget (a single bin
   holding more than ``bucket_rows`` rows) is split again the same way over its bin's own range, down to
   bins of one timestamp; rows of one single timestamp are never split, so a day where more than
   ``bucket_rows`` rows share one timestamp sorts those rows together (logged).

Memory then follows ``bucket_rows`` (the table of one bucket and its sorted copy) and the batch size, not
the day; the price is the day written and read once more on local disk, and two reads of ``ts``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

ORDER = [("ts", "ascending"), ("event_id", "ascending")]
BINS = 1 << 16  # histogram bins of a range of timestamps (a day at 10M rows: about 150 rows a bin)
MAX_BUCKETS = 256  # work files open at once; more rows than this many budgets: split again per bucket

# columns (None: all) -> a context manager over the source's record batches of those columns
Source = Callable[[list[str] | None], contextlib.AbstractContextManager[Iterator[pa.RecordBatch]]]


def ts_ints(column) -> np.ndarray:
    """A timestamp column (Arrow array or chunked array) as int64 values in its own unit (sorts alike)."""
    if (
        pa.types.is_timestamp(column.type)
        or pa.types.is_date(column.type)
        or pa.types.is_duration(column.type)
    ):
        column = pc.cast(column, pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False) if isinstance(column, pa.Array) else column)


def ts_range(source: Source) -> tuple[int, int, int, int]:
    """(rows, null timestamps, smallest, largest timestamp as int64) of ``source``, from its ``ts`` alone."""
    n = nulls = 0
    lo, hi = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    with source(["ts"]) as batches:
        for batch in batches:
            col = batch.column(0)
            n += len(col)
            nulls += col.null_count
            if col.null_count:
                col = col.drop_null()
            if len(col):
                t = ts_ints(col)
                lo, hi = min(lo, int(t.min())), max(hi, int(t.max()))
    return n, nulls, lo, hi


def pack(counts: np.ndarray, budget: int) -> np.ndarray:
    """The bucket of each bin: consecutive bins packed greedily, at most ``budget`` rows a bucket unless a
    single bin holds more (it then is a bucket of its own). Empty bins join the bucket before them."""
    bucket = np.empty(len(counts), dtype=np.int64)
    current, rows = 0, 0
    for i, c in enumerate(counts.tolist()):
        if rows and c and rows + c > budget:
            current, rows = current + 1, 0
        rows += c
        bucket[i] = current
    return bucket


def sorted_runs(source: Source, n: int, lo: int, hi: int, budget: int, work: Path, depth: int = 0):
    """The ``n`` rows of ``source`` (timestamps in ``lo..hi``, none null) sorted by :data:`ORDER`, as
    consecutive Arrow tables; each at most ``budget`` rows unless one timestamp alone has more."""
    if n == 0:
        return
    if n <= budget or lo >= hi:
        if n > budget:
            log.warning("%d rows share one timestamp: sorted together, above the bucket budget %d", n, budget)
        with source(None) as batches:
            table = pa.Table.from_batches(list(batches))
        yield table.sort_by(ORDER)
        return
    width = (hi - lo) // BINS + 1
    counts = np.zeros(BINS, dtype=np.int64)
    with source(["ts"]) as batches:
        for batch in batches:
            b = (ts_ints(batch.column(0)) - lo) // width
            if len(b) and (b.min() < 0 or b.max() >= BINS):
                raise RuntimeError(f"timestamps outside their bucket's range {lo}..{hi}")
            counts += np.bincount(b, minlength=BINS)
    bucket_of_bin = pack(counts, max(budget, -(-n // MAX_BUCKETS)))
    buckets = int(bucket_of_bin[-1]) + 1
    paths = [work / f"bucket-{depth}-{i}.arrow" for i in range(buckets)]
    rows = np.bincount(bucket_of_bin, weights=counts, minlength=buckets).astype(np.int64)
    log.info("sorting %d rows in %d time buckets (level %d, budget %d rows)", n, buckets, depth, budget)
    try:
        _route(source, lo, width, bucket_of_bin, paths)
        occupied = np.flatnonzero(counts)
        for i, path in enumerate(paths):
            # the bucket's range: from its first to its last non-empty bin (one bin: BINS times narrower)
            mine = occupied[bucket_of_bin[occupied] == i]
            if not len(mine):
                continue
            first, last = int(mine[0]), int(mine[-1])
            sub_lo, sub_hi = lo + first * width, min(hi, lo + (last + 1) * width - 1)
            yield from sorted_runs(_ipc_source(path), int(rows[i]), sub_lo, sub_hi, budget, work, depth + 1)
            path.unlink(missing_ok=True)
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def _route(source: Source, lo: int, width: int, bucket_of_bin: np.ndarray, paths: list[Path]) -> None:
    """Append each row of ``source`` to its bucket's IPC file (a file for every bucket, maybe empty)."""
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    try:
        with source(None) as batches:
            schema = None
            for batch in batches:
                if schema is None:
                    schema = batch.schema
                    for i, path in enumerate(paths):
                        writers[i] = pa.ipc.new_file(str(path), schema)
                which = bucket_of_bin[(ts_ints(batch.column("ts")) - lo) // width]
                order = np.argsort(which, kind="stable")
                taken = batch.take(pa.array(order))
                bounds = np.searchsorted(which[order], np.arange(len(paths) + 1))
                for i in np.flatnonzero(np.diff(bounds)):
                    writers[int(i)].write_batch(taken.slice(bounds[i], bounds[i + 1] - bounds[i]))
    finally:
        for w in writers.values():
            w.close()


def _ipc_source(path: Path) -> Source:
    @contextlib.contextmanager
    def open_batches(columns: list[str] | None) -> Iterator[Iterator[pa.RecordBatch]]:
        with pa.OSFile(str(path)) as f:
            reader = pa.ipc.open_file(f)

            def batches() -> Iterator[pa.RecordBatch]:
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    yield batch if columns is None else batch.select(columns)

            yield batches()

    return open_batches

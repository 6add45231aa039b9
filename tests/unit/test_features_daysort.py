"""Issue 15: a day of the features window is sorted by (ts, event_id) in time buckets (an external sort,
:mod:`recsys.features.daysort`); laid end to end the buckets are Arrow's sort of the whole day, exactly,
with ties on ``ts`` across what would be a bucket edge and buckets split again where a bin overflows."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.features.daysort import ORDER, pack, sorted_runs, ts_range


def day(rng: np.random.Generator, ts: np.ndarray) -> pa.Table:
    """Rows in a shuffled (delivery) order: ``ts`` as given, unique event ids unrelated to the order."""
    n = len(ts)
    ids = [f"e{v:06d}" for v in rng.permutation(10 * n)[:n]]
    return pa.table(
        {
            "event_id": pa.array(ids, pa.large_string()),
            "ts": pa.array(ts.astype("datetime64[ns]"), pa.timestamp("ns", tz="UTC")),
            "video_id": pa.array(rng.integers(0, 50, n), pa.int64()),
            "row": pa.array(np.arange(n), pa.int64()),  # the delivery position, to see the order
        }
    )


def parquet_source(path, batch_rows: int):
    pf = pq.ParquetFile(path)

    @contextlib.contextmanager
    def source(columns):
        yield pf.iter_batches(batch_size=batch_rows, columns=columns)

    return source


def external_sort(table: pa.Table, tmp_path, budget: int, batch_rows: int = 5) -> list[pa.Table]:
    path = tmp_path / "day.parquet"
    pq.write_table(table, path, row_group_size=17)
    source = parquet_source(path, batch_rows)
    n, nulls, lo, hi = ts_range(source)
    assert (n, nulls) == (table.num_rows, 0)
    work = tmp_path / "work"
    work.mkdir()
    runs = list(sorted_runs(source, n, lo, hi, budget, work))
    assert not list(work.iterdir())  # the bucket files are removed
    return runs


def check_runs(runs: list[pa.Table], table: pa.Table, budget: int) -> None:
    whole = table.sort_by(ORDER)
    got = pa.concat_tables(runs)
    assert got.equals(whole)  # the rows in Arrow's order of the whole day, every column
    for a, b in zip(runs, runs[1:], strict=False):  # a tie on ts never straddles two runs
        assert a.column("ts")[-1].value < b.column("ts")[0].value
    for run in runs:  # a run above the budget is a single timestamp
        assert run.num_rows <= budget or len(set(run.column("ts").to_pylist())) == 1


def test_pack_fills_buckets_up_to_the_budget_and_gives_an_overflowing_bin_its_own():
    counts = np.array([2, 0, 3, 1, 9, 0, 4, 4, 0])
    assert pack(counts, 5).tolist() == [0, 0, 0, 1, 2, 2, 3, 4, 4]
    assert pack(np.zeros(4, dtype=np.int64), 5).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("budget", [1, 3, 10, 64])
def test_ties_on_ts_stay_together_and_are_ordered_by_event_id(tmp_path, caplog, budget):
    rng = np.random.default_rng(7)
    base = np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64)
    ts = base + rng.integers(0, 40, 400) * 60 * 10**9  # 40 distinct minutes: ~10 rows share each ts
    table = day(rng, ts)
    with caplog.at_level(logging.INFO, logger="recsys.features.daysort"):
        runs = external_sort(table, tmp_path, budget)
    assert "time buckets" in caplog.text
    assert len(runs) > 1 if budget < 64 else len(runs) >= 400 // 64
    check_runs(runs, table, budget)


def test_a_crowded_bin_is_split_again_and_one_timestamp_is_never_split(tmp_path, caplog):
    """Most rows within a few microseconds of each other and a few a day away: the first histogram puts
    the crowd in one bin (above the budget), split again over that bin's range; 30 rows share one ts."""
    rng = np.random.default_rng(11)
    base = np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64)
    crowd = base + 10**9 + rng.integers(0, 5_000, 270)
    same = np.full(30, base + 10**9 + 2_500)
    far = base + np.array([0, 86_399 * 10**9])
    table = day(rng, rng.permutation(np.concatenate([crowd, same, far])))
    with caplog.at_level(logging.INFO, logger="recsys.features.daysort"):
        runs = external_sort(table, tmp_path, budget=20)
    assert "level 1" in caplog.text and "share one timestamp" in caplog.text
    check_runs(runs, table, budget=20)
    assert max(r.num_rows for r in runs) >= 30


def test_a_day_within_the_budget_is_one_run(tmp_path):
    rng = np.random.default_rng(3)
    base = np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64)
    table = day(rng, base + rng.integers(0, 10**12, 50))
    runs = external_sort(table, tmp_path, budget=50)
    assert len(runs) == 1
    check_runs(runs, table, 50)


def test_null_timestamps_are_counted(tmp_path):
    table = pa.table(
        {"ts": pa.array([1, None, 3], pa.timestamp("ns", tz="UTC")), "event_id": ["a", "b", "c"]}
    )
    pq.write_table(table, tmp_path / "d.parquet")
    assert ts_range(parquet_source(tmp_path / "d.parquet", 2)) == (3, 1, 1, 3)

"""Issue 15 (bounded memory): the features stage reads, fits and writes the window in chunks; its outputs
(rows, order, x_* values, transform.json) are those of the whole-frame path, whatever the chunk size."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from tiny import TINY_SIM

from recsys.features.partition import build_feature_partition

START = date(2026, 1, 1)
DAYS = 2


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A lake with ``DAYS`` small simulated days through the pipeline's own stages (built once)."""
    from cryptography.fernet import Fernet

    from recsys import stages
    from recsys.config import load_settings

    root = tmp_path_factory.mktemp("features_chunks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", "test-pseudonym-key-0123456789")
        mp.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
        sim = {**TINY_SIM, "n_users": 20}  # a few hundred rows a day: chunks of 1 row stay quick
        settings = load_settings(data_dir=root / "data", simulator=sim)
        for i in range(DAYS):
            for st in (stages.land, stages.collect, stages.validate, stages.anonymize):
                st(START + timedelta(days=i), settings)
        yield stages.open_lake(settings), settings


def outputs(lake, ds, settings, chunk_rows: int) -> tuple[dict, dict]:
    summary = build_feature_partition(lake, ds, settings, seed=0, window_days=14, chunk_rows=chunk_rows)
    folder = lake.partition("features", "examples", ds)
    files = {
        name: pd.read_parquet(folder / f"{name}.parquet") for name in ("train", "valid", "test", "catalog")
    }
    files["transform.json"] = (folder / "transform.json").read_bytes()
    return summary, files


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    assert got["transform.json"] == want["transform.json"]
    for name in ("train", "valid", "test", "catalog"):
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True)


@pytest.mark.parametrize("coengagement", ["off", "on"])
@pytest.mark.parametrize("ds", [START, START + timedelta(days=DAYS - 1)], ids=["first-day", "history"])
def test_chunked_features_equal_the_whole_frame_path(lake, ds, coengagement):
    lake, settings = lake
    fs = settings.features.model_copy(update={"coengagement": coengagement})
    whole_summary, whole = outputs(lake, ds, fs, 0)
    assert whole_summary["chunked"] is False
    if ds == START:  # the first day is split 70/15/15 by time
        n = sum(whole_summary[f"{s}_rows"] for s in ("train", "valid", "test"))
        assert whole_summary["train_rows"] == int(n * 0.70)
    else:
        assert whole["test"]["ts"].min() >= pd.Timestamp(ds, tz="UTC") > whole["valid"]["ts"].max()
    if coengagement == "on":  # the co-engagement input is fitted and not constant
        x = np.stack(whole["train"]["x_numeric"].to_numpy())
        assert x.shape[1] == 7 and x[:, -1].std() > 0
    # one-row chunks (every carried statistic crosses a chunk boundary) on two of the four cases: slow
    for chunk_rows in (1, 7, 10**6) if (ds == START) == (coengagement == "on") else (7, 10**6):
        summary, got = outputs(lake, ds, fs, chunk_rows)
        assert summary["chunked"] is True
        assert {k: v for k, v in summary.items() if k not in ("chunked", "whole_because", "path")} == {
            k: v for k, v in whole_summary.items() if k not in ("chunked", "whole_because", "path")
        }
        assert_same(got, whole)
    # nothing left behind: no work files, no staged partitions
    assert not [p for p in (settings.data_dir / "features").rglob(".*")]


def test_a_failed_chunked_build_commits_nothing_and_leaves_no_work_files(lake, monkeypatch):
    from recsys.features import chunked

    lake, settings = lake
    ds = START + timedelta(days=DAYS - 1)
    _, before = outputs(lake, ds, settings.features, 0)
    calls = []
    original = chunked.encode

    def fail_on_third_chunk(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(*args, **kw)

    monkeypatch.setattr(chunked, "encode", fail_on_third_chunk)
    with pytest.raises(OSError, match="disk full"):
        build_feature_partition(lake, ds, settings.features, window_days=14, chunk_rows=50)
    assert len(calls) == 3
    folder = lake.partition("features", "examples", ds)
    after = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("train", "valid", "test")}
    for name, frame in after.items():  # the previous partition is untouched
        pd.testing.assert_frame_equal(frame, before[name], check_exact=True)
    assert not [p for p in (settings.data_dir / "features").rglob(".*")]


def test_a_positive_only_source_is_built_whole_with_its_sampled_negatives(lake, tmp_path):
    """The sampled negatives are drawn over a whole split: such a window takes the whole path, says so,
    and gives the whole path's outputs."""
    from recsys.data.lake import Lake

    lake, settings = lake
    copy = Lake(tmp_path / "lake")
    for i in range(DAYS):
        d = START + timedelta(days=i)
        events = lake.read_frame("clean", "interactions", d)
        copy.write_frame("clean", "interactions", d, events[events["clicked"] > 0].reset_index(drop=True))
        for dataset in ("videos", "users"):
            copy.write_frame("clean", dataset, d, lake.read_frame("clean", dataset, d))
    ds = START + timedelta(days=DAYS - 1)
    whole_summary, whole = outputs(copy, ds, settings.features, 0)
    summary, got = outputs(copy, ds, settings.features, 7)
    assert summary["positive_only"] is True and summary["chunked"] is False
    assert "positive-only" in summary["whole_because"]
    assert got["train"]["sampled"].any()
    assert_same(got, whole)


def coarse_copy(lake, tmp_path, freq: str):
    """A copy of the lake with every timestamp floored to ``freq`` (many rows share a timestamp, so the
    (ts, event_id) order rests on the event ids), the rows shuffled and the event ids permuted among them
    (neither the delivery order nor the ids follow the time order, nor each other)."""
    from recsys.data.lake import Lake

    rng = np.random.default_rng(5)
    copy = Lake(tmp_path / "lake")
    for i in range(DAYS):
        d = START + timedelta(days=i)
        events = lake.read_frame("clean", "interactions", d)
        events = events.iloc[rng.permutation(len(events))].reset_index(drop=True)
        events["event_id"] = events["event_id"].to_numpy()[rng.permutation(len(events))]
        copy.write_frame("clean", "interactions", d, events.assign(ts=events["ts"].dt.floor(freq)))
        for dataset in ("videos", "users"):
            copy.write_frame("clean", dataset, d, lake.read_frame("clean", dataset, d))
    return copy


@pytest.mark.parametrize("ds", [START, START + timedelta(days=DAYS - 1)], ids=["first-day", "history"])
def test_days_sorted_in_time_buckets_equal_the_whole_frame_path(lake, tmp_path, caplog, ds):
    """A bucket budget of a few rows: each day is sorted in many time buckets (split again where one
    bin holds too many), with ties on ts at the bucket edges and groups of equal ts above the budget;
    the outputs stay those of the whole path (a tie split across an edge would reorder rows)."""
    import logging

    lake, settings = lake
    copy = coarse_copy(lake, tmp_path, "30min")
    events = copy.read_frame("clean", "interactions", ds)
    ties = events.groupby("ts").size()
    assert (ties > 1).mean() > 0.5 and ties.max() > 5  # most timestamps are shared, some by more than 5
    assert not events["event_id"].is_monotonic_increasing and not events["ts"].is_monotonic_increasing
    fs = settings.features.model_copy(update={"sort_bucket_rows": 5})
    whole_summary, whole = outputs(copy, ds, fs, 0)
    with caplog.at_level(logging.INFO, logger="recsys.features.daysort"):
        summary, got = outputs(copy, ds, fs, 7)
    assert "time buckets (level 0" in caplog.text and "share one timestamp" in caplog.text
    assert summary["chunked"] is True
    assert summary["train_rows"] == whole_summary["train_rows"]
    assert_same(got, whole)
    assert not [p for p in (tmp_path / "lake" / "features").rglob(".*")]


@pytest.mark.parametrize("case", ["null-ts", "overlap"])
def test_a_bucketed_day_that_cannot_be_chunked_takes_the_whole_path(lake, tmp_path, case):
    """Sorted in buckets, a day with a row without a timestamp, or whose first rows are earlier than the
    day before's last, still takes the whole path (and says why), with the whole path's outputs."""
    lake, settings = lake
    copy = coarse_copy(lake, tmp_path, "30min")
    ds = START + timedelta(days=DAYS - 1)
    events = copy.read_frame("clean", "interactions", ds)
    if case == "null-ts":
        events.loc[len(events) // 2, "ts"] = pd.NaT
    else:  # a row of ds stamped before the previous day's last row
        events.loc[0, "ts"] = pd.Timestamp(START, tz="UTC") + pd.Timedelta(hours=1)
    copy.write_frame("clean", "interactions", ds, events)
    fs = settings.features.model_copy(update={"sort_bucket_rows": 5})
    whole_summary, whole = outputs(copy, ds, fs, 0)
    summary, got = outputs(copy, ds, fs, 7)
    assert summary["chunked"] is False
    assert ("without ts" if case == "null-ts" else "overlaps") in summary["whole_because"]
    assert_same(got, whole)


def _serving_transform_whole(folder):
    """The serving transform as the train stage made it before it read in chunks: both splits' columns
    read whole, concatenated, refreshed as one frame."""
    import pyarrow.parquet as pq

    from recsys.features.spec import AFFINITY
    from recsys.features.transform import Transform

    wanted = {"user_key", "video_id", "click", "ts", "sampled", *AFFINITY.values()}
    parts = []
    for split in ("train", "valid"):
        path = folder / f"{split}.parquet"
        have = set(pq.ParquetFile(path).schema_arrow.names)
        parts.append(pd.read_parquet(path, columns=sorted(wanted & have)))
    return Transform.load(folder / "transform.json").refreshed(pd.concat(parts, ignore_index=True))


@pytest.mark.parametrize("coengagement", ["off", "on"])
def test_the_serving_transform_read_in_chunks_is_the_whole_reads_to_the_byte(lake, tmp_path, coengagement):
    """The train stage's serving transform (the users' evidence refreshed with the train and validation
    rows) read 1, 7 or 10^6 rows at a time saves the JSON of the whole read."""
    import shutil

    import pyarrow.parquet as pq

    from recsys.features.partition import serving_transform
    from recsys.features.transform import Transform

    lake, settings = lake
    ds = START + timedelta(days=DAYS - 1)
    fs = settings.features.model_copy(update={"coengagement": coengagement})
    build_feature_partition(lake, ds, fs, seed=0, window_days=14, chunk_rows=0)
    folder = tmp_path / "features"
    shutil.copytree(lake.partition("features", "examples", ds), folder)
    for split in ("train", "valid"):  # several row groups: chunks never cross them
        path = folder / f"{split}.parquet"
        pq.write_table(pq.read_table(path), path, row_group_size=50)
    want = tmp_path / "whole.json"
    _serving_transform_whole(folder).save(want)
    fitted = Transform.load(folder / "transform.json")
    refreshed = Transform.load(want)
    # the refresh is not a no-op: the validation rows add evidence the fitted transform lacks
    assert refreshed.affinity and refreshed.affinity != fitted.affinity
    assert (refreshed.coengagement != fitted.coengagement) == (coengagement == "on")
    for chunk_rows in (0, 1, 7, 10**6):
        got = tmp_path / f"chunks-{chunk_rows}.json"
        serving_transform(folder, chunk_rows=chunk_rows).save(got)
        assert got.read_bytes() == want.read_bytes(), chunk_rows


def test_fractional_labels_are_refreshed_from_the_rows_as_one_frame(lake, tmp_path):
    """Click labels that are not whole numbers (their sums would depend on the chunking): the refresh reads
    the chunks again as one frame and gives the whole read's JSON; whole-number labels are read once."""
    import shutil

    from recsys.features.transform import Transform

    lake, settings = lake
    ds = START + timedelta(days=DAYS - 1)
    build_feature_partition(lake, ds, settings.features, seed=0, window_days=14, chunk_rows=0)
    folder = tmp_path / "features"
    shutil.copytree(lake.partition("features", "examples", ds), folder)
    rows = pd.concat(
        [pd.read_parquet(folder / f"{s}.parquet") for s in ("train", "valid")], ignore_index=True
    )
    fitted = Transform.load(folder / "transform.json")
    fractional = rows.assign(click=rows["click"] * np.random.default_rng(0).uniform(0.1, 0.9, len(rows)))
    for frame, reads in ((rows, 1), (fractional, 2)):
        calls = []

        def chunks(frame=frame, calls=calls):
            calls.append(1)
            return (frame.iloc[i : i + 7] for i in range(0, len(frame), 7))

        want, got = tmp_path / "whole.json", tmp_path / "chunks.json"
        fitted.refreshed(frame).save(want)
        fitted.refreshed(chunks).save(got)
        assert got.read_bytes() == want.read_bytes()
        assert len(calls) == reads

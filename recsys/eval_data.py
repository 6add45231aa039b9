"""What the evaluate stage reads of a features partition, in bounded memory (issue 15).

At 10M interactions a day the test split is 1.5M rows and the training window 8.5M. Read whole as example
frames, scored whole by the ranker (its transform's inputs and the model's tensors for every row at once)
and kept whole for the baselines and the catalog ranking, they took the stage to 18 GB. Here:

* :func:`read_test` reads the test rows' narrow columns (labels, keys, context): a few values per row;
* :func:`scored_in_chunks` feeds the example rows to one scorer ``rows`` at a time (record batches re-cut
  at exact chunk boundaries) and keeps only its per-row predictions and scores;
* :class:`HistorySummary` is one pass over train + valid in record batches that keeps what the baselines
  (:mod:`recsys.baselines`, :mod:`recsys.catalog_baselines`) and the catalog ranking
  (:mod:`recsys.catalog_eval`) read of the training window: the engaged rows (about a tenth of the
  impressions), per-video click sums and label counts over all rows, the latest time, the category keys,
  every video id, and the rows of the few users whose attributes the catalog ranking needs.

The figures computed from these equal those of the whole frames: sums of 0/1 labels are exact whatever
the chunking, and every per-row computation sees the same row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys import tasks as task_spec

# the test rows' columns every evaluation figure but the scores reads (the scorers get the example rows)
TEST_COLUMNS = ("user_key", "video_id", "ts", "position", "device", "region", "age_band", "activity")
HISTORY_COLUMNS = ("user_key", "video_id", "category", "ts", "click", "sampled")
ATTRIBUTE_COLUMNS = ("ts", "user_key", "device", "region", "age_band", "activity")


def _columns(path: Path) -> list[str]:
    return pq.ParquetFile(path).schema_arrow.names


def read_test(path: Path) -> pd.DataFrame:
    """The test split's narrow columns: keys, time, context, ``sampled`` and every task's label."""
    have = _columns(path)
    wanted = [*TEST_COLUMNS, "sampled", *task_spec.names()]
    test = pd.read_parquet(path, columns=[c for c in have if c in wanted])
    release_arrow_memory()
    return test


def release_arrow_memory() -> None:
    """Hand the Arrow pool's freed pages back to the system: mimalloc keeps the decoding buffers of a
    read (at 10M, ~110 MiB after the test split's), which numpy and pandas allocations cannot reuse."""
    pa.default_memory_pool().release_unused()


def example_columns(path: Path) -> list[str]:
    """The split's example columns, without the pre-encoded ``x_*`` model inputs (training's; scoring
    applies the ranker's own transform to the rows)."""
    return [n for n in _columns(path) if not n.startswith("x_")]


def chunks(path: Path, rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The rows of the parquet file ``path`` as frames of exactly ``rows`` rows (the last one shorter),
    in file order: record batches end at row-group boundaries, so they are re-cut here."""
    f = pq.ParquetFile(path)
    held: list[pa.RecordBatch] = []
    n_held = 0
    for batch in f.iter_batches(batch_size=rows, columns=columns):
        held.append(batch)
        n_held += batch.num_rows
        while n_held >= rows:
            table = pa.Table.from_batches(held)
            yield table.slice(0, rows).to_pandas()
            rest = table.slice(rows)
            held, n_held = rest.to_batches(), rest.num_rows
    if n_held:
        yield pa.Table.from_batches(held).to_pandas()
    elif f.metadata.num_rows == 0:
        yield f.schema_arrow.empty_table().select(columns or f.schema_arrow.names).to_pandas()


def scored_in_chunks(scored, path: Path, rows: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(per-task predictions, ranking score) of every row of the split ``path``, ``rows`` example rows at
    a time; ``scored(frame) -> (predictions, score)`` scores one chunk (row by row: any chunking gives the
    same arrays)."""
    n = pq.ParquetFile(path).metadata.num_rows
    preds: dict[str, np.ndarray] = {}
    score = np.zeros(n)
    start = 0
    for frame in chunks(path, rows, example_columns(path)):
        p, s = scored(frame)
        stop = start + len(frame)
        for name, values in p.items():
            if name not in preds:
                preds[name] = np.zeros(n, dtype=np.asarray(values).dtype)
            preds[name][start:stop] = values
        score[start:stop] = s
        start = stop
    return preds, score


@dataclass
class HistorySummary:
    """What the evaluation reads of the training window (train + valid examples); see the module doc."""

    engaged: pd.DataFrame  # rows with click > 0 (sampled ones included), in history order
    video_clicks: pd.Series  # video key (str) -> click sum over all rows
    video_labels: pd.Series  # video key (str) -> rows with a click label
    video_ids: np.ndarray  # distinct video ids (int64, sorted)
    clicks: float  # click sum over all rows
    labelled: int  # rows with a click label
    rows: int
    ts_max: pd.Timestamp  # latest row time (NaT without rows)
    categories: int  # distinct category keys
    attributes: pd.DataFrame  # ts and attributes: every row of the wanted users (of all, wanted None)

    @classmethod
    def of(cls, history: pd.DataFrame, wanted: Iterable[str] | None = None) -> HistorySummary:
        """The summary of a whole history frame."""
        return cls.build([history], wanted)

    @classmethod
    def read(
        cls, paths: Iterable[Path], wanted: Iterable[str] | None = None, rows: int = 1 << 17
    ) -> HistorySummary:
        """The summary of the splits ``paths`` (in order), read ``rows`` rows at a time."""

        def frames():
            for path in paths:
                have = _columns(path)
                cols = [c for c in dict.fromkeys((*HISTORY_COLUMNS, *ATTRIBUTE_COLUMNS)) if c in have]
                yield from chunks(path, rows, cols)

        summary = cls.build(frames(), wanted)
        release_arrow_memory()
        return summary

    @classmethod
    def build(cls, frames: Iterable[pd.DataFrame], wanted: Iterable[str] | None = None) -> HistorySummary:
        wanted = None if wanted is None else set(wanted)
        engaged, sums, labels, vids, cats, attrs = [], [], [], [], [], []
        clicks, labelled, rows, ts_max = 0.0, 0, 0, pd.NaT
        for h in frames:
            click = h["click"].astype(float)
            keys = h["video_id"].astype(str).to_numpy()
            g = click.groupby(keys).agg(["sum", "count"])
            sums.append(g["sum"])
            labels.append(g["count"])
            vids.append(h["video_id"].dropna().astype("int64").unique())
            cats.append(pd.unique(h["category"].astype(str).to_numpy()) if "category" in h else [])
            clicks += float(click.sum())
            labelled += int(click.count())
            rows += len(h)
            if len(h) and "ts" in h:
                top = pd.to_datetime(h["ts"], utc=True).max()
                ts_max = top if pd.isna(ts_max) or (pd.notna(top) and top > ts_max) else ts_max
            engaged.append(h.loc[(click > 0).to_numpy(), [c for c in HISTORY_COLUMNS if c in h]])
            if "user_key" in h:
                mine = h if wanted is None else h[h["user_key"].astype(str).isin(wanted).to_numpy()]
                attrs.append(mine[[c for c in ATTRIBUTE_COLUMNS if c in h]])
        category_keys = pd.Series(np.concatenate([np.asarray(c, dtype=object) for c in cats] or [[]]))
        return cls(
            engaged=pd.concat(engaged, ignore_index=True) if engaged else pd.DataFrame(),
            video_clicks=_summed(sums),
            video_labels=_summed(labels),
            video_ids=np.unique(np.concatenate(vids)) if vids else np.zeros(0, dtype=np.int64),
            clicks=clicks,
            labelled=labelled,
            rows=rows,
            ts_max=ts_max,
            categories=int(category_keys.nunique()),
            attributes=pd.concat(attrs, ignore_index=True) if attrs else pd.DataFrame(),
        )


def _summed(parts: list[pd.Series]) -> pd.Series:
    """Per-key sums of per-chunk sums (of 0/1 labels and counts: exact in any order), sorted by key."""
    if not parts:
        return pd.Series(dtype=float)
    return pd.concat(parts).groupby(level=0).sum()

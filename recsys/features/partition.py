"""The features stage: a day's examples over the trailing window, split by time, the transform fitted.

:func:`build_feature_partition` is what the ``features`` task runs; :func:`split_and_fit` and
:func:`write_split` are its two halves, shared with :func:`recsys.train.train_model` when it is given a
frame of examples instead of a features folder (the seed's ``train_model(features, labels)``).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from recsys.config import FeatureSettings
from recsys.features.build import build_examples, encode, split_by_time, window_start
from recsys.features.chunked import DEFAULT_CHUNK_ROWS
from recsys.features.coengagement import use_coengagement
from recsys.features.transform import Transform

SPLITS = ("train", "valid", "test")
# Sources that are a recorded history (not a live feed): the whole history is the default training window.
HISTORY_SOURCES = ("movielens", "kuairand", "postgres")


def training_window_days(settings, ds: date, lake=None) -> int:
    """The features window: ``features.window_days`` when set explicitly (or for a live feed); for a
    history source, by default every day the lake holds up to ``ds``."""
    fs = settings.features
    if settings.source not in HISTORY_SOURCES or "window_days" in fs.model_fields_set:
        return fs.window_days
    if lake is None:
        from recsys.data.lake import Lake

        lake = Lake(settings.data_dir)
    days = [d for d in lake.list_ds("clean", "interactions") if d <= ds]
    return max(fs.window_days, (ds - days[0]).days + 1) if days else fs.window_days


def split_and_fit(
    examples: pd.DataFrame,
    ds: date,
    settings: FeatureSettings,
    videos: pd.DataFrame | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Transform]:
    """(train, valid, test, transform): the time split of ``examples`` (test = ``ds``) and the transform
    fitted on the train split alone. ValueError when a split would be empty.

    A positive-only log (no non-engaged impressions, :func:`recsys.features.negatives.is_positive_only`)
    with the day's ``videos`` given gets ``negatives_per_positive`` sampled negatives per positive in each
    split, flagged ``sampled``; the transform then records the sampling power, which serving adds back.
    """
    from recsys.features.negatives import POWER, is_positive_only, sample_negatives

    train, valid, test = split_by_time(examples, ds, settings.valid_fraction)
    positive_only = videos is not None and is_positive_only(examples)
    if positive_only:
        train, valid, test = (
            sample_negatives(part, videos, settings.negatives_per_positive, seed + i)
            for i, part in enumerate((train, valid, test))
        )
    if train.empty or valid.empty or test.empty:
        raise ValueError(
            f"not enough data to split ds={ds}: train={len(train)} valid={len(valid)} test={len(test)}"
        )
    transform = Transform.fit(
        train,
        title_len=settings.title_max_tokens,
        title_vocab_size=settings.title_vocab_size,
        min_count=settings.min_count,
        affinity_strength=settings.affinity_strength,
        coengagement=use_coengagement(settings.coengagement, positive_only),
    )
    if (
        positive_only
    ):  # serving adds the sampling distribution back (recsys.features.negatives.ranking_scores)
        transform.sampled_negatives_power = POWER
    return train, valid, test, transform


def write_split(
    folder: Path,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    transform: Transform,
    videos: pd.DataFrame | None = None,
) -> Path:
    """``folder/{train,valid,test}.parquet`` (examples + encoded ``x_*`` inputs) and ``transform.json``:
    the layout :func:`recsys.train.train_model` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in zip(SPLITS, (train, valid, test), strict=True):
        encode(part, transform, ordered=name == "train").to_parquet(folder / f"{name}.parquet", index=False)
    transform.save(folder / "transform.json")
    if videos is not None:  # the day's catalog, for the catalog ranking evaluation
        videos.to_parquet(folder / "catalog.parquet", index=False)
    return folder


def serving_transform(
    features_dir: Path, transform: Transform | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Transform:
    """The transform a model trained on ``features_dir`` serves with: fitted on the train split (what
    the model learnt from), its serving state refreshed with the train and validation rows
    (:meth:`Transform.refreshed`), so lists served after the validation days see them.

    The rows are read ``chunk_rows`` at a time (0: both splits as one frame), the columns the refresh
    needs only; the result is the same transform whatever the chunking (at 10M interactions a day the
    whole read was the train stage's peak: 8.5M rows of user keys and their groupings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.features.spec import AFFINITY

    features_dir = Path(features_dir)
    transform = transform or Transform.load(features_dir / "transform.json")
    wanted = {"user_key", "video_id", "click", "ts", "sampled", *AFFINITY.values()}

    def chunks():
        for split in ("train", "valid"):
            pf = pq.ParquetFile(features_dir / f"{split}.parquet")
            columns = [c for c in pf.schema_arrow.names if c in wanted]
            if chunk_rows <= 0:
                yield pf.read(columns=columns).to_pandas()
                continue
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
                yield batch.to_pandas()

    if chunk_rows <= 0:
        out = transform.refreshed(pd.concat(list(chunks()), ignore_index=True))
    else:
        out = transform.refreshed(chunks)
    # Arrow's allocator keeps what the frames freed for its next use; the train stage that calls this next
    # allocates through TensorFlow, so hand it back
    pa.default_memory_pool().release_unused()
    return out


def build_feature_partition(
    lake,
    ds: date,
    settings: FeatureSettings,
    seed: int = 0,
    window_days: int | None = None,
    chunk_rows: int | None = None,
) -> dict:
    """Build ``features/ds=D/{train,valid,test}.parquet``, ``catalog.parquet`` (the day's videos, for the
    catalog ranking evaluation) and ``transform.json`` from the clean zone, over ``window_days`` (default
    ``settings.window_days``).

    ``chunk_rows`` (default ``settings.chunk_rows``; 0: whole): the window is read, fitted and written that
    many rows at a time (:mod:`recsys.features.chunked`), with the outputs of the whole-frame path; the
    cases that need the whole window in memory (a positive-only source's sampled negatives, among others)
    take the whole path, and the summary says which (``chunked``, ``whole_because``)."""
    window_days = window_days or settings.window_days
    chunk_rows = settings.chunk_rows if chunk_rows is None else chunk_rows
    why = "chunk_rows = 0"
    if chunk_rows > 0:
        from recsys.features.chunked import build_feature_partition_chunked

        summary, why = build_feature_partition_chunked(lake, ds, settings, seed, window_days, chunk_rows)
        if summary is not None:
            return {**summary, "chunked": True}
    events = lake.read_window("clean", "interactions", window_start(ds, window_days), ds)
    videos = lake.read_frame("clean", "videos", ds)
    users = lake.read_frame("clean", "users", ds)
    examples = build_examples(events, videos, users)
    train, valid, test, transform = split_and_fit(examples, ds, settings, videos=videos, seed=seed)
    path = lake.replace_partition(
        "features", "examples", ds, lambda tmp: write_split(tmp, train, valid, test, transform, videos)
    )
    return {
        "path": str(path),
        "train_rows": len(train),
        "valid_rows": len(valid),
        "test_rows": len(test),
        "positive_only": bool(transform.sampled_negatives_power),
        "window_start": str(window_start(ds, window_days)),
        "vocab_users": len(transform.vocabs["user"]),
        "vocab_videos": len(transform.vocabs["video"]),
        "chunked": False,
        "whole_because": why,
    }


def features_dir_from_frame(examples: pd.DataFrame, labels, settings, root: Path) -> Path:
    """Write examples given as a frame (the seed's ``train_model(features, labels)``) as a features folder
    under ``root``: the same split and transform as the features stage, test = the latest day.

    ``labels``: None (use the label columns ``click``, ``watch``, ``like``, ``share`` of ``examples``), a
    frame or mapping with some of those columns, or a Series named after one; aligned with the rows.
    """
    import hashlib

    from recsys import tasks

    LABELS = tasks.names()  # noqa: N806
    examples = examples.reset_index(drop=True)
    if labels is not None:
        given = labels.to_frame() if isinstance(labels, pd.Series) else pd.DataFrame(labels)
        unknown = sorted(set(given.columns) - set(LABELS))
        if unknown or len(given) != len(examples):
            raise ValueError(
                f"labels must be {len(examples)} rows with columns among {list(LABELS)}; "
                f"got {len(given)} rows, unknown columns {unknown}"
            )
        examples = examples.assign(**{c: given[c].to_numpy() for c in given.columns})
    missing = [c for c in LABELS if c not in examples.columns]
    if missing:
        raise ValueError(f"no labels for {missing}: pass labels= or use feature_engineering's frame")
    ds = pd.to_datetime(examples["ts"], utc=True).max().date()
    train, valid, test, transform = split_and_fit(examples, ds, settings.features)
    digest = hashlib.sha256(pd.util.hash_pandas_object(examples, index=False).to_numpy().tobytes())
    return write_split(Path(root) / f"ds={ds}-{digest.hexdigest()[:12]}", train, valid, test, transform)

"""Feature engineering: examples, labels, the time split and the fitted transform.

The seed's names are kept as the public entry points: :func:`feature_engineering` builds a day's feature
partition; :func:`create_categorical_embeddings`, :func:`create_text_embeddings` and
:func:`scale_numerical_features` produce the inputs of the model's embedding layers and normalizers.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from recsys.config import FeatureSettings
from recsys.features.build import build_examples, encode, split_by_time, window_start
from recsys.features.negatives import POWER, is_positive_only, sample_negatives
from recsys.features.spec import CATEGORICAL, NUMERIC, FeatureSpec
from recsys.features.transform import Transform

__all__ = [
    "CATEGORICAL",
    "NUMERIC",
    "FeatureSpec",
    "Transform",
    "build_examples",
    "create_categorical_embeddings",
    "create_text_embeddings",
    "feature_engineering",
    "scale_numerical_features",
    "split_by_time",
]


def create_categorical_embeddings(rows: pd.DataFrame, transform: Transform) -> dict[str, np.ndarray]:
    """Vocabulary indices (0 = out of vocabulary) that feed the model's categorical embedding tables."""
    x = transform.apply(rows)
    return {k: x[k] for k in CATEGORICAL}


def create_text_embeddings(rows: pd.DataFrame, transform: Transform) -> np.ndarray:
    """Title token ids [rows, title_len] that feed the model's pooled text embedding."""
    return transform.apply(rows)["title"]


def scale_numerical_features(rows: pd.DataFrame, transform: Transform) -> np.ndarray:
    """Numeric features normalized with the training window's statistics [rows, len(transform.numeric)]."""
    return transform.apply(rows)["numeric"]


def feature_engineering(
    lake, ds: date, settings: FeatureSettings, seed: int = 0, window_days: int | None = None
) -> dict:
    """Build ``features/ds=D/{train,valid,test}.parquet``, ``catalog.parquet`` (the day's videos, for the
    catalog ranking evaluation) and ``transform.json`` from the clean zone."""
    window_days = window_days or settings.window_days
    events = lake.read_window("clean", "interactions", window_start(ds, window_days), ds)
    videos = lake.read_frame("clean", "videos", ds)
    users = lake.read_frame("clean", "users", ds)
    examples = build_examples(events, videos, users)
    train, valid, test = split_by_time(examples, ds, settings.valid_fraction)
    positive_only = is_positive_only(examples)
    if positive_only:  # no non-engaged impressions: K sampled negatives per positive, flagged (issue 13)
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
    )
    if (
        positive_only
    ):  # serving adds the sampling distribution back (recsys.features.negatives.ranking_scores)
        transform.sampled_negatives_power = POWER

    def build(tmp):
        for name, part in (("train", train), ("valid", valid), ("test", test)):
            encode(part, transform, ordered=name == "train").to_parquet(tmp / f"{name}.parquet", index=False)
        transform.save(tmp / "transform.json")
        videos.to_parquet(tmp / "catalog.parquet", index=False)

    path = lake.replace_partition("features", "examples", ds, build)
    return {
        "path": str(path),
        "train_rows": len(train),
        "valid_rows": len(valid),
        "test_rows": len(test),
        "positive_only": positive_only,
        "window_start": str(window_start(ds, window_days)),
        "vocab_users": len(transform.vocabs["user"]),
        "vocab_videos": len(transform.vocabs["video"]),
    }

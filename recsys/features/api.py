"""The seed's feature functions, over the pipeline's own code and the champion's fitted transform.

:func:`feature_engineering` joins and labels frames exactly as the features stage does
(:func:`recsys.features.build.build_examples`). The embedding and scaling functions apply what the
champion learned: its fitted transform (vocabularies, title tokens, normalization statistics of its
training window) and its trained embedding tables, so their output is what the served model sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from recsys.features.spec import CATEGORICAL
from recsys.features.transform import SOURCE_COLUMN

# the seed's column names -> the fitted transform's input names
_CATEGORICAL_ALIASES = {col: name for name, col in SOURCE_COLUMN.items()}
WATCH_TIME = "watch_time"


def _ranker(ranker, settings):
    if ranker is not None:
        return ranker
    from recsys.defaults import champion_ranker

    return champion_ranker(settings)


def feature_engineering(
    interactions: pd.DataFrame | None = None,
    metadata: pd.DataFrame | None = None,
    context: pd.DataFrame | None = None,
    *,
    ds: str | date | None = None,
    settings=None,
) -> pd.DataFrame:
    """Training examples: clean interactions joined with video metadata and user attributes, labelled.

    The features stage's join (:func:`recsys.features.build.build_examples`) plus ``watch_time``.

    Args:
        interactions, metadata, context: the frames of :func:`recsys.data.sources.collect_user_interactions`,
            ``collect_content_metadata`` and ``collect_contextual_info`` (each defaults to that call).
        ds: the day read for a frame that is not given (default: the latest day of the clean zone).

    Returns:
        A DataFrame, one row per impression, in time order: ``event_id``, ``user_key``, ``video_id``,
        ``author_id``, ``category``, ``title``, ``device``, ... , the task labels ``click``, ``watch``
        (log1p seconds, on clicks), ``like``, ``share`` (NaN when unknown), and ``watch_time`` (seconds
        watched, 0 without a click).
    """
    from recsys.data import sources
    from recsys.features.build import build_examples

    interactions = (
        interactions if interactions is not None else sources.collect_user_interactions(ds, settings=settings)
    )
    metadata = metadata if metadata is not None else sources.collect_content_metadata(ds, settings=settings)
    context = context if context is not None else sources.collect_contextual_info(ds, settings=settings)
    examples = build_examples(interactions, metadata, context)
    seconds = dict(zip(interactions["event_id"], pd.to_numeric(interactions["watch_seconds"]), strict=True))
    examples[WATCH_TIME] = examples["event_id"].map(seconds).fillna(0.0).astype(float)
    return examples


def create_text_embeddings(titles, *, ranker=None, settings=None) -> np.ndarray:
    """Title embeddings: each title tokenized with the champion's title vocabulary and pooled (masked mean)
    through its trained title embedding table, as the ranker does inside.

    Args:
        titles: a sequence (e.g. ``features['title']``) of titles; None or unknown words are allowed.
        ranker: default the champion (:func:`recsys.defaults.champion_ranker`).

    Returns:
        float32 array ``[len(titles), embedding_dim]`` (``settings.model.embedding_dim``, 16).
    """
    from keras import ops

    r = _ranker(ranker, settings)
    token_ids = r.transform._titles(pd.Series(list(titles), dtype=object))
    return np.asarray(ops.convert_to_numpy(r.model.features.embed_title(token_ids)), dtype=np.float32)


def create_categorical_embeddings(
    rows: pd.DataFrame, columns: Sequence[str] | None = None, *, ranker=None, settings=None
) -> dict[str, np.ndarray]:
    """Learned embeddings of categorical features: the champion's vocabulary index (0 = unknown) looked up
    in its trained embedding table for that feature.

    Args:
        rows: example rows (e.g. :func:`feature_engineering`'s frame).
        columns: feature names (``category``, ``device``, ``user``, ``video``, ``author``, ``hour``, ...)
            or their example columns (``user_key``, ``video_id``, ``author_id``); default all of them.
        ranker: default the champion.

    Returns:
        ``{column: float32 array [len(rows), embedding_dim]}`` for each requested column.
    """
    from keras import ops

    r = _ranker(ranker, settings)
    names = {c: _CATEGORICAL_ALIASES.get(c, c) for c in (columns or CATEGORICAL)}
    unknown = sorted(c for c, n in names.items() if n not in CATEGORICAL)
    if unknown:
        raise ValueError(f"no categorical feature {unknown}; known: {list(CATEGORICAL)}")
    x = r.transform.apply(rows)
    return {
        c: np.asarray(ops.convert_to_numpy(r.model.features.embed_categorical(n, x[n])), dtype=np.float32)
        for c, n in names.items()
    }


def scale_numerical_features(
    rows: pd.DataFrame, columns: Sequence[str] | None = None, *, ranker=None, settings=None
) -> np.ndarray:
    """Numeric features scaled as the model sees them.

    The transform's numeric inputs (``log_duration``, ``upload_age_days``, ``video_popularity``,
    ``user_activity``, ``user_category_affinity``, ``user_author_affinity``) are standardized with the
    statistics of the champion's training window (never of ``rows``: no leakage). ``watch_time`` (seconds)
    is put on the scale the model is trained on for it, log1p(seconds) (the ``watch`` task's target).

    Args:
        rows: example rows (e.g. :func:`feature_engineering`'s frame).
        columns: default the transform's numeric inputs.
        ranker: default the champion.

    Returns:
        float32 array ``[len(rows), len(columns)]``, columns in the order asked.
    """
    r = _ranker(ranker, settings)
    numeric = list(r.transform.numeric)
    columns = list(columns or numeric)
    unknown = [c for c in columns if c not in numeric and c != WATCH_TIME]
    if unknown:
        raise ValueError(f"cannot scale {unknown}: known numeric features are {numeric + [WATCH_TIME]}")
    scaled = r.transform.apply(rows)["numeric"] if set(columns) - {WATCH_TIME} else None
    out = [
        np.log1p(pd.to_numeric(rows[c], errors="coerce").fillna(0).clip(lower=0).to_numpy(float))
        if c == WATCH_TIME
        else scaled[:, numeric.index(c)]
        for c in columns
    ]
    return np.stack(out, axis=1).astype(np.float32) if out else np.zeros((len(rows), 0), np.float32)

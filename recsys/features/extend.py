"""Growing a fitted transform for incremental training, without reindexing what the champion learnt.

:func:`extend_transform` takes the champion's transform and the current training split and returns the
transform an incremental (warm-started) training encodes with:

- **vocabularies grow, nothing is reindexed**: every id the champion knows keeps its index; the ids that
  first appear in the new rows get indices after the champion's embedding tables (``sizes``: the rows
  of the champion's tables, which an erasure may have left larger than its vocabulary), in the fitting
  order (most frequent first, then by key), keeping ``min_count``. The title vocabulary grows the same
  way, up to ``title_vocab_size`` words.
- **normalization statistics merge**: the champion's mean and variance with those of the new rows'
  inputs, weighted by their row counts (``Transform.numeric_count``; for a transform saved before it, the
  rows its ``user_impressions`` counted).
- **evidence is refitted**, as :meth:`Transform.fit` does on a training split: the count inputs
  (``video_popularity``, ``user_activity``) and, as :meth:`Transform.refreshed` does, the users' affinity
  tables and co-engagement histories, from the whole current training split (the same window length as
  the champion's, so the same scale), so that the new videos have a popularity and the new users their
  affinities.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pandas as pd

from recsys.features.keys import _key, tokenize
from recsys.features.transform import SOURCE_COLUMN, Transform


class IncompatibleTransform(ValueError):
    """The champion's transform cannot be extended to the current features (e.g. another feature spec)."""


def check_compatible(champion: Transform, current: Transform) -> None:
    """Raise :class:`IncompatibleTransform` unless ``champion`` encodes the same inputs as ``current``
    (the transform the features stage fitted today): numeric inputs, title length, categorical inputs,
    negative sampling."""
    if list(champion.numeric) != list(current.numeric):
        raise IncompatibleTransform(
            f"numeric inputs changed: champion {list(champion.numeric)}, features {list(current.numeric)}"
        )
    if champion.title_len != current.title_len:
        raise IncompatibleTransform(f"title length changed: {champion.title_len} -> {current.title_len}")
    if set(champion.vocabs) != set(current.vocabs):
        raise IncompatibleTransform(
            f"categorical inputs changed: {sorted(champion.vocabs)} -> {sorted(current.vocabs)}"
        )
    if champion.sampled_negatives_power != current.sampled_negatives_power:
        raise IncompatibleTransform(
            "negative sampling changed: power "
            f"{champion.sampled_negatives_power} -> {current.sampled_negatives_power}"
        )


def grown_vocab(vocab: dict[str, int], values: pd.Series, size: int, min_count: int = 1) -> dict[str, int]:
    """``vocab`` plus the keys of ``values`` it lacks, at indices ``size``, ``size + 1``, ...; every key of
    ``vocab`` keeps its index. ``size`` must be above every index of ``vocab`` (a table's row count)."""
    if vocab and size <= max(vocab.values()):
        raise IncompatibleTransform(
            f"table of {size} rows for a vocabulary indexed up to {max(vocab.values())}"
        )
    counts = Counter(_key(v) for v in values)
    counts.pop("", None)
    new = [k for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
    out = dict(vocab)
    for k in new:
        if k not in out:
            out[k] = size
            size += 1
    return out


def merged_stats(
    mean: dict[str, float], std: dict[str, float], count: float, raw: np.ndarray, names: list[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Count-weighted merge of (``mean``, ``std``) over ``count`` rows with the columns of ``raw``."""
    n_new = len(raw)
    total = count + n_new
    if n_new == 0 or total == 0:
        return dict(mean), dict(std)
    out_mean, out_std = {}, {}
    for i, name in enumerate(names):
        m_old, v_old = mean[name], std[name] ** 2
        m_new, v_new = float(np.mean(raw[:, i])), float(np.var(raw[:, i]))
        m = (count * m_old + n_new * m_new) / total
        var = (count * (v_old + (m_old - m) ** 2) + n_new * (v_new + (m_new - m) ** 2)) / total
        out_mean[name], out_std[name] = float(m), float(np.sqrt(max(var, 0.0)) or 1.0)
    return out_mean, out_std


def stats_count(t: Transform) -> float:
    """Rows ``t``'s normalization was computed over (estimated for a transform saved before it was kept)."""
    if t.numeric_count > 0:
        return float(t.numeric_count)
    return float(np.expm1(np.fromiter(t.user_impressions.values(), float)).sum())


def extend_transform(
    champion: Transform,
    train: pd.DataFrame,
    new: np.ndarray,
    sizes: dict[str, int],
    title_size: int,
    *,
    min_count: int = 1,
    title_vocab_size: int = 2000,
) -> Transform:
    """The champion's transform grown with the ids of ``train[new]`` (the new rows, a boolean mask over
    the current training split ``train``, in time order) and with its evidence and statistics updated
    (module docstring). ``sizes``: each categorical input's embedding rows in the champion's model;
    ``title_size``: the rows of its title embedding."""
    rows = train[new]
    vocabs = {
        name: grown_vocab(champion.vocabs[name], rows[col], sizes[name], min_count)
        for name, col in SOURCE_COLUMN.items()
    }
    title_vocab = dict(champion.title_vocab)
    if title_vocab and title_size <= max(title_vocab.values()):
        raise IncompatibleTransform("title table smaller than the title vocabulary")
    words = Counter(w for title in rows["title"] for w in tokenize(title) if w not in title_vocab)
    room = max(0, title_vocab_size - len(title_vocab))
    for i, (w, _) in enumerate(sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:room]):
        title_vocab[w] = title_size + i
    video_clicks = train.groupby(train["video_id"].astype(str))["click"].sum()
    user_imps = train.groupby(train["user_key"].astype(str)).size()
    t = dataclasses.replace(
        champion,
        vocabs=vocabs,
        title_vocab=title_vocab,
        video_clicks={k: float(np.log1p(v)) for k, v in video_clicks.items()},
        user_impressions={k: float(np.log1p(v)) for k, v in user_imps.items()},
    ).refreshed(train)
    # the new rows' inputs as training will see them: ordered statistics over the whole training split
    raw = t._raw_numeric(train, ordered=True)[np.asarray(new)]
    count = stats_count(champion)
    t.numeric_mean, t.numeric_std = merged_stats(
        champion.numeric_mean, champion.numeric_std, count, raw, list(t.numeric)
    )
    t.numeric_count = count + len(raw)
    return t

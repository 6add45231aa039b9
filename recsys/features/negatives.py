"""Sampled negatives for positive-only feedback (issue 13, point 3).

Why: a source such as MovieLens logs only what users engaged with (every row is a rating: a click). A
click model trained on it sees one label and learns nothing; its AUC is undefined. The standard remedy
(word2vec's and most implicit-feedback rankers') is to pair each positive with K *sampled* exposures:

* K negatives per positive (``FeatureSettings.negatives_per_positive``, default 4);
* drawn from the videos visible at the positive's time that the user had not engaged with by then;
* with probability proportional to ``(engagements + 1) ** 0.75`` over the window (popularity-smoothed, so
  the model must learn more than popularity, and rare videos still appear);
* reproducible: a pure function of the rows and the seed;
* flagged ``sampled = True``: no metric of logged exposures, monitor or PSI may count them (they are not
  impressions), and an AUC computed on them is reported as a sampled AUC, never a gate floor.

A sampled row copies its positive's user and context columns, takes the sampled video's columns, is
``click = 0`` with no satisfaction labels, and is stamped one millisecond *before* its positive, so that
the time-ordered affinity features of a training row never see the positive it was sampled for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VIDEO_COLUMNS = ("author_id", "category", "title", "duration_seconds", "upload_ts")
POWER = 0.75


def is_positive_only(examples: pd.DataFrame) -> bool:
    """True when no logged row is a non-engaged impression (every logged click label is 1)."""
    logged = examples if "sampled" not in examples else examples[~examples["sampled"].astype(bool)]
    click = pd.to_numeric(logged["click"], errors="coerce")
    return bool(len(click)) and bool((click.fillna(1) > 0).all())


def sample_negatives(examples: pd.DataFrame, videos: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """``examples`` (positives, from :func:`recsys.features.build.build_examples`) plus ``k`` sampled
    negatives per positive, flagged ``sampled``; time-ordered like the input."""
    out = examples.assign(sampled=False)
    pos = examples[pd.to_numeric(examples["click"], errors="coerce").fillna(0) > 0]
    if k <= 0 or pos.empty:
        return out
    v = videos.drop_duplicates("video_id", keep="last").reset_index(drop=True)
    vid = v["video_id"].astype("int64").to_numpy()
    visible = v["visible"].fillna(True).astype(bool).to_numpy() if "visible" in v else np.ones(len(v), bool)
    upload = pd.to_datetime(v["upload_ts"], utc=True)
    upload_ns = upload.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy()
    counts = pos.groupby(pos["video_id"].astype("int64")).size().reindex(vid, fill_value=0).to_numpy(float)
    weight = np.where(visible, (counts + 1.0) ** POWER, 0.0)
    if weight.sum() <= 0:
        return out
    cdf = np.cumsum(weight) / weight.sum()

    ts_ns = pd.to_datetime(pos["ts"], utc=True).astype("int64").to_numpy()
    users, ucode = np.unique(pos["user_key"].astype(str).to_numpy(), return_inverse=True)
    vcode_of = pd.Series(np.arange(len(vid)), index=vid)
    pos_v = vcode_of.reindex(pos["video_id"].astype("int64").to_numpy()).fillna(-1).to_numpy(np.int64)
    # the first time each user engaged with each video: a draw at time t is rejected if that is <= t
    first = pd.DataFrame({"key": ucode.astype(np.int64) * len(vid) + pos_v, "t": ts_ns})
    first = first[pos_v >= 0].groupby("key")["t"].min()
    fkeys, ftimes = first.index.to_numpy(np.int64), first.to_numpy(np.int64)

    rng = np.random.default_rng([seed, 75])
    n = len(pos)
    chosen = np.full((n, k), -1, dtype=np.int64)
    for _ in range(50):  # rejection rounds; almost every slot is filled by the first
        todo = np.argwhere(chosen < 0)
        if not len(todo):
            break
        rows = todo[:, 0]
        draw = np.minimum(np.searchsorted(cdf, rng.random(len(rows)), side="right"), len(vid) - 1)
        key = ucode[rows].astype(np.int64) * len(vid) + draw
        at = np.minimum(np.searchsorted(fkeys, key), max(len(fkeys) - 1, 0))
        engaged = (
            (fkeys[at] == key) & (ftimes[at] <= ts_ns[rows]) if len(fkeys) else np.zeros(len(rows), bool)
        )
        ok = ~engaged & (upload_ns[draw] <= ts_ns[rows]) & visible[draw]
        # one video at most once per positive
        dup = np.zeros(len(rows), dtype=bool)
        for j in range(k):
            dup |= chosen[rows, j] == draw
        ok &= ~dup
        # two draws of one round in the same row with the same video: keep the first
        first_in_round = ~pd.DataFrame({"r": rows, "v": draw}).duplicated().to_numpy()
        ok &= first_in_round
        chosen[rows[ok], todo[ok, 1]] = draw[ok]
    filled = chosen >= 0
    rep = np.repeat(np.arange(n), k)[filled.reshape(-1)]
    code = chosen.reshape(-1)[filled.reshape(-1)]
    neg = pos.iloc[rep].reset_index(drop=True)
    slot = np.tile(np.arange(k), n)[filled.reshape(-1)]
    neg["event_id"] = neg["event_id"].astype(str).to_numpy() + "-neg" + slot.astype(str)
    neg["video_id"] = vid[code]
    for col in VIDEO_COLUMNS:
        if col in v.columns and col in neg.columns:
            neg[col] = v[col].to_numpy()[code]
    neg["ts"] = pd.to_datetime(neg["ts"], utc=True) - pd.Timedelta(milliseconds=1)
    neg["click"] = np.float32(0.0)
    for label in ("watch", "like", "share"):
        if label in neg.columns:
            neg[label] = np.float32(np.nan)
    if "position" in neg.columns:
        neg["position"] = None
    neg["sampled"] = True
    both = pd.concat([out, neg], ignore_index=True)
    return both.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)


def ranking_scores(ranker, preds: dict[str, np.ndarray], video_ids) -> np.ndarray:
    """The ranking score of rows with task predictions ``preds``.

    A model trained on logged exposures: the configured weighted sum (:func:`recsys.model.ranking_score`).
    A model trained on sampled negatives (``transform.sampled_negatives_power`` > 0): its click logit
    estimates log p(v | u) - log q(v) + const, q being the sampling distribution, so the score adds
    log q(v) = power x log(engagements + 1) back (the logQ correction of sampled softmax: Bengio and
    Senecal 2008; Yi et al. 2019) and ranks by the engagement probability itself. The satisfaction tasks
    are left out there: they are conditional on an engagement, and a positive-only source's like and
    watch labels are the rating itself.
    """
    from recsys import tasks
    from recsys.model import ranking_score

    power = float(getattr(ranker.transform, "sampled_negatives_power", 0.0) or 0.0)
    if power <= 0:
        return ranking_score(preds, ranker.score_weights, tasks.of_model(ranker.model))
    p = np.clip(np.asarray(preds[tasks.ENGAGEMENT], dtype=np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    log_count = ranker.transform.video_clicks  # video key -> log1p(engagements) over the training window
    keys = pd.Series(np.asarray(video_ids)).astype("int64").astype(str)
    log_q = power * keys.map(log_count).fillna(0.0).to_numpy(float)
    return np.log(p / (1 - p)) + log_q

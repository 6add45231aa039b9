"""Ranking, the second stage: score every (user, candidate) pair with the champion, keep the top N.

Scoring rows carry the same columns as training examples (user attributes, video metadata, context); the
position is unknown at serving. A diversity rule caps the videos per author in a list.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd


def scoring_frame(user_keys: list[str], candidates: dict[str, list[int]], users: pd.DataFrame,
                  videos: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """One row per (user, candidate video) with the columns the transform reads."""
    pairs = pd.DataFrame(
        [(u, v) for u in user_keys for v in candidates.get(u, [])], columns=["user_key", "video_id"]
    )
    u = users.drop_duplicates("user_key", keep="last")[["user_key", "device", "region", "age_band", "activity"]]
    v = videos.drop_duplicates("video_id", keep="last")[
        ["video_id", "author_id", "category", "title", "duration_seconds", "upload_ts"]].copy()
    v["video_id"] = v["video_id"].astype("int64")
    pairs["video_id"] = pairs["video_id"].astype("int64")
    df = pairs.merge(u, on="user_key", how="left").merge(v, on="video_id", how="left")
    df["ts"] = at
    return df


def top_n(frame: pd.DataFrame, scores: np.ndarray, n: int, max_per_author: int) -> pd.DataFrame:
    """Top ``n`` per user by score, at most ``max_per_author`` videos of one author."""
    df = frame[["user_key", "video_id", "author_id"]].copy()
    df["score"] = scores
    df = df.sort_values(["user_key", "score", "video_id"], ascending=[True, False, True], kind="stable")
    df["author_rank"] = df.groupby(["user_key", "author_id"]).cumcount()
    diverse = df[df["author_rank"] < max_per_author]
    top = diverse.groupby("user_key", sort=False).head(n).copy()
    top["rank"] = top.groupby("user_key").cumcount() + 1
    return top[["user_key", "rank", "video_id", "score"]].reset_index(drop=True)


def serving_time(ds: date) -> pd.Timestamp:
    """Lists computed for day ``ds`` are served the next day; context features use that moment."""
    return pd.Timestamp(ds, tz="UTC") + pd.Timedelta(days=1, hours=18)


def rank_candidates(ranker, frame: pd.DataFrame, n: int, max_per_author: int) -> pd.DataFrame:
    preds = ranker.predict(frame)
    return top_n(frame, preds["score"].to_numpy(), n, max_per_author)

"""Candidate generation, the first of the two stages: a few hundred plausible videos per user.

The union of recent popularity, item-item co-visitation from recent sessions, the user's category and
author affinity, and fresh uploads; videos the user already watched and invisible videos are removed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import numpy as np
import pandas as pd


def _top(series: pd.Series, k: int) -> list[int]:
    return [int(v) for v in series.sort_values(ascending=False, kind="stable").index[:k]]


def covisitation(history: pd.DataFrame, per_video: int = 20) -> dict[int, list[int]]:
    """video -> videos most often clicked in the same session (recent sessions only)."""
    clicks = history.loc[history["clicked"] == 1, ["session_key", "video_id"]].drop_duplicates()
    pairs = clicks.merge(clicks, on="session_key")
    pairs = pairs[pairs["video_id_x"] != pairs["video_id_y"]]
    counts = pairs.groupby(["video_id_x", "video_id_y"]).size().rename("n").reset_index()
    counts = counts.sort_values(["video_id_x", "n", "video_id_y"], ascending=[True, False, True])
    top = counts.groupby("video_id_x").head(per_video)
    return {int(k): g["video_id_y"].astype(int).tolist() for k, g in top.groupby("video_id_x")}


def generate_candidates(
    history: pd.DataFrame,
    videos: pd.DataFrame,
    users: list[str],
    ds: date,
    n_candidates: int = 200,
    fresh_days: int = 3,
) -> dict[str, list[int]]:
    """Candidates per user key from the recent clean history (user_key, session_key, video_id, clicked,
    ts)."""
    vis = videos[videos["visible"].astype(bool)]
    visible = set(vis["video_id"].astype(int))
    cat_of = dict(zip(vis["video_id"].astype(int), vis["category"].astype(str), strict=True))
    author_of = dict(zip(vis["video_id"].astype(int), vis["author_id"].fillna(-1).astype(int), strict=True))
    h = history[history["video_id"].notna()].copy()
    h["video_id"] = h["video_id"].astype(int)
    clicks = h[h["clicked"] == 1]
    score = clicks.groupby("video_id").size().reindex(list(visible), fill_value=0)
    score = score + 1e-3 * np.arange(len(score))[::-1] / max(len(score), 1)  # deterministic tie-break
    popular = _top(score, n_candidates)
    by_cat: dict[str, list[int]] = defaultdict(list)
    by_author: dict[int, list[int]] = defaultdict(list)
    for v in _top(score, len(score)):
        by_cat[cat_of[v]].append(v)
        by_author[author_of[v]].append(v)
    upload = pd.to_datetime(vis["upload_ts"], utc=True)
    fresh_from = pd.Timestamp(ds, tz="UTC") - pd.Timedelta(days=fresh_days - 1)
    recent = pd.DataFrame({"video_id": vis["video_id"].astype(int), "upload": upload})[upload >= fresh_from]
    recent = recent.sort_values(["upload", "video_id"], ascending=[False, True])
    fresh = recent["video_id"].tolist()  # newest first
    covis = covisitation(h)
    watched = clicks.groupby("user_key")["video_id"].apply(set).to_dict()
    user_clicks = clicks.groupby("user_key")["video_id"].apply(list).to_dict()

    out: dict[str, list[int]] = {}
    for u in users:
        seen = watched.get(u, set())
        mine = user_clicks.get(u, [])
        cats = pd.Series([cat_of.get(v) for v in mine]).value_counts().index[:3].tolist() if mine else []
        authors = (
            pd.Series([author_of.get(v) for v in mine]).value_counts().index[:3].tolist() if mine else []
        )
        pools = [
            [w for v in mine[-10:] for w in covis.get(v, [])],
            [v for c in cats for v in by_cat.get(c, [])[:40]],
            [v for a in authors for v in by_author.get(a, [])[:20]],
            fresh[:30],
            popular,
        ]
        chosen: list[int] = []
        taken = set()
        for pool in pools:
            for v in pool:
                if v in visible and v not in seen and v not in taken:
                    chosen.append(v)
                    taken.add(v)
                if len(chosen) >= n_candidates:
                    break
            if len(chosen) >= n_candidates:
                break
        out[u] = chosen
    return out

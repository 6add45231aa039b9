"""Sampled negatives: K per positive, never a video the user had engaged with by then, never an invisible
or not-yet-uploaded one, flagged, reproducible, popularity-smoothed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features.negatives import is_positive_only, sample_negatives


def _world(n_videos=50, n_users=20, per_user=10, seed=0):
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    videos = pd.DataFrame(
        {
            "video_id": np.arange(n_videos),
            "author_id": np.arange(n_videos) % 7,
            "category": [f"c{v % 3}" for v in range(n_videos)],
            "title": "t",
            "duration_seconds": 60.0,
            "upload_ts": t0 - pd.Timedelta(days=1),
            "visible": True,
        }
    )
    videos.loc[0, "visible"] = False
    videos.loc[1, "upload_ts"] = t0 + pd.Timedelta(days=100)  # uploaded after every positive
    rows = []
    for u in range(n_users):
        vids = rng.choice(np.arange(2, n_videos), per_user, replace=False)
        for j, v in enumerate(vids):
            rows.append(
                {
                    "event_id": f"e{u}-{j}",
                    "user_key": f"u{u}",
                    "video_id": int(v),
                    "ts": t0 + pd.Timedelta(hours=u + j),
                    "click": np.float32(1),
                    "watch": np.float32(1),
                    "like": np.float32(1),
                    "share": np.float32(np.nan),
                    "position": None,
                    **videos.loc[
                        v, ["author_id", "category", "title", "duration_seconds", "upload_ts"]
                    ].to_dict(),
                }
            )
    return pd.DataFrame(rows), videos


def test_k_per_positive_flagged_and_valid():
    pos, videos = _world()
    assert is_positive_only(pos)
    out = sample_negatives(pos, videos, k=4, seed=1)
    neg = out[out["sampled"]]
    assert len(neg) == 4 * len(pos) and (out.loc[~out["sampled"], "click"] == 1).all()
    assert (neg["click"] == 0).all() and neg["like"].isna().all() and neg["watch"].isna().all()
    assert not neg["video_id"].isin([0, 1]).any()  # invisible, and uploaded later
    # never a video the user had engaged with at or before the positive's time
    first = pos.groupby(["user_key", "video_id"])["ts"].min()
    key = pd.MultiIndex.from_arrays([neg["user_key"], neg["video_id"]])
    engaged_at = first.reindex(key).to_numpy()
    ok = pd.isna(engaged_at) | (engaged_at > neg["ts"].to_numpy() + pd.Timedelta(milliseconds=1))
    assert ok.all()
    # video columns follow the sampled video
    assert (neg["category"].to_numpy() == [f"c{v % 3}" for v in neg["video_id"]]).all()
    # the sampled rows do not flip positive-only detection: it looks at logged rows only
    assert is_positive_only(out)


def test_reproducible_per_seed():
    pos, videos = _world()
    a = sample_negatives(pos, videos, 4, seed=3)
    b = sample_negatives(pos, videos, 4, seed=3)
    c = sample_negatives(pos, videos, 4, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["video_id"].equals(c["video_id"])


def test_popularity_smoothed_draws():
    """Video 2 holds half of the users' engagements: among the negatives of users who never engaged with
    it, its share is close to (count + 1) ** 0.75 over the visible catalog, not count-proportional."""
    pos, videos = _world(n_videos=40, n_users=400, per_user=3, seed=2)
    fans = pos["user_key"].isin([f"u{u}" for u in range(200)])
    pos.loc[fans & (pos.groupby("user_key").cumcount() == 0), "video_id"] = 2
    pos = pos.drop_duplicates(["user_key", "video_id"])
    out = sample_negatives(pos, videos, 4, seed=0)
    neg = out[out["sampled"] & ~out["user_key"].isin(pos.loc[pos["video_id"] == 2, "user_key"])]
    counts = pos["video_id"].value_counts().reindex(range(2, 40), fill_value=0)
    w = (counts + 1.0) ** 0.75
    share = (neg["video_id"] == 2).mean()
    assert abs(share - w[2] / w.sum()) < 0.03
    assert abs(share - (counts[2] + 1) / (counts + 1).sum()) > 0.05  # clearly not proportional to count


def test_logged_exposures_are_not_positive_only():
    pos, videos = _world()
    pos.loc[pos.index[:3], "click"] = 0.0
    assert not is_positive_only(pos)

"""The simulator's ground truth as an evaluation: true-utility NDCG@k of a scorer's lists.

A scorer's top k over the visible catalog is compared with the oracle's (the k videos of highest true
utility): a figure no logged-data metric can give, because the logs only hold what was shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from recsys.sim.world import World


@dataclass
class TruthSample:
    """A bounded evaluation sample of the simulated world: users, their candidate rows, true utilities."""

    rows: pd.DataFrame  # user_key, video_id, ... the scoring frame (one row per user x candidate)
    utility: np.ndarray  # true utility of each row
    ideal_dcg: dict[str, float]  # user_key -> DCG@k of the oracle's top k
    catalog_size: int

    def ndcg(self, scores: np.ndarray, k: int) -> dict[str, float]:
        """:func:`true_ndcg` of ``scores`` (one per row of :attr:`rows`)."""
        return true_ndcg(self, scores, k)


def truth_sample(
    world: World,
    index: dict[str, int],
    seed: int,
    ds: date,
    test: pd.DataFrame,
    k: int,
    max_users: int = 200,
    max_candidates: int = 500,
) -> TruthSample | None:
    """The simulator's ground truth for up to ``max_users`` test users over the visible catalog of ``ds``.

    ``index`` maps a user's keyed pseudonym to the world's user index. Each user is scored over the visible
    catalog (a fixed sample of ``max_candidates`` when the catalog is larger, the ideal then taken over
    that sample).
    """
    from recsys.serving.rank import scoring_frame

    keys = sorted(k_ for k_ in test["user_key"].astype(str).unique() if k_ in index)
    if not keys:
        return None
    rng = np.random.default_rng(seed)
    if len(keys) > max_users:
        keys = sorted(rng.choice(keys, size=max_users, replace=False).tolist())
    visible = np.flatnonzero(world.visible_mask(ds))
    full = len(visible) <= max_candidates
    cand = visible if full else np.sort(rng.choice(visible, size=max_candidates, replace=False))
    vids = world.videos["video_id"].to_numpy()[cand].astype(int).tolist()
    users = test.sort_values("ts").drop_duplicates("user_key", keep="last")
    users = users[["user_key", "device", "region", "age_band", "activity"]]
    frame = scoring_frame(
        keys,
        dict.fromkeys(keys, vids),
        users,
        world.videos,
        pd.Timestamp(ds, tz="UTC") + pd.Timedelta(hours=12),
    )
    uidx = frame["user_key"].map(index).to_numpy(int)
    vindex = world.video_index()
    vidx = frame["video_id"].map(vindex).to_numpy(int)
    util = world.true_utility(uidx, vidx, ds)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = {}
    for u in keys:  # with the full visible catalog these top k are exactly ``world.oracle(user, k, ds)``
        best = np.sort(util[uidx == index[u]])[::-1][:k]
        ideal[u] = float((best * disc[: len(best)]).sum())
    return TruthSample(frame, util, ideal, len(cand))


def true_ndcg(sample: TruthSample, scores: np.ndarray, k: int) -> dict[str, float]:
    """DCG@k of the true utilities of each user's top k by ``scores``, over the oracle's DCG@k (mean)."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    df = pd.DataFrame(
        {
            "u": sample.rows["user_key"].to_numpy(),
            "v": sample.rows["video_id"].to_numpy(),
            "s": np.asarray(scores, float),
            "t": sample.utility,
        }
    )
    df = df.sort_values(["u", "s", "v"], ascending=[True, False, True], kind="stable")
    df["r"] = df.groupby("u").cumcount()
    top = df[df["r"] < k]
    dcg = (top["t"] * disc[top["r"].to_numpy()]).groupby(top["u"]).sum()
    ratio = dcg / pd.Series(sample.ideal_dcg)
    return {
        f"true_ndcg_{k}": float(ratio.mean()),
        f"true_coverage_{k}": top["v"].nunique() / sample.catalog_size,
        "true_users": float(len(ratio)),
    }

"""Ranking metrics of per-user lists: NDCG@k, Recall@k, MAP@k and catalog coverage.

Pure functions on arrays (users, items, relevance, scores), apart from the offline evaluation run that
calls them (:mod:`recsys.evaluate`, which re-exports them), so any scorer's lists can be measured alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


# ---------------------------------------------------------------------------------------- ranking metrics
def _order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties keep the input order (items are sorted by id upstream)."""
    return np.argsort(-scores, kind="stable")


def ndcg_at_k(rel: np.ndarray, scores: np.ndarray, k: int) -> float:
    """NDCG@k of one list with graded gains ``rel`` (linear gains, log2 discounts, as sklearn.ndcg_score)."""
    rel = np.asarray(rel, float)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    gains = rel[_order(np.asarray(scores, float))][:k]
    ideal = np.sort(rel)[::-1][:k]
    idcg = float((ideal * disc[: len(ideal)]).sum())
    return float((gains * disc[: len(gains)]).sum() / idcg) if idcg > 0 else float("nan")


def recall_at_k(rel: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Share of the relevant items that are in the top k."""
    rel = np.asarray(rel) > 0
    n = rel.sum()
    return float(rel[_order(np.asarray(scores, float))][:k].sum() / n) if n else float("nan")


def average_precision_at_k(rel: np.ndarray, scores: np.ndarray, k: int) -> float:
    """AP@k: mean of precision@i over the ranks i <= k holding a relevant item, over min(#relevant, k)."""
    rel = np.asarray(rel) > 0
    n = rel.sum()
    if not n:
        return float("nan")
    hits = rel[_order(np.asarray(scores, float))][:k].astype(float)
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((prec * hits).sum() / min(n, k))


def ranking_metrics(
    users: np.ndarray,
    items: np.ndarray,
    rel: np.ndarray,
    scores: np.ndarray,
    k: int,
    catalog_size: int | None = None,
) -> dict[str, float]:
    """NDCG@k, Recall@k and MAP@k over users with at least one relevant item, and catalog coverage.

    Each user's list is the set of distinct items they have rows for (e.g. their test-day impressions),
    ordered by ``scores``; ``rel`` is the label (click). Coverage is the share of ``catalog_size`` (default:
    the distinct items of all lists) that appears in at least one user's top k.

    Computed for every user at once (array operations over the lists laid end to end); the per-list
    functions above are the definition, and the tests hold this to them.
    """
    df = pd.DataFrame(
        {"u": users, "i": items, "r": np.nan_to_num(np.asarray(rel, float)), "s": np.asarray(scores, float)}
    )
    df = df.groupby(["u", "i"], sort=True).agg(r=("r", "max"), s=("s", "max")).reset_index()
    size = catalog_size or len(pd.unique(np.asarray(items)))
    if df.empty:
        nan = float("nan")
        return {f"ndcg_{k}": nan, f"recall_{k}": nan, f"map_{k}": nan, f"coverage_{k}": 0.0 if size else nan,
                "ranking_users": 0.0}  # fmt: skip
    user = pd.factorize(df["u"], sort=True)[0]
    r, s = df["r"].to_numpy(float), df["s"].to_numpy(float)
    n_users = int(user.max()) + 1
    starts = np.searchsorted(user, np.arange(n_users))  # rows are grouped by user (sorted)
    # each list by descending score, ties in item order (the rows are sorted by item within a user)
    by_score = np.lexsort((np.arange(len(df)), -s, user))
    rank = np.arange(len(df)) - starts[user[by_score]]
    top = rank < k
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    u_top, r_top = user[by_score][top], r[by_score][top]
    dcg = np.bincount(u_top, r_top * disc[rank[top]], minlength=n_users)
    by_rel = np.lexsort((-r, user))
    rank_rel = np.arange(len(df)) - starts[user[by_rel]]
    keep = rank_rel < k
    idcg = np.bincount(user[by_rel][keep], r[by_rel][keep] * disc[rank_rel[keep]], minlength=n_users)
    relevant = r > 0
    n_rel = np.bincount(user, relevant, minlength=n_users)
    hits = relevant[by_score][top].astype(float)
    hits_in_top = np.bincount(u_top, hits, minlength=n_users)
    # precision at each rank of the top k: hits so far in the user's list / rank
    before = np.concatenate(([0.0], np.cumsum(hits)))
    first = np.searchsorted(u_top, np.arange(n_users))  # where each user's top k starts in u_top
    so_far = before[1:] - before[first[u_top]]
    ap_sum = np.bincount(u_top, so_far / (rank[top] + 1) * hits, minlength=n_users)
    judged = n_rel > 0
    nd = dcg[judged] / idcg[judged]
    rc = hits_in_top[judged] / n_rel[judged]
    ap = ap_sum[judged] / np.minimum(n_rel[judged], k)

    def mean(xs):
        return float(np.mean(xs)) if len(xs) else float("nan")

    return {
        f"ndcg_{k}": mean(nd),
        f"recall_{k}": mean(rc),
        f"map_{k}": mean(ap),
        f"coverage_{k}": len(np.unique(df["i"].to_numpy()[by_score][top])) / size if size else float("nan"),
        "ranking_users": float(judged.sum()),
    }

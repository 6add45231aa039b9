"""Ranking metrics of per-user lists: NDCG@k, Recall@k, MAP@k and catalog coverage.

Pure functions on arrays (users, items, relevance, scores), apart from the offline evaluation run that
calls them (:mod:`recsys.evaluate`, which re-exports them), so any scorer's lists can be measured alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


# ---------------------------------------------------------------------------------------- ranking metrics
def _user_lists(users: np.ndarray, items: np.ndarray, rel: np.ndarray, scores: np.ndarray):
    """Per user: (items, relevance, scores), one entry per distinct item (max relevance, max score)."""
    df = pd.DataFrame(
        {"u": users, "i": items, "r": np.nan_to_num(np.asarray(rel, float)), "s": np.asarray(scores, float)}
    )
    df = df.groupby(["u", "i"], sort=True).agg(r=("r", "max"), s=("s", "max")).reset_index()
    for u, g in df.groupby("u", sort=True):
        yield u, g["i"].to_numpy(), g["r"].to_numpy(float), g["s"].to_numpy(float)


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
    """
    nd, rc, ap, top = [], [], [], set()
    for _, it, r, s in _user_lists(users, items, rel, scores):
        top.update(it[_order(s)][:k].tolist())
        if (r > 0).any():
            nd.append(ndcg_at_k(r, s, k))
            rc.append(recall_at_k(r, s, k))
            ap.append(average_precision_at_k(r, s, k))
    size = catalog_size or len(pd.unique(np.asarray(items)))

    def mean(xs):
        return float(np.mean(xs)) if xs else float("nan")

    return {
        f"ndcg_{k}": mean(nd),
        f"recall_{k}": mean(rc),
        f"map_{k}": mean(ap),
        f"coverage_{k}": len(top) / size if size else float("nan"),
        "ranking_users": float(len(nd)),
    }

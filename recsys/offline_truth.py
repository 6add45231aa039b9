"""The simulator's truth for the offline quality run: true-utility NDCG@10 of each scorer's lists.

Why: held-out engagements of a simulated history were drawn from what the logging policy showed, so Recall
on them favours popularity; the simulator also knows each user's true utility for every video, which
judges a list the way a user would. For every evaluation user, the DCG@10 of the true utilities of the
scorer's top 10 (videos already engaged with removed, as in the lists) over the DCG@10 of the best 10 of
the same catalog.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from recsys.catalog_eval import Holdout, Scorer, scorer_lists


def true_ndcg_of_scorers(
    world, holdout: Holdout, scorers: dict[str, Scorer], fallback: Scorer, day: date, k: int = 10
) -> dict[str, dict[str, float]]:
    """``{scorer: {"true_ndcg_10": mean over evaluation users}}``; users are the world's raw ids."""
    uindex, vindex = world.user_index(), world.video_index()
    keep = [j for j, u in enumerate(holdout.users) if u in uindex]
    if not keep:
        return {}
    cat_idx = np.array([vindex.get(int(v), -1) for v in holdout.catalog])
    ok = cat_idx >= 0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = []
    utilities = []
    for j in keep:
        u = uindex[holdout.users[j]]
        util = np.full(len(holdout.catalog), 0.0)
        util[ok] = world.true_utility(np.full(ok.sum(), u), cat_idx[ok], day)
        util[np.isin(holdout.catalog, holdout.seen[j])] = 0.0
        utilities.append(util)
        ideal.append(float((np.sort(util)[::-1][:k] * disc).sum()))
    out = {}
    for name, scorer in scorers.items():
        lists, _ = scorer_lists(scorer, holdout, fallback)
        ratios = []
        for row, util, best in zip(lists[keep], utilities, ideal, strict=True):
            pos = np.searchsorted(holdout.catalog, row[:k])
            gains = np.where(row[:k] >= 0, util[np.minimum(pos, len(util) - 1)], 0.0)
            ratios.append(float((gains * disc[: len(gains)]).sum() / best) if best > 0 else np.nan)
        out[name] = {f"true_ndcg_{k}": float(np.nanmean(ratios))}
    return out

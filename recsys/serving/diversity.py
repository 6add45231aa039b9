"""The diverse top N of each user's scored candidates: a cap per author and per category in a list.

Greedy in score order, on pandas frames (:func:`top_n`) or on integer codes (:func:`_top_n_codes`, the
batch path of :func:`recsys.serving.rank.rank_pairs`); :mod:`recsys.serving.rank` re-exports ``top_n``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


# ------------------------------------------------------------------------------------------ top N
def top_n(
    frame: pd.DataFrame, scores: np.ndarray, n: int, max_per_author: int, max_per_category: int | None = None
) -> pd.DataFrame:
    """Top ``n`` per user by score, at most ``max_per_author`` videos of one author and
    ``max_per_category`` of one category (None: no category cap).

    Greedy in score order (ties: smaller video id first): a video is taken unless its author or its
    category already has its quota among the videos taken. A video with an unknown author or category
    is not capped on that side. Lists are shorter than ``n`` only if the candidates run out.
    """
    cols = ["user_key", "rank", "video_id", "score"]
    if len(frame) == 0 or n <= 0:
        return pd.DataFrame(
            {c: pd.Series(dtype=t) for c, t in zip(cols, (object, "int64", "int64", "float64"), strict=True)}
        )
    ucode, ukeys = pd.factorize(frame["user_key"], sort=True)
    vid = frame["video_id"].to_numpy(np.int64)
    acode = pd.factorize(frame["author_id"])[0] if "author_id" in frame.columns else np.full(len(frame), -1)
    ccode = pd.factorize(frame["category"])[0] if "category" in frame.columns else np.full(len(frame), -1)
    return _top_n_codes(
        np.asarray(ukeys, dtype=object), ucode, vid, acode, ccode, scores, n, max_per_author, max_per_category
    )


def _top_n_codes(
    ukeys: np.ndarray,
    ucode: np.ndarray,
    vid: np.ndarray,
    acode: np.ndarray,
    ccode: np.ndarray,
    scores: np.ndarray,
    n: int,
    max_per_author: int | None,
    max_per_category: int | None,
) -> pd.DataFrame:
    """:func:`top_n` on codes: ``ucode`` indexes ``ukeys`` (sorted), -1 in ``acode``/``ccode`` = unknown."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(vid, kind="stable")  # = np.lexsort((vid, -scores, ucode)), several times faster
    order = order[np.argsort(-scores[order], kind="stable")]
    order = order[np.argsort(ucode[order], kind="stable")]
    u_sorted = ucode[order]
    bounds = np.flatnonzero(np.diff(u_sorted)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(order)]])
    cap_a = max_per_author if max_per_author is not None else n
    cap_c = max_per_category if max_per_category is not None else n
    a_sorted, c_sorted = acode[order].tolist(), ccode[order].tolist()
    taken: list[int] = []
    for s, e in zip(starts.tolist(), stops.tolist(), strict=True):
        per_a: dict[int, int] = {}
        per_c: dict[int, int] = {}
        got = 0
        for i in range(s, e):
            a, c = a_sorted[i], c_sorted[i]
            if a >= 0 and per_a.get(a, 0) >= cap_a:
                continue
            if c >= 0 and per_c.get(c, 0) >= cap_c:
                continue
            if a >= 0:
                per_a[a] = per_a.get(a, 0) + 1
            if c >= 0:
                per_c[c] = per_c.get(c, 0) + 1
            taken.append(i)
            got += 1
            if got >= n:
                break
    rows = order[np.asarray(taken, dtype=np.int64)]
    uc = ucode[rows]
    rank = np.ones(len(rows), dtype=np.int64)
    if len(rows):
        new = np.concatenate([[True], uc[1:] != uc[:-1]])
        group_start = np.maximum.accumulate(np.where(new, np.arange(len(rows)), 0))
        rank = np.arange(len(rows)) - group_start + 1
    return pd.DataFrame({"user_key": ukeys[uc], "rank": rank, "video_id": vid[rows], "score": scores[rows]})

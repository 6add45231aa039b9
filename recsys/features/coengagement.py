"""Item-item co-engagement: the ranker input that carries the user's history (``user_video_coengagement``).

For a (user, video) pair it is the score item-kNN ranks by, as one input among the others rather than a
list of its own: the sum, over the videos ``w`` the user engaged with in the training window, of the
cosine ``co(v, w) / sqrt(n_v * n_w)`` (``co``: users who engaged with both; ``n``: users who engaged with
each), kept for each video's ``NEIGHBOURS`` most similar videos; the input is ``log1p`` of the sum. YouTube's
ranker gets the user's watch history the same way: as features of the candidate relative to it.

Training rows leave their own user out (``loo=True``): a row whose user engaged with its video in the window
reads ``co(v, w) - 1`` and ``n_v - 1`` (what the table would say without that user's engagements), so an
engaged row never counts itself and the value of a row does not give its label away; an unengaged row (a
logged impression without engagement, or a sampled negative) is unchanged, as is every serving pair (seen
videos are never candidates). Each user's history is capped at the ``HISTORY`` latest engaged videos,
and the co-occurrence counts are built from the same capped histories, so the two stay consistent.

Known caveats. Each video's neighbours are chosen with every user counted, the row's own user included, so
a video the user engaged with can be a neighbour only thanks to that user's +1 (its leave-one-out count is
then 0 and adds nothing, but the choice of the other neighbours saw the user too): a small optimism on
engaged training rows, of the same kind as ``video_popularity``'s leave-one-out. The histories are the
training split's in the features stage; the transform a trained model is logged with refits them on the
training and validation splits (``Transform.refreshed``), so serving sees both. Fitting costs the
sum over users of min(engaged, HISTORY) squared and the score blocks hold [2,000 users x videos]; the
feature is on by default only for positive-only sources (``RECSYS_FEATURES__COENGAGEMENT``).

The fitted object is JSON (inside the transform): per video its neighbours and co counts, per user the codes
of the engaged videos. The per-user lists are personal data like the affinity tables: erasure removes them
(:mod:`recsys.privacy.model_repair`). The counts are aggregates, like ``video_popularity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NAME = "user_video_coengagement"
NEIGHBOURS = 100  # as many as the item-kNN baseline keeps (recsys.catalog_baselines.ItemKNN)
HISTORY = 300  # fitting costs the sum over users of min(engaged, HISTORY) squared
_USER_BLOCK = 2_000  # users whose [users x videos] score rows are built at a time


def _keys(values) -> np.ndarray:
    """Values as the transform's string keys ("" for a missing value)."""
    s = pd.Series(values, dtype=object)
    return s.where(s.notna(), "").astype(str).to_numpy(object)


@dataclass
class CoEngagement:
    videos: list[str]  # video key of each code
    engagers: list[int]  # n_v: users who engaged with the video (capped histories)
    neighbours: list[list[int]]  # per video code: neighbour codes, most similar first
    co: list[list[int]]  # per video code: co-engaging users with each neighbour
    history: dict[str, list[int]]  # user key -> engaged video codes, the latest HISTORY
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, engagements: pd.DataFrame, neighbours: int = NEIGHBOURS, history: int = HISTORY):
        """From engaged rows (user_key, video_id, ts): the capped histories, the counts, the neighbours."""
        from scipy import sparse

        e = pd.DataFrame(
            {
                "u": _keys(engagements["user_key"]),
                "v": _keys(engagements["video_id"]),
                "ts": engagements["ts"],
            }
        )
        e = e[(e["u"] != "") & (e["v"] != "")]
        e = e.sort_values("ts", kind="stable").drop_duplicates(["u", "v"], keep="last")
        e = e[e.groupby("u").cumcount(ascending=False) < history]  # each user's latest `history`
        if e.empty:
            return cls([], [], [], [], {})
        ucode, ukeys = pd.factorize(e["u"])
        vcode, vkeys = pd.factorize(e["v"], sort=True)
        x = sparse.csr_matrix((np.ones(len(e), np.float64), (ucode, vcode)), shape=(len(ukeys), len(vkeys)))
        n = np.asarray(x.sum(axis=0)).ravel()
        c = (x.T @ x).tocsr()
        c.setdiag(0)
        c.eliminate_zeros()
        inv = 1.0 / np.sqrt(np.maximum(n, 1.0))
        nbr, co = [], []
        for v in range(len(vkeys)):
            lo, hi = c.indptr[v], c.indptr[v + 1]
            w, cnt = c.indices[lo:hi], c.data[lo:hi]
            cos = cnt * inv[w] * inv[v]
            top = np.lexsort((w, -cos))[:neighbours]  # most similar first, ties: smaller code
            nbr.append(w[top].astype(int).tolist())
            co.append(cnt[top].astype(int).tolist())
        hist: dict[str, list[int]] = {}  # rows are in time order (sorted above)
        for u, v in zip(ucode, vcode, strict=True):
            hist.setdefault(ukeys[u], []).append(int(v))
        return cls([str(k) for k in vkeys], n.astype(int).tolist(), nbr, co, hist)

    # ------------------------------------------------------------------ scoring
    def _matrices(self):
        """(user row of each key, H [users x videos], P [w x v] = co / sqrt(n_w), Q = 1 / sqrt(n_w) on
        P's support, n_v): built once."""
        if not self._cache:
            from scipy import sparse

            n_v = len(self.videos)
            n = np.asarray(self.engagers, dtype=np.float64)
            inv = 1.0 / np.sqrt(np.maximum(n, 1.0))
            lens = np.array([len(x) for x in self.neighbours], dtype=np.int64)
            w = np.fromiter((i for x in self.neighbours for i in x), np.int64, int(lens.sum()))
            cnt = np.fromiter((i for x in self.co for i in x), np.float64, int(lens.sum()))
            v = np.repeat(np.arange(n_v), lens)
            p = sparse.csr_matrix((cnt * inv[w], (w, v)), shape=(n_v, n_v))
            q = sparse.csr_matrix((inv[w], (w, v)), shape=(n_v, n_v))
            users = list(self.history)
            rows = np.repeat(np.arange(len(users)), [len(self.history[u]) for u in users])
            cols = np.fromiter((i for u in users for i in self.history[u]), np.int64, len(rows))
            h = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), n_v))
            self._cache.update(
                user_row=pd.Index(users, dtype=object),
                video_code=pd.Index(self.videos, dtype=object),
                h=h,
                p=p,
                q=q,
                n=n,
            )
        return self._cache

    def codes(self, user_keys, video_keys) -> tuple[np.ndarray, np.ndarray]:
        """History row of each user key and code of each video key (-1: unknown)."""
        m = self._matrices()
        return (
            m["user_row"].get_indexer(pd.Index(_keys(user_keys), dtype=object)),
            m["video_code"].get_indexer(pd.Index(_keys(video_keys), dtype=object)),
        )

    def raw(self, user_keys, video_keys, *, loo: bool) -> np.ndarray:
        """log1p(co-engagement score) per (user, video) row; 0 for an unknown user or video."""
        if not self.videos:
            return np.zeros(len(user_keys))
        return self.raw_codes(*self.codes(user_keys, video_keys), loo=loo)

    def raw_codes(self, urow: np.ndarray, vcode: np.ndarray, *, loo: bool) -> np.ndarray:
        out = np.zeros(len(urow))
        ok = np.flatnonzero((urow >= 0) & (vcode >= 0))
        if not len(ok):
            return out
        m = self._matrices()
        ok = ok[np.argsort(urow[ok], kind="stable")]
        uniq, first = np.unique(urow[ok], return_index=True)
        bounds = np.r_[first, len(ok)]
        for b in range(0, len(uniq), _USER_BLOCK):
            rows = ok[bounds[b] : bounds[min(b + _USER_BLOCK, len(uniq))]]
            block = uniq[b : b + _USER_BLOCK]
            local = np.searchsorted(block, urow[rows])
            hb = m["h"][block]
            v = vcode[rows]
            a = np.asarray((hb @ m["p"]).tocsr()[local, v]).ravel()
            n = m["n"][v]
            val = a / np.sqrt(np.maximum(n, 1.0))
            if loo:
                own = np.asarray(hb[local, v]).ravel() > 0
                if own.any():
                    bq = np.asarray((hb @ m["q"]).tocsr()[local[own], v[own]]).ravel()
                    val[own] = (a[own] - bq) / np.sqrt(np.maximum(n[own] - 1.0, 1.0))
            out[rows] = np.log1p(np.maximum(val, 0.0))
        return out

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "videos": self.videos,
            "engagers": self.engagers,
            "neighbours": self.neighbours,
            "co": self.co,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CoEngagement:
        return cls(d["videos"], d["engagers"], d["neighbours"], d["co"], d["history"])


def engaged_rows(examples: pd.DataFrame) -> pd.DataFrame:
    """The engaged rows of ``examples`` (clicked, never a sampled negative): user_key, video_id, ts."""
    engaged = pd.to_numeric(examples["click"], errors="coerce").fillna(0).to_numpy(float) > 0
    if "sampled" in examples.columns:
        engaged &= ~examples["sampled"].fillna(False).astype(bool).to_numpy()
    return examples.loc[engaged, ["user_key", "video_id", "ts"]]


def fit_examples(examples: pd.DataFrame) -> CoEngagement:
    """The table of the engaged rows of ``examples`` (clicked, never a sampled negative)."""
    return CoEngagement.fit(engaged_rows(examples))


def use_coengagement(setting: str, positive_only: bool) -> bool:
    """``RECSYS_FEATURES__COENGAGEMENT``: "on", "off", or "auto" (for a positive-only source only)."""
    return setting == "on" or (setting == "auto" and positive_only)

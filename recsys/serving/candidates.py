"""Candidate generation, the first of the two stages: a few hundred plausible videos per user.

Pools, in priority order:

* ``two_tower``: the learned retrieval model's top K (:mod:`recsys.retrieval`), passed in as
  :class:`Retrieved` (absent for a user with no history, when no retrieval model is paired with the
  ranker, or when its index is empty);
* ``covisitation``: videos clicked in the same recent sessions as the user's last 10 clicks;
* ``category`` / ``author``: the most clicked videos of the user's 3 most clicked categories (authors);
* ``fresh``: the newest uploads (up to ``fresh_quota`` places are kept for them, since no index built
  before an upload knows it);
* ``popular``: the most clicked visible videos (and the fallback of a user with no history).

The union is deduplicated (a video keeps its first pool's place), videos the user clicked and invisible
videos are removed, and each list is cut at ``n_candidates``. Everything is array work over a chunk of
users at a time (``chunk_users``, which bounds memory); nothing loops over users in Python.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

POOLS = ("two_tower", "covisitation", "category", "author", "fresh", "popular")
PER_VIDEO_COVIS, LAST_CLICKS, TOP_GROUPS, PER_CATEGORY, PER_AUTHOR, FRESH_MAX = 20, 10, 3, 40, 20, 30
CHUNK_USERS = 20_000


@dataclass(frozen=True)
class Retrieved:
    """The two-tower pool: for ``user_keys[i]`` the video ids ``video_ids[i]`` best first, -1 padding."""

    user_keys: np.ndarray
    video_ids: np.ndarray


class CandidateLists(Mapping):
    """user key -> candidate video ids (a list), stored flat: ``video_ids[offsets[i]:offsets[i+1]]``."""

    def __init__(self, user_keys, offsets: np.ndarray, video_ids: np.ndarray):
        self.user_keys = np.asarray(user_keys, dtype=object)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.video_ids = np.asarray(video_ids, dtype=np.int64)
        self._pos = dict(zip(self.user_keys.tolist(), range(len(self.user_keys)), strict=True))

    def __getitem__(self, user: str) -> list[int]:
        i = self._pos[user]
        return self.video_ids[self.offsets[i] : self.offsets[i + 1]].tolist()

    def __iter__(self) -> Iterator[str]:
        return iter(self.user_keys.tolist())

    def __len__(self) -> int:
        return len(self.user_keys)

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def covisitation(history: pd.DataFrame, per_video: int = PER_VIDEO_COVIS) -> pd.DataFrame:
    """(video_id, rank, other): the videos most often clicked in the same session as ``video_id``."""
    clicks = history.loc[history["clicked"] == 1, ["session_key", "video_id"]].drop_duplicates()
    pairs = clicks.merge(clicks, on="session_key")
    pairs = pairs[pairs["video_id_x"] != pairs["video_id_y"]]
    counts = pairs.groupby(["video_id_x", "video_id_y"]).size().rename("n").reset_index()
    counts = counts.sort_values(["video_id_x", "n", "video_id_y"], ascending=[True, False, True])
    counts["rank"] = counts.groupby("video_id_x").cumcount()
    top = counts[counts["rank"] < per_video]
    return pd.DataFrame(
        {
            "video_id": top["video_id_x"].to_numpy(np.int64),
            "rank": top["rank"].to_numpy(np.int64),
            "other": top["video_id_y"].to_numpy(np.int64),
        }
    )


class _Catalog:
    """Visible videos as codes 0..n-1 (sorted by id), with popularity, category and author codes."""

    def __init__(self, videos: pd.DataFrame, clicks: pd.DataFrame, ds: date, fresh_days: int):
        vis = videos[videos["visible"].astype(bool)].drop_duplicates("video_id", keep="last")
        vis = vis.assign(video_id=vis["video_id"].astype("int64")).sort_values("video_id")
        self.ids = vis["video_id"].to_numpy(np.int64)
        n = len(self.ids)
        counts = clicks.groupby("video_id").size()
        score = counts.reindex(self.ids, fill_value=0).to_numpy(float)
        score = score + 1e-3 * np.arange(n)[::-1] / max(n, 1)  # ties: the smaller id first
        self.by_score = np.argsort(-score, kind="stable")
        self.category = pd.factorize(vis["category"].astype(str))[0]
        self.author = pd.factorize(vis["author_id"].fillna(-1).astype("int64"))[0]
        upload = pd.to_datetime(vis["upload_ts"], utc=True).reset_index(drop=True)
        fresh_from = pd.Timestamp(ds, tz="UTC") - pd.Timedelta(days=fresh_days - 1)
        fresh = np.flatnonzero((upload >= fresh_from).to_numpy())
        newest_first = np.lexsort((self.ids[fresh], -upload.iloc[fresh].astype("int64").to_numpy()))
        self.fresh = fresh[newest_first]

    def codes(self, video_ids: np.ndarray) -> np.ndarray:
        """Code of each video id, -1 where it is not a visible video of the catalog."""
        v = np.asarray(video_ids, dtype=np.int64)
        if not len(self.ids):
            return np.full(len(v), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, v), len(self.ids) - 1)
        return np.where(self.ids[pos] == v, pos, -1)

    def top_per(self, group: np.ndarray, per: int) -> pd.DataFrame:
        """(group, rank, code): the ``per`` most clicked videos of each group (category or author)."""
        g = group[self.by_score]
        rank = pd.Series(g).groupby(g).cumcount().to_numpy()
        keep = rank < per
        return pd.DataFrame({"group": g[keep], "rank": rank[keep], "code": self.by_score[keep]})


def generate_candidates(
    history: pd.DataFrame,
    videos: pd.DataFrame,
    users: list[str],
    ds: date,
    n_candidates: int = 200,
    fresh_days: int = 3,
    *,
    retrieved: Retrieved | None = None,
    pools: tuple[str, ...] = POOLS,
    fresh_quota: int = FRESH_MAX,
    chunk_users: int = CHUNK_USERS,
) -> CandidateLists:
    """Candidates per user key from the recent clean history (user_key, session_key, video_id, clicked,
    ts), the catalog (video_id, visible, category, author_id, upload_ts) and the two-tower pool."""
    unknown = set(pools) - set(POOLS)
    if unknown:
        raise ValueError(f"unknown candidate pools {sorted(unknown)}; known: {POOLS}")
    h = history[history["video_id"].notna()]
    h = h.assign(video_id=h["video_id"].astype("int64"))
    clicks = h[h["clicked"] == 1]
    cat = _Catalog(videos, clicks, ds, fresh_days)
    keys = pd.Index(list(users), dtype=object)
    # the user's clicks as codes (seen videos), in history order
    c = clicks[clicks["user_key"].isin(keys)]
    cu = keys.get_indexer(c["user_key"])
    cv = c["video_id"].to_numpy(np.int64)
    ccode = cat.codes(cv)
    seen_max = int(np.bincount(cu[ccode >= 0]).max()) if (ccode >= 0).any() else 0

    fresh = cat.fresh[: min(fresh_quota, FRESH_MAX)] if "fresh" in pools else np.zeros(0, np.int64)
    # long enough to fill a list after removing what its most active user has seen
    popular = cat.by_score[: n_candidates + seen_max] if "popular" in pools else np.zeros(0, np.int64)
    shared = pd.unique(np.concatenate([fresh, popular]).astype(np.int64))
    personal_cap = max(0, n_candidates - len(fresh))
    tables = _user_tables(cat, c, cu, cv, ccode, pools, h)
    tt = _two_tower_matrix(cat, keys, retrieved) if "two_tower" in pools and retrieved is not None else None

    offsets, out_codes = [np.zeros(1, np.int64)], []
    base = 0
    for lo in range(0, len(keys), max(1, chunk_users)):
        hi = min(len(keys), lo + max(1, chunk_users))
        u, code = _chunk(cat, lo, hi, tables, tt, ccode, cu, shared, personal_cap, n_candidates)
        sizes = np.bincount(u - lo, minlength=hi - lo)
        offsets.append(base + np.cumsum(sizes))
        base += int(sizes.sum())
        out_codes.append(code)
    flat = np.concatenate(out_codes) if out_codes else np.zeros(0, np.int64)
    return CandidateLists(np.asarray(keys, dtype=object), np.concatenate(offsets), cat.ids[flat])


def _user_tables(cat: _Catalog, c, cu, cv, ccode, pools, h) -> dict[str, pd.DataFrame]:
    """Per-user pool rows (user, priority, code) of the rule pools, for all users at once."""
    out: dict[str, pd.DataFrame] = {}
    if "covisitation" in pools and len(c):
        cov = covisitation(h)
        cov["code"] = cat.codes(cov["other"].to_numpy())
        last = pd.DataFrame({"user": cu, "video_id": cv})
        last["from_end"] = last.groupby("user").cumcount(ascending=False)
        last = last[last["from_end"] < LAST_CLICKS]
        last["pos"] = last.groupby("user").cumcount()
        m = last.merge(cov, on="video_id")
        out["covisitation"] = pd.DataFrame(
            {"user": m["user"], "prio": m["pos"] * PER_VIDEO_COVIS + m["rank"], "code": m["code"]}
        )
    for pool, group_of, per in (("category", cat.category, PER_CATEGORY), ("author", cat.author, PER_AUTHOR)):
        if pool not in pools or not len(c):
            continue
        ok = ccode >= 0  # affinities count the clicks on visible videos
        f = pd.DataFrame({"user": cu[ok], "group": group_of[ccode[ok]]})
        top = f.groupby(["user", "group"]).size().rename("n").reset_index()
        top = top.sort_values(["user", "n", "group"], ascending=[True, False, True])
        top["grank"] = top.groupby("user").cumcount()
        m = top[top["grank"] < TOP_GROUPS].merge(cat.top_per(group_of, per), on="group")
        out[pool] = pd.DataFrame({"user": m["user"], "prio": m["grank"] * per + m["rank"], "code": m["code"]})
    return out


def _two_tower_matrix(cat: _Catalog, keys: pd.Index, retrieved: Retrieved) -> np.ndarray:
    """[n users, K] codes of the two-tower pool aligned with ``keys`` (-1: none)."""
    ids = np.asarray(retrieved.video_ids, dtype=np.int64)
    k = ids.shape[1] if ids.ndim == 2 else 0
    mat = np.full((len(keys), k), -1, dtype=np.int64)
    pos = keys.get_indexer(pd.Index(np.asarray(retrieved.user_keys, dtype=object)))
    ok = pos >= 0
    if k and ok.any():
        codes = np.where(ids[ok] >= 0, cat.codes(ids[ok].reshape(-1)).reshape(-1, k), -1)
        mat[pos[ok]] = codes
    return mat


def _chunk(cat, lo, hi, tables, tt, ccode, cu, shared, personal_cap, n):
    """(user, code) rows of users ``lo..hi-1`` in list order."""
    n_codes = max(len(cat.ids), 1)
    parts_u, parts_pool, parts_prio, parts_code = [], [], [], []
    if tt is not None and tt.shape[1]:
        sub = tt[lo:hi]
        r, col = np.nonzero(sub >= 0)
        parts_u.append(r + lo)
        parts_pool.append(np.zeros(len(r), np.int64))
        parts_prio.append(col)
        parts_code.append(sub[r, col])
    for i, pool in enumerate(("covisitation", "category", "author"), start=1):
        t = tables.get(pool)
        if t is None:
            continue
        t = t[(t["user"] >= lo) & (t["user"] < hi)]
        parts_u.append(t["user"].to_numpy(np.int64))
        parts_pool.append(np.full(len(t), i, np.int64))
        parts_prio.append(t["prio"].to_numpy(np.int64))
        parts_code.append(t["code"].to_numpy(np.int64))
    in_chunk = (cu >= lo) & (cu < hi) & (ccode >= 0)
    seen = np.unique(cu[in_chunk].astype(np.int64) * n_codes + ccode[in_chunk])
    if parts_u:
        u, pool, prio, code = (np.concatenate(p) for p in (parts_u, parts_pool, parts_prio, parts_code))
        ok = code >= 0
        u, pool, prio, code = u[ok], pool[ok], prio[ok], code[ok]
        key = u * n_codes + code
        ok = ~np.isin(key, seen)
        u, pool, prio, code, key = u[ok], pool[ok], prio[ok], code[ok], key[ok]
        order = np.lexsort((prio, pool, u))
        _, first = np.unique(key[order], return_index=True)
        keep = order[np.sort(first)]  # first place of each (user, video), in (user, pool, priority) order
        u, code = u[keep], code[keep]
        rank = _rank_within(u)
        u, code = u[rank < personal_cap], code[rank < personal_cap]
    else:
        u = code = np.zeros(0, np.int64)
    # the shared pools (fresh, popular) fill what is left, minus what the user has seen or already got
    if len(shared):
        slot = np.full(n_codes, -1, np.int64)
        slot[shared] = np.arange(len(shared))
        taken = np.zeros((hi - lo, len(shared)), dtype=bool)
        for uu, cc in ((u, code), (np.asarray(seen // n_codes), np.asarray(seen % n_codes))):
            s = slot[cc] if len(cc) else np.zeros(0, np.int64)
            taken[uu[s >= 0] - lo, s[s >= 0]] = True
        need = n - np.bincount(u - lo, minlength=hi - lo)
        free = ~taken
        fill = free & (np.cumsum(free, axis=1) <= need[:, None])
        r, col = np.nonzero(fill)
        u = np.concatenate([u, r + lo])
        code = np.concatenate([code, shared[col]])
    order = np.argsort(u, kind="stable")  # personal pools first, then the shared fill
    return u[order], code[order]


def _rank_within(u: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within runs of equal ``u`` (``u`` sorted)."""
    if not len(u):
        return np.zeros(0, np.int64)
    start = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    return np.arange(len(u)) - np.repeat(start, np.diff(np.r_[start, len(u)]))

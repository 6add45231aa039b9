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
COVIS_BLOCK_PAIRS = 2_000_000  # session pairs expanded at a time (about 50 MB of index arrays)


@dataclass(frozen=True)
class Retrieved:
    """The two-tower pool: for ``user_keys[i]`` the video ids ``video_ids[i]`` best first, -1 padding."""

    user_keys: np.ndarray
    video_ids: np.ndarray
    k: int | None = None  # at most this many of them enter a list (None: all); the rest cover seen videos


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
    """(video_id, rank, other): the videos most often clicked in the same session as ``video_id``, most
    co-clicked first (ties: smaller id). Pairs come from a ragged expansion of each session's clicks."""
    clicks = history.loc[history["clicked"] == 1, ["session_key", "video_id"]].drop_duplicates()
    s_code = pd.factorize(clicks["session_key"])[0]
    v_code, v_ids = pd.factorize(clicks["video_id"].astype("int64"), sort=True)
    order = np.argsort(s_code, kind="stable")
    s_code, v_code = s_code[order], v_code[order].astype(np.int32)
    n = len(s_code)
    empty = pd.DataFrame(
        {"video_id": np.zeros(0, np.int64), "rank": np.zeros(0, np.int64), "other": np.zeros(0, np.int64)}
    )
    if n == 0:
        return empty
    n_v = len(v_ids)
    pair, cnt = _session_pair_counts(s_code, v_code, n_v)
    if not len(cnt):  # no session clicked two different videos
        return empty
    # by video (pair keys are sorted by x, then y), most co-clicked first; the stable sort keeps ties by id
    px = pair // n_v
    top_cnt = int(cnt.max()) + 1
    o = np.argsort(px.astype(np.int64) * top_cnt + (top_cnt - 1 - cnt), kind="stable")
    rank = _rank_within(px[o])
    sel = o[rank < per_video]
    if not len(sel):
        return empty
    v_ids = np.asarray(v_ids, dtype=np.int64)
    return pd.DataFrame(
        {"video_id": v_ids[px[sel]], "rank": rank[rank < per_video], "other": v_ids[pair[sel] % n_v]}
    )


def _session_pair_counts(s_code, v_code, n_v: int, max_pairs: int = COVIS_BLOCK_PAIRS):
    """(pair key x * n_v + y, count) over the ordered pairs of distinct videos clicked in one session
    (``s_code`` sorted). Sessions are expanded a block of about ``max_pairs`` pairs at a time and the
    blocks' counts summed, so memory follows the number of distinct pairs, not the sum of squared
    session lengths."""
    n = len(s_code)
    start = np.r_[0, np.flatnonzero(s_code[1:] != s_code[:-1]) + 1]
    lens = np.diff(np.r_[start, n])
    ends = np.cumsum(lens * lens)  # pairs up to the end of each session (self-pairs included)
    cuts = np.r_[0, np.flatnonzero(np.diff(ends // max_pairs)) + 1, len(start)]
    key_type = np.int32 if n_v * n_v < 2**31 else np.int64  # half the memory for catalogs < 46k videos
    keys, counts = [], []
    for a, b in zip(cuts[:-1], cuts[1:], strict=False):
        if a == b:
            continue
        lo = start[a]
        blens = lens[a:b]
        bstart = start[a:b] - lo
        row_start, row_len = np.repeat(bstart, blens), np.repeat(blens, blens)
        rep = np.repeat(np.arange(len(row_len)), row_len)  # row i paired with every row of its session
        partner = row_start[rep] + (
            np.arange(int(row_len.sum())) - np.repeat(np.cumsum(row_len) - row_len, row_len)
        )
        del row_start
        block = v_code[lo : lo + len(row_len)]
        x, y = block[rep], block[partner]
        del rep, partner
        keep = x != y
        k, c = np.unique(x[keep].astype(key_type) * key_type(n_v) + y[keep], return_counts=True)
        keys.append(k)
        counts.append(c.astype(np.int32))
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(keys) == 1:
        return keys[0], counts[0].astype(np.int64)
    k, c = np.concatenate(keys), np.concatenate(counts)
    del keys, counts
    order = np.argsort(k, kind="stable")
    k, c = k[order], c[order]
    first = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1]
    return k[first], np.add.reduceat(c, first).astype(np.int64)


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

    def top_per(self, group: np.ndarray, per: int) -> _Ragged:
        """group code -> its ``per`` most clicked videos (codes), best first."""
        g = group[self.by_score]
        order = np.argsort(g, kind="stable")  # by group, by score within
        rank = _rank_within(g[order])
        keep = order[rank < per]
        return _Ragged.from_sorted(g[keep], self.by_score[keep], int(group.max()) + 1 if len(group) else 0)


@dataclass(frozen=True)
class _Ragged:
    """key k -> values[offsets[k]:offsets[k+1]] (a compressed table: covisitation, top videos per group)."""

    offsets: np.ndarray
    values: np.ndarray

    @classmethod
    def from_sorted(cls, keys: np.ndarray, values: np.ndarray, n_keys: int) -> _Ragged:
        counts = np.bincount(keys, minlength=n_keys) if len(keys) else np.zeros(n_keys, np.int64)
        return cls(np.r_[0, np.cumsum(counts)].astype(np.int64), np.asarray(values, np.int64))

    def expand(self, owner: np.ndarray, rank: np.ndarray, key: np.ndarray, width: int):
        """For owner rows (user, rank, key), sorted by (user, rank): rows (user, rank * width + j, value j
        of key), sorted by (user, priority). A ragged gather, no loop."""
        starts, lens = self.offsets[key], self.offsets[key + 1] - self.offsets[key]
        rep = np.repeat(np.arange(len(key)), lens)
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        return owner[rep], rank[rep] * width + within, self.values[starts[rep] + within]


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
    gen = CandidateGenerator(
        history, videos, ds, n_candidates, fresh_days, pools=pools, fresh_quota=fresh_quota, users=users
    )
    return gen.for_users(users, retrieved=retrieved, chunk_users=chunk_users)


class CandidateGenerator:
    """What every user's candidates share, built once from the recent history: the catalog and its
    popularity, the co-visitation table, the fresh and popular pools. :meth:`for_users` then gives the
    lists of any set of users (a shard at a time: the per-user work and output follow the shard, not the
    day); a user's list does not depend on which other users are in the call.

    ``history`` need only hold the clicked rows (the rule pools read nothing else); ``users``: every user
    the generator will be asked about (sets the popular pool's length, as one call over all of them would).
    """

    def __init__(
        self,
        history: pd.DataFrame,
        videos: pd.DataFrame,
        ds: date,
        n_candidates: int = 200,
        fresh_days: int = 3,
        *,
        pools: tuple[str, ...] = POOLS,
        fresh_quota: int = FRESH_MAX,
        users=None,
    ):
        unknown = set(pools) - set(POOLS)
        if unknown:
            raise ValueError(f"unknown candidate pools {sorted(unknown)}; known: {POOLS}")
        cols = [c for c in ("user_key", "session_key", "video_id", "clicked", "ts") if c in history.columns]
        h = history.loc[history["video_id"].notna(), cols]
        h["video_id"] = h["video_id"].astype("int64")  # .loc with a column list made a copy
        clicks = h[h["clicked"] == 1]
        del h
        self.pools, self.n = pools, n_candidates
        self.cat = cat = _Catalog(videos, clicks, ds, fresh_days)
        self.covis = covisitation(clicks) if "covisitation" in pools else None
        # the users' clicks sorted by user key (history order within): a shard of sorted keys is a slice
        clicks = clicks[clicks["user_key"].notna()]  # a click of no user is in no user's list
        keys = clicks["user_key"].astype(str).to_numpy(object)
        order = np.argsort(keys, kind="stable")
        self.click_keys = keys[order]
        cols = [c for c in ("user_key", "video_id", "ts") if c in clicks.columns]  # ts: the two-tower's
        self.clicks = clicks.iloc[order][cols].reset_index(drop=True)
        vis = cat.codes(self.clicks["video_id"].to_numpy(np.int64)) >= 0
        if users is not None:
            vis &= pd.Index(list(users), dtype=object).get_indexer(self.click_keys) >= 0
        seen = pd.Series(self.click_keys[vis]).value_counts()
        self.seen_max = int(seen.max()) if len(seen) else 0
        fresh = cat.fresh[: min(fresh_quota, FRESH_MAX)] if "fresh" in pools else np.zeros(0, np.int64)
        # long enough to fill a list after removing what its most active user has seen
        popular = (
            cat.by_score[: n_candidates + self.seen_max] if "popular" in pools else np.zeros(0, np.int64)
        )
        self.shared = pd.unique(np.concatenate([fresh, popular]).astype(np.int64))
        self.personal_cap = max(0, n_candidates - len(fresh))

    def user_clicks(self, user_keys) -> pd.DataFrame:
        """The clicks of ``user_keys`` (sorted, distinct: a contiguous range of keys is one slice)."""
        keys = np.asarray(list(user_keys), dtype=object)
        if not len(keys):
            return self.clicks.iloc[:0]
        lo = int(np.searchsorted(self.click_keys, keys[0], side="left"))
        hi = int(np.searchsorted(self.click_keys, keys[-1], side="right"))
        part = self.clicks.iloc[lo:hi]
        return part[pd.Index(keys).get_indexer(self.click_keys[lo:hi]) >= 0]

    def clicks_max(self, user_keys) -> int:
        """The most clicks (with a video) one of ``user_keys`` has in the history: the longest history a
        shard's two-tower search must allow for."""
        mine = pd.Index(list(user_keys), dtype=object).get_indexer(self.click_keys) >= 0
        counts = pd.Series(self.click_keys[mine]).value_counts()
        return int(counts.max()) if len(counts) else 0

    def for_users(
        self, users, *, retrieved: Retrieved | None = None, chunk_users: int = CHUNK_USERS
    ) -> CandidateLists:
        cat, n_candidates = self.cat, self.n
        keys = pd.Index(list(users), dtype=object)
        srt = len(keys) and all(isinstance(k, str) for k in keys[:1]) and keys.is_monotonic_increasing
        srt = bool(srt and keys.is_unique)
        clicks = self.user_clicks(keys) if srt else self.clicks[self.clicks["user_key"].isin(keys)]
        ctx = _UserContext(cat, keys, clicks, self.covis, self.pools)
        tt_rows = None
        if "two_tower" in self.pools and retrieved is not None and np.ndim(retrieved.video_ids) == 2:
            tt_rows = pd.Index(np.asarray(retrieved.user_keys, dtype=object)).get_indexer(keys)
        # the dense "taken" matrix of a chunk stays under ~64 MB whatever the catalog size
        step = max(1, min(chunk_users, int(64e6 // max(len(cat.ids), 1))))
        offsets, out_codes, base = [np.zeros(1, np.int64)], [], 0
        for lo in range(0, len(keys), step):
            hi = min(len(keys), lo + step)
            u, code = _chunk(
                cat, ctx, lo, hi, retrieved, tt_rows, self.shared, self.personal_cap, n_candidates
            )
            sizes = np.bincount(u - lo, minlength=hi - lo)
            offsets.append(base + np.cumsum(sizes))
            base += int(sizes.sum())
            out_codes.append(code.astype(np.int32))  # catalog codes: half the memory of int64
        flat = np.concatenate(out_codes) if out_codes else np.zeros(0, np.int32)
        del out_codes
        return CandidateLists(np.asarray(keys, dtype=object), np.concatenate(offsets), cat.ids[flat])


class _UserContext:
    """The users' clicks and the rule pools' per-user keys, sorted by user so a chunk is a slice."""

    def __init__(self, cat: _Catalog, keys: pd.Index, clicks: pd.DataFrame, cov: pd.DataFrame | None, pools):
        c = clicks[clicks["user_key"].isin(keys)]
        cu = keys.get_indexer(c["user_key"]).astype(np.int64)
        order = np.argsort(cu, kind="stable")  # by user, history order within
        self.cu, self.cv = cu[order], c["video_id"].to_numpy(np.int64)[order]
        self.ccode = cat.codes(self.cv)
        vis = self.ccode >= 0
        self.tables: dict[str, tuple] = {}  # pool -> (user, rank, key, ragged table, width), sorted by user
        if "covisitation" in pools and len(self.cu) and cov is not None:
            src, src_code = np.unique(cov["video_id"].to_numpy(np.int64), return_inverse=True)
            table = _Ragged.from_sorted(src_code, cat.codes(cov["other"].to_numpy()), len(src))
            from_end = _rank_within(self.cu[::-1])[::-1]
            last = from_end < LAST_CLICKS
            u, v = self.cu[last], self.cv[last]
            pos = np.minimum(np.searchsorted(src, v), max(len(src) - 1, 0))
            known = (src[pos] == v) if len(src) else np.zeros(len(v), bool)
            u, pos = u[known], pos[known]
            self.tables["covisitation"] = (u, _rank_within(u), pos, table, PER_VIDEO_COVIS)
        for pool, group, per in (
            ("category", cat.category, PER_CATEGORY),
            ("author", cat.author, PER_AUTHOR),
        ):
            if pool not in pools or not vis.any():
                continue
            n_groups = int(group.max()) + 1
            pair = self.cu[vis] * n_groups + group[self.ccode[vis]]
            uniq, count = np.unique(pair, return_counts=True)
            u, g = uniq // n_groups, uniq % n_groups
            o = np.lexsort((g, -count, u))  # by user, most clicked first, ties: smaller group code
            u, g = u[o], g[o]
            rank = _rank_within(u)
            top = rank < TOP_GROUPS
            self.tables[pool] = (u[top], rank[top], g[top], cat.top_per(group, per), per)

    def slice(self, pool: str, lo: int, hi: int):
        u, rank, key, table, width = self.tables[pool]
        a, b = np.searchsorted(u, [lo, hi])
        return table.expand(u[a:b], rank[a:b], key[a:b], width)


def _chunk(cat, ctx: _UserContext, lo, hi, retrieved, tt_rows, shared, personal_cap, n):
    """(user, code) rows of users ``lo..hi-1`` in list order: each pool in turn takes what is not yet
    taken (seen, or from an earlier pool) up to the user's remaining places; then the shared fill."""
    n_codes = max(len(cat.ids), 1)
    taken = np.zeros((hi - lo, n_codes), dtype=bool)
    a, b = np.searchsorted(ctx.cu, [lo, hi])
    cu, cc = ctx.cu[a:b], ctx.ccode[a:b]
    taken[cu[cc >= 0] - lo, cc[cc >= 0]] = True  # seen
    count = np.zeros(hi - lo, np.int64)
    parts_u, parts_c = [], []
    if tt_rows is not None:
        rows = tt_rows[lo:hi]
        mine = np.flatnonzero(rows >= 0)
        ids = np.asarray(retrieved.video_ids, dtype=np.int64)[rows[mine]]
        k = ids.shape[1]
        u = np.repeat(mine + lo, k)
        cap = personal_cap if retrieved.k is None else min(personal_cap, retrieved.k)
        got = _take(u, cat.codes(ids.reshape(-1)), lo, taken, count, cap)
        parts_u.append(got[0])
        parts_c.append(got[1])
    for pool in ("covisitation", "category", "author"):
        if pool in ctx.tables:
            u, _, code = ctx.slice(pool, lo, hi)
            # one category (author) per video: only co-visitation lists can repeat a video
            got = _take(u, code, lo, taken, count, personal_cap, distinct=pool != "covisitation")
            parts_u.append(got[0])
            parts_c.append(got[1])
    if len(shared):  # the shared pools (fresh, popular) fill what is left
        free = ~taken[:, shared]
        fill = free & (np.cumsum(free, axis=1) <= (n - count)[:, None])
        r, col = np.nonzero(fill)
        parts_u.append(r + lo)
        parts_c.append(shared[col])
    if not parts_u:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u, code = np.concatenate(parts_u), np.concatenate(parts_c)
    order = np.argsort(u, kind="stable")  # pools in priority order within each user
    return u[order], code[order]


def _take(u, code, lo, taken, count, cap, distinct=False):
    """The rows (sorted by user, then priority) a pool adds: visible, not taken, first of duplicates
    (``distinct``: the pool has none per user), within the user's remaining places (``cap`` in all);
    marks them taken."""
    ok = code >= 0
    u, code = u[ok], code[ok]
    ok = ~taken[u - lo, code]
    u, code = u[ok], code[ok]
    if not distinct:
        dup = pd.Series(u * taken.shape[1] + code).duplicated().to_numpy()
        u, code = u[~dup], code[~dup]
    ok = _rank_within(u) < cap - count[u - lo]
    u, code = u[ok], code[ok]
    taken[u - lo, code] = True
    count += np.bincount(u - lo, minlength=len(count))
    return u, code


def _rank_within(u: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within runs of equal ``u`` (``u`` sorted)."""
    if not len(u):
        return np.zeros(0, np.int64)
    start = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    return np.arange(len(u)) - np.repeat(start, np.diff(np.r_[start, len(u)]))

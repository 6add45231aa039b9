"""One simulated day of platform traffic: sessions, slates, position bias and responses.

Each day, active users of the :class:`~recsys.sim.world.World` open sessions and are shown a slate, taken
from the live recommendations when there are some (the loop closes here) or from popular/random videos,
with a share of pure exploration traffic. Whether a user examines a position depends on the position and
the device (position bias); responses (click, watch time, like, share) are drawn from the hidden utility.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from recsys.sim.world import ACTIVITY, DEVICE_ETA, World, _sigmoid


def examine_prob(position: np.ndarray, device: np.ndarray) -> np.ndarray:
    """P(a user looks at slate position ``position`` (1-based)) on ``device``."""
    eta = pd.Series(np.asarray(device, dtype=object)).map(DEVICE_ETA).to_numpy(float)
    return np.power(1.0 / np.asarray(position, float), eta)


def regret_against_oracle(world: World, day: date, lists: dict[int, list[int]], k: int | None = None) -> dict:
    """How far the served lists fall short of the oracle's on ``day`` (simulator truth, no sampling).

    ``lists``: user index -> ranked catalog indices. For each user, the expected clicks of the top ``k``
    (default: the slate size) under the true click model, ``sum_i P(examine i | device) * P(click)``, for
    the served list and for the oracle's (:meth:`World.oracle`). Returns the expected click-through rate of
    both and the regret: their difference per impression, and as a share of the oracle's.
    """
    k = k or world.settings.slate_size
    devices = world.users["device"].to_numpy(object)
    served = best = 0.0
    slots = 0
    for u, videos in lists.items():
        videos = [v for v in videos if v >= 0][:k]
        if not videos:
            continue
        pos = np.arange(1, len(videos) + 1)
        seen = examine_prob(pos, np.full(len(videos), devices[u], dtype=object))
        users = np.full(len(videos), u)
        served += float((seen * world.click_prob(world.affinity(users, np.asarray(videos), day))).sum())
        oracle = world.oracle(u, len(videos), day)
        best += float((seen * world.click_prob(world.affinity(users, oracle, day))).sum())
        slots += len(videos)
    if not slots:
        return {}
    regret = (best - served) / slots
    return {
        "expected_ctr": served / slots,
        "oracle_expected_ctr": best / slots,
        "regret": regret,
        "regret_ratio": regret / (best / slots) if best > 0 else None,
        "regret_users": len([v for v in lists.values() if len(v)]),
    }


def distinct_draws(
    rng: np.random.Generator, rows: int, k: int, pool: np.ndarray, p: np.ndarray | None = None
) -> np.ndarray:
    """``rows`` independent draws of ``k`` distinct elements of ``pool`` (weights ``p``), as [rows, k].

    Each row has the distribution of ``rng.choice(pool, k, replace=False, p=p)``: sequential sampling
    without replacement is i.i.d. sampling that skips repeats, which vectorizes. Rows that have not seen
    ``k`` distinct values yet draw more (never a fresh start, which would bias toward rare repeats).
    """
    pool = np.asarray(pool)
    if k > len(pool):
        raise ValueError(f"cannot draw {k} distinct values from a pool of {len(pool)}")
    cdf = None if p is None else np.cumsum(p) / np.sum(p)

    def draw(n: int, m: int) -> np.ndarray:
        if cdf is None:
            return rng.integers(0, len(pool), size=(n, m))
        return np.minimum(np.searchsorted(cdf, rng.random((n, m)), side="right"), len(pool) - 1)

    out = np.empty((rows, k), dtype=np.int64)
    todo = np.arange(rows)
    draws = draw(rows, k + max(4, k // 2))
    while todo.size:
        first = first_distinct(draws, k)
        ok = first[:, 0] >= 0
        out[todo[ok]] = first[ok]
        todo, draws = todo[~ok], draws[~ok]
        if todo.size:
            draws = np.concatenate([draws, draw(todo.size, draws.shape[1])], axis=1)
    return pool[out]


def first_distinct(values: np.ndarray, k: int, missing: int = -1) -> np.ndarray:
    """Per row of ``values``, its first ``k`` distinct entries other than ``missing``, in order.

    Rows with fewer than ``k`` such entries come back filled with ``missing``.
    """
    order = np.argsort(values, axis=1, kind="stable")
    srt = np.take_along_axis(values, order, axis=1)
    repeat = np.zeros(values.shape, dtype=bool)
    repeat[:, 1:] = srt[:, 1:] == srt[:, :-1]
    keep = np.empty_like(repeat)
    np.put_along_axis(keep, order, ~repeat, axis=1)
    keep &= values != missing
    rank = np.cumsum(keep, axis=1)
    full = rank[:, -1] >= k
    out = np.full((len(values), k), missing, dtype=values.dtype)
    take = keep & (rank <= k) & full[:, None]
    out[full] = values[take].reshape(-1, k)
    return out


def _live_matrix(world: World, live_slates: dict[str, list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(user index -> up to k catalog indices of the user's live list, -1 padded; user has a list)."""
    vindex, uindex = world.video_index(), world.user_index()
    recs = np.full((len(world.users), k), -1, dtype=np.int64)
    has = np.zeros(len(world.users), dtype=bool)
    for user, videos in live_slates.items():
        u = uindex.get(user)
        if u is None or not videos:
            continue
        idx = [vindex[v] for v in videos if v in vindex][:k]
        recs[u, : len(idx)] = idx
        has[u] = True
    return recs, has


def _draw_slates(
    world: World, day: date, sess_user: np.ndarray, live_slates, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Each session's slate (catalog indices [n, k]) and whether it came from the live recommendations.

    Exploration sessions see k uniformly random visible videos; other sessions see the user's live list
    when there is one (topped up with random videos if shorter than the slate), else k videos drawn by
    popularity.
    """
    s = world.settings
    k, n = s.slate_size, len(sess_user)
    vis = np.flatnonzero(world.visible_mask(day))
    q = world.quality(day)[vis]
    pop = np.exp(q - q.max())
    explore = rng.random(n) < s.explore_share
    from_recs = np.zeros(n, dtype=bool)
    slates = np.empty((n, k), dtype=np.int64)
    if live_slates:
        recs, has = _live_matrix(world, live_slates, k)
        from_recs = ~explore & has[sess_user]
        rows = np.flatnonzero(from_recs)
        slate = recs[sess_user[rows]]
        short = (slate < 0).any(axis=1)
        if short.any():
            fill = distinct_draws(rng, int(short.sum()), k, vis)
            slate[short] = first_distinct(np.concatenate([slate[short], fill], axis=1), k)
        slates[rows] = slate
    rows = np.flatnonzero(explore)
    slates[rows] = distinct_draws(rng, len(rows), k, vis)
    rows = np.flatnonzero(~explore & ~from_recs)
    slates[rows] = distinct_draws(rng, len(rows), k, vis, pop)
    return slates, from_recs


def simulate_day(
    world: World,
    day: date,
    live_slates: dict[str, list[int]] | None = None,
    rec_version: str | None = None,
) -> pd.DataFrame:
    """One day of raw events (one row per impression, in the :data:`~recsys.data.schema.RAW_EVENTS` columns).

    Args:
        live_slates: raw user id -> ranked video ids from the live recommendations (None: no table yet).
        rec_version: the version of those recommendations, written into each event that used them.
    """
    s = world.settings
    rng = np.random.default_rng([world.seed, day.toordinal()])
    users = world.users

    p_active = users["activity"].map(ACTIVITY).to_numpy(float) * s.daily_active_share / 0.6
    active = np.flatnonzero(rng.random(len(users)) < np.clip(p_active, 0, 1))
    n_sess = np.maximum(1, rng.poisson(s.sessions_per_active_user, size=len(active)))
    sess_user = np.repeat(active, n_sess)
    n, k = len(sess_user), s.slate_size
    slates, from_recs = _draw_slates(world, day, sess_user, live_slates, rng)

    user_rep = np.repeat(sess_user, k)
    vid = slates.reshape(-1)
    rows = len(vid)
    pos = np.tile(np.arange(1, k + 1), n)
    device = users["device"].to_numpy(object)[user_rep]
    aff = world.affinity(user_rep, vid, day)
    examined = rng.random(rows) < examine_prob(pos, device)
    clicked = examined & (rng.random(rows) < world.click_prob(aff))
    dur = world.videos["duration_seconds"].to_numpy(float)[vid]
    frac = np.clip(_sigmoid(aff + rng.normal(0, 0.5, rows)), 0.02, 1.0)
    watch = np.where(clicked, np.round(dur * frac, 1), 0.0)
    liked = clicked & (rng.random(rows) < _sigmoid(1.5 * aff - 4.0))
    shared = clicked & (rng.random(rows) < _sigmoid(1.5 * aff - 5.5))

    day0 = np.datetime64(day.isoformat(), "s")
    sess_s = rng.choice(24, size=n, p=_HOUR_P) * 3600 + rng.integers(0, 3540, n)
    ts = day0 + (np.repeat(sess_s, k) + np.tile(np.arange(k) * 2, n)).astype("timedelta64[s]")
    stamp = f"{day:%Y%m%d}"
    sess_ids = _ids(f"s{stamp}-", np.arange(n), 7, suffix=_digits(rng.integers(0, 10**9, n), 9))
    # one address per active user for the day
    octets = rng.integers(0, 256, size=(len(active), 3)).astype("U3")
    ip = np.empty(len(users), dtype=object)
    ip[active] = np.strings.add(
        np.strings.add(np.strings.add("10.", octets[:, 0]), "."),
        np.strings.add(np.strings.add(octets[:, 1], "."), octets[:, 2]),
    )
    events = pd.DataFrame(
        {
            "event_id": _ids(f"e{stamp}-", np.arange(rows), 8),
            "user_id": users["user_id"].to_numpy(object)[user_rep],
            "email": users["email"].to_numpy(object)[user_rep],
            "ip": ip[user_rep],
            "device": device,
            "region": users["region"].to_numpy(object)[user_rep],
            "ts": pd.to_datetime(ts, utc=True),
            "session_id": np.repeat(sess_ids, k),
            "video_id": world.videos["video_id"].to_numpy()[vid],
            "position": pos,
            "rec_version": np.where(np.repeat(from_recs, k), rec_version or None, None).astype(object),
            "clicked": clicked.astype(int),
            "watch_seconds": watch,
            "liked": liked.astype(int),
            "shared": shared.astype(int),
        }
    )
    return _apply_upstream_faults(world, day, events, rng)


def _digits(x: np.ndarray, width: int) -> np.ndarray:
    return np.strings.zfill(np.asarray(x).astype("U"), width)


def _ids(prefix: str, x: np.ndarray, width: int, suffix: np.ndarray | None = None) -> np.ndarray:
    """``prefix`` + zero-padded ``x`` (+ ``-suffix``), vectorized (f-strings cost ~1 s per million)."""
    out = np.strings.add(prefix, _digits(x, width))
    return out if suffix is None else np.strings.add(np.strings.add(out, "-"), suffix)


_HOUR_P = np.array(
    [
        1,
        0.5,
        0.3,
        0.2,
        0.2,
        0.3,
        0.6,
        1,
        1.2,
        1.2,
        1.2,
        1.4,
        1.6,
        1.4,
        1.3,
        1.4,
        1.6,
        2,
        2.5,
        3,
        3.2,
        3,
        2.4,
        1.6,
    ]
)
_HOUR_P = _HOUR_P / _HOUR_P.sum()


def _apply_upstream_faults(world: World, day: date, events: pd.DataFrame, rng) -> pd.DataFrame:
    """Upstream faults from drift settings: some null video ids, or watch time sent as text ("12.5s")."""
    if world._active_drift(day, "upstream_nulls") is not None:
        bad = rng.random(len(events)) < 0.05
        vid = events["video_id"].astype("Int64")
        vid[bad] = pd.NA
        events["video_id"] = vid
    if world._active_drift(day, "upstream_type") is not None:
        events["watch_seconds"] = (events["watch_seconds"].astype(str) + "s").astype(object)
    return events


def catalog_on(world: World, day: date) -> pd.DataFrame:
    """The content metadata the platform publishes on ``day``: videos uploaded by the end of it."""
    end = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    return world.videos[world.videos["upload_ts"] < end].reset_index(drop=True)

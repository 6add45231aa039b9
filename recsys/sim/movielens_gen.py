"""Generate a MovieLens-format history (ml-100k layout) from the simulator's hidden world.

Why: the real MovieLens files may not be redistributed with the project, yet the tests and the quality
bench need a months-long, positive-only rating history in exactly that layout, with a known truth behind
it. :func:`generate_movielens` writes ``u.data`` (tab-separated user, item, rating, unix timestamp),
``u.item`` (pipe-separated, latin-1, 19 genre flags) and ``u.user`` (id|age|gender|occupation|zip), which
:mod:`recsys.data.movielens` reads like the real release.

How the history is drawn (a pure function of the seed):

* the catalog and users are the simulator's world (:func:`recsys.sim.world.build_world`): hidden user
  and video vectors, video quality; the simulator's categories map to MovieLens genres;
* each user joins on a day of the first 80% of the history and rates a first batch of movies that day
  (MovieLens keeps users with at least 20 ratings); afterwards, on each day the user comes back with a
  probability set by the user's activity and rates a few more;
* which movies a user rates: visible movies the user has not rated yet, drawn without replacement with
  weights ``exp(choice_temperature x affinity) x exposure`` (the Gumbel top-k trick), where the exposure is
  a fixed Zipf-like popularity of the movie (what a real site shows more): users rate what they watched,
  and they watch mostly what suits them;
* the rating is the true utility's affinity plus noise, cut at the quantiles of MovieLens 100K's rating
  distribution (6% 1s, 11% 2s, 27% 3s, 34% 4s, 22% 5s).

There are no non-engaged impressions: every row is a positive, like the real data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import SimulatorSettings
from recsys.data.movielens import GENRES_100K
from recsys.sim.world import build_world

# cumulative shares of ratings 1..4 in MovieLens 100K (5 takes the rest)
RATING_CDF = (0.061, 0.175, 0.447, 0.789)
AGE_RANGES = {"13-17": (13, 17), "18-24": (18, 24), "25-34": (25, 34), "35-44": (35, 44), "45-54": (45, 54)}
RETURN_RATE = {"low": 0.02, "mid": 0.05, "high": 0.12}  # P(a user who joined rates again on a given day)


@dataclass(frozen=True)
class GeneratedHistory:
    """What was written: the folder, sizes and the first and last day (UTC)."""

    folder: str
    seed: int
    ratings: int
    users: int
    items: int
    first_day: str
    last_day: str
    days_with_ratings: int

    def to_dict(self) -> dict:
        return asdict(self)


def generate_movielens(
    folder: Path | str,
    seed: int = 0,
    *,
    n_users: int = 943,
    n_items: int = 1682,
    days: int = 210,
    start: date = date(1997, 9, 20),
    first_batch: int = 20,
    session_mean: float = 6.0,
    choice_temperature: float = 2.0,
    rating_noise: float = 0.35,
    min_ratings: int = 50_000,
) -> GeneratedHistory:
    """Write an ml-100k-layout folder at ``folder``; deterministic for a given seed and arguments.

    Raises ``ValueError`` when the drawn history has fewer than ``min_ratings`` ratings (raise the users,
    the days or the session size), so a caller never gets a history smaller than it asked for.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    world, rng, exposure = _world(seed, n_users, n_items, start)
    n_v = n_items  # the world's drift-only videos (after n_videos) are never part of the history
    upload_day = ((world.videos["upload_ts"].iloc[:n_v] - pd.Timestamp(start, tz="UTC")).dt.days).to_numpy()
    visible = world.videos["visible"].to_numpy(bool)[:n_v]

    join = rng.integers(0, int(days * 0.8), n_users)
    p_return = world.users["activity"].map(RETURN_RATE).to_numpy(float)
    rated = np.zeros((n_users, n_v), dtype=bool)
    rows_u, rows_i, rows_day, rows_z = [], [], [], []
    all_u = np.arange(n_users)
    for day in range(days):
        returning = (join < day) & (rng.random(n_users) < p_return)
        active = all_u[(join == day) | returning]
        if active.size == 0:
            continue
        n_rate = np.where(join[active] == day, first_batch, 1 + rng.poisson(session_mean - 1, active.size))
        seen = visible & (upload_day <= day)
        aff = _affinity(world, active, n_v, start)
        logits = choice_temperature * aff + exposure[None, :]
        logits[:, ~seen] = -np.inf
        logits[rated[active]] = -np.inf
        keys = logits + rng.gumbel(size=logits.shape)
        order = np.argsort(-keys, axis=1, kind="stable")
        for j, u in enumerate(active):
            take = order[j, : n_rate[j]]
            take = take[np.isfinite(logits[j, take])]
            rated[u, take] = True
            rows_u.append(np.full(take.size, u))
            rows_i.append(take)
            rows_day.append(np.full(take.size, day))
            rows_z.append(aff[j, take] + rating_noise * rng.normal(size=take.size))
    u, i, d, z = (np.concatenate(x) for x in (rows_u, rows_i, rows_day, rows_z))
    if len(u) < min_ratings:
        raise ValueError(f"the generated history has {len(u)} ratings, fewer than min_ratings={min_ratings}")
    ratings = 1 + np.searchsorted(np.quantile(z, RATING_CDF), z, side="right")
    ts = _timestamps(rng, start, u, d)
    data = pd.DataFrame({"user": u + 1, "item": i + 1, "rating": ratings, "ts": ts})
    data = data.sort_values(["ts", "user", "item"], kind="stable")
    data.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    _write_items(folder / "u.item", world, n_v, start, upload_day)
    _write_users(folder / "u.user", world, rng)
    first = datetime.fromtimestamp(int(data["ts"].min()), tz=UTC).date()
    last = datetime.fromtimestamp(int(data["ts"].max()), tz=UTC).date()
    return GeneratedHistory(
        str(folder),
        seed,
        len(data),
        int(data["user"].nunique()),
        int(data["item"].nunique()),
        str(first),
        str(last),
        int(len(np.unique(d))),
    )


def choice_logits(
    seed: int = 0,
    *,
    n_users: int = 943,
    n_items: int = 1682,
    start: date = date(1997, 9, 20),
    choice_temperature: float = 2.0,
) -> np.ndarray:
    """[users, items] the logits each user's ratings were drawn with (row = user id - 1, column = item id
    - 1), for the same arguments as :func:`generate_movielens`: the truth behind a generated history
    (-inf for the movies the world hides, which are never drawn).
    Ranking a user's unrated movies by them is the best any recommender can do on it (the oracle)."""
    world, _, exposure = _world(seed, n_users, n_items, start)
    aff = _affinity(world, np.arange(n_users), n_items, start)
    logits = choice_temperature * aff + exposure[None, :]
    logits[:, ~world.videos["visible"].to_numpy(bool)[:n_items]] = -np.inf  # never drawn
    return logits


def _world(seed: int, n_users: int, n_items: int, start: date):
    """(world, the generator's random stream after the exposure draw, log exposure of each movie)."""
    settings = SimulatorSettings(n_users=n_users, n_videos=n_items, n_categories=12, n_authors=120)
    world = build_world(settings, seed, start)
    rng = np.random.default_rng([seed, 13])
    exposure = np.log(rng.permuted(1.0 / np.arange(1, n_items + 1) ** 0.9))  # fixed site popularity
    return world, rng, exposure


def _affinity(world, users: np.ndarray, n_v: int, start: date) -> np.ndarray:
    """[users, n_v] the world's affinity of each user for each movie (no drift in a generated history)."""
    u = world.user_vectors(start)[users]
    v = world.video_vec[:n_v]
    return u @ v.T / np.sqrt(v.shape[1]) + world.video_quality[:n_v][None, :]


def _timestamps(rng, start: date, users: np.ndarray, days: np.ndarray) -> np.ndarray:
    """One unix second per rating: each user-day is a session starting at a random time, a rating every
    1-5 minutes (so the importer's 30-minute sessions find one session per user-day)."""
    base = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
    key = pd.DataFrame({"u": users, "d": days})
    step = rng.integers(60, 300, len(users))
    offset = pd.Series(step).groupby([key["u"], key["d"]]).cumsum().to_numpy()
    begin = pd.Series(rng.integers(0, 60_000, len(users))).groupby([key["u"], key["d"]]).transform("first")
    return base + days.astype(np.int64) * 86_400 + begin.to_numpy(np.int64) + offset


def _write_items(path: Path, world, n_v: int, start: date, upload_day: np.ndarray) -> None:
    """``u.item``: id|title (year)|release date|video release date|IMDb URL|19 genre flags (latin-1)."""
    v = world.videos.iloc[:n_v]
    cats = sorted(v["category"].unique())
    genre = {c: 1 + (k % (len(GENRES_100K) - 1)) for k, c in enumerate(cats)}  # 'unknown' (0) is left out
    release = pd.Timestamp(start) + pd.to_timedelta(upload_day, unit="D")  # visible from that day on
    lines = []
    for k in range(n_v):
        flags = ["0"] * len(GENRES_100K)
        flags[genre[v["category"].iloc[k]]] = "1"
        r = release[k]
        title = f"{v['title'].iloc[k].title()} ({r.year})"
        lines.append(
            "|".join([str(k + 1), title, r.strftime("%d-%b-%Y"), "", "http://example.org/m", *flags])
        )
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def _write_users(path: Path, world, rng) -> None:
    """``u.user``: id|age|gender|occupation|zip, from the world's users (US zip codes)."""
    u = world.users
    lines = []
    for k, (band, gender) in enumerate(zip(u["age_band"], u["gender"], strict=True)):
        lo, hi = AGE_RANGES.get(band, (55, 73))
        age = int(rng.integers(lo, hi + 1))
        g = "F" if gender == "f" else "M"
        lines.append(f"{k + 1}|{age}|{g}|other|{int(rng.integers(10_000, 99_999)):05d}")
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.sim.movielens_gen FOLDER [--seed N] [--users N] [--items N] [--days N]``."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=943)
    ap.add_argument("--items", type=int, default=1682)
    ap.add_argument("--days", type=int, default=210)
    a = ap.parse_args(argv)
    out = generate_movielens(a.folder, a.seed, n_users=a.users, n_items=a.items, days=a.days)
    print(json.dumps(out.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

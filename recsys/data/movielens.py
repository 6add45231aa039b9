"""MovieLens (GroupLens, F. M. Harper and J. A. Konstan 2015) in the canonical raw schemas.

The format is detected from the files in the folder:

* ml-100k: ``u.data`` (tab-separated user, item, rating, timestamp), ``u.item`` (pipe-separated id, title,
  release date, video release date, IMDb URL, 19 genre flags), ``u.user`` (id|age|gender|occupation|zip);
* ml-1m (and ml-10m, which lacks users.dat): ``ratings.dat`` (``::``-separated user, movie, rating,
  timestamp), ``movies.dat`` (id::title::genres), ``users.dat`` (id::gender::age code::occupation::zip);
* ml-latest / ml-20m / ml-25m: ``ratings.csv`` and ``movies.csv`` (no user table).

A rating is an impression the user engaged with: clicked = 1, watch_seconds = rating / 5 x
:data:`MOVIE_SECONDS` (a nominal feature length: MovieLens records no viewing), liked = rating >= 4, shared
null, position/device/e-mail/IP null. A session is a user's run of ratings with gaps under 30 minutes.
Genres give the category (the first genre) and the tags (all, ``|``-joined); a movie's upload time is its
release date (ml-100k) or the 1st of January of the year in its title. Users: age band (ml-100k ages are
bucketed; ml-1m keeps its own bands), gender, and the region ``NA-US-<first three zip digits>`` for a US zip
code (the anonymize stage keeps only ``NA-US``); occupation is not part of the schema. Days are UTC days of
the rating timestamps.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS, conform
from recsys.data.sessions import sessionize

MOVIE_SECONDS = 6000.0  # a nominal 100-minute film
GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
AGE_CODES_1M = {1: "<18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
FORMATS = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-latest": "ratings.csv"}
_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True)
class MovieLens:
    """One MovieLens release, parsed. ``ratings`` has user_id, item, rating, ts (UTC) and day (UTC
    midnight, naive)."""

    format: str
    ratings: pd.DataFrame
    videos: pd.DataFrame  # VIDEOS
    users: pd.DataFrame  # RAW_USERS


def detect_format(path: Path) -> str:
    folder = _folder(path)
    for fmt, marker in FORMATS.items():
        if (folder / marker).exists():
            return fmt
    raise FileNotFoundError(f"no MovieLens ratings under {folder} (looked for {', '.join(FORMATS.values())})")


def _folder(path: Path) -> Path:
    path = Path(path)
    return path if path.is_dir() else path.parent


def load(path: Path) -> MovieLens:
    """Parse the release at ``path`` (cached while its files are unchanged)."""
    folder = _folder(path)
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    return _load(folder, stamp)


@functools.lru_cache(maxsize=2)
def _load(folder: Path, _stamp: tuple) -> MovieLens:
    fmt = detect_format(folder)
    if fmt == "ml-100k":
        ratings = _read(folder / "u.data", "\t", ["user_id", "item", "rating", "timestamp"])
        videos = _videos_100k(folder / "u.item")
        users = _users(folder / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"], _band_100k)
    elif fmt == "ml-1m":
        ratings = _read(folder / "ratings.dat", "::", ["user_id", "item", "rating", "timestamp"])
        videos = _videos_genre_list(_read(folder / "movies.dat", "::", ["item", "title", "genres"]))
        users = _users(
            folder / "users.dat",
            "::",
            ["user_id", "gender", "age", "occupation", "zip"],
            lambda a: AGE_CODES_1M.get(int(a), "unknown"),
        )
    else:
        ratings = pd.read_csv(folder / "ratings.csv").rename(columns={"userId": "user_id", "movieId": "item"})
        movies = pd.read_csv(folder / "movies.csv").rename(columns={"movieId": "item"})
        videos = _videos_genre_list(movies)
        users = None
    marker = folder / FORMATS[fmt]
    ratings = check_ratings(ratings, marker, header_lines=1 if fmt == "ml-latest" else 0)
    ratings["ts"] = pd.to_datetime(ratings["timestamp"].astype("int64"), unit="s", utc=True)
    ratings["day"] = ratings["ts"].dt.tz_localize(None).dt.normalize()
    if users is None:
        users = _unknown_users(np.unique(ratings["user_id"]))
    return MovieLens(fmt, ratings, videos, users)


def _read(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    text = path.read_bytes().decode("latin-1")
    if len(sep) > 1:  # the C parser takes one-character separators only
        text = text.replace(sep, "\t")
        sep = "\t"
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=sep,
            names=names,
            header=None,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.ParserError as e:  # e.g. "Expected 4 fields in line 12, saw 5": name the file too
        raise ValueError(f"{path}: unparsable MovieLens file: {e}") from e


def check_ratings(ratings: pd.DataFrame, path: Path, header_lines: int = 0) -> pd.DataFrame:
    """Stop with the file and line of the first bad rating line, or return the ratings typed.

    A line that does not parse into (user, item, rating, timestamp) numbers, or a rating outside
    MovieLens' scale (0.5 to 5), cannot be imported as anything faithful: no day can be told for the
    first, and no label for the second. Unknown items are not checked here: validation quarantines them
    with the ``unknown_video_id`` rule.
    """
    cols = ["user_id", "item", "rating", "timestamp"]
    num = ratings[cols].apply(pd.to_numeric, errors="coerce")
    bad = np.array(num.isna().any(axis=1), dtype=bool)
    bad |= ~np.isclose(num["timestamp"].fillna(0) % 1, 0) | ~np.isclose(num["item"].fillna(0) % 1, 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}:{i + 1 + header_lines}: unparsable rating line (user, item, rating, timestamp "
            f"expected): {' '.join(str(v) for v in ratings[cols].iloc[i].tolist())!r}"
        )
    out_of_range = np.array((num["rating"] < 0.5) | (num["rating"] > 5), dtype=bool)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(
            f"{path}:{i + 1 + header_lines}: rating {num['rating'].iloc[i]:g} outside MovieLens' scale "
            f"0.5..5 ({int(out_of_range.sum())} such line(s))"
        )
    return ratings.assign(**{c: num[c] for c in cols if c != "user_id"}).assign(
        item=num["item"].astype("int64"), timestamp=num["timestamp"].astype("int64")
    )


def _upload_from_title(title: pd.Series) -> pd.Series:
    year = title.astype(str).str.extract(_YEAR, expand=False)
    return pd.to_datetime(year, format="%Y", errors="coerce", utc=True)


def _videos_100k(path: Path) -> pd.DataFrame:
    raw = _read(path, "|", ["item", "title", "release", "video_release", "url", *GENRES_100K])
    flags = raw[list(GENRES_100K)].fillna(0).astype(int).to_numpy(bool)
    genres = ["|".join(g for g, on in zip(GENRES_100K, row, strict=True) if on) or "unknown" for row in flags]
    upload = pd.to_datetime(raw["release"], format="%d-%b-%Y", errors="coerce", utc=True)
    raw = raw.assign(genres=genres, upload_ts=upload.fillna(_upload_from_title(raw["title"])))
    return _videos(raw)


def _videos_genre_list(movies: pd.DataFrame) -> pd.DataFrame:
    genres = movies["genres"].astype(str).replace({"(no genres listed)": "unknown", "nan": "unknown"})
    return _videos(movies.assign(genres=genres, upload_ts=_upload_from_title(movies["title"])))


def _videos(raw: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "video_id": raw["item"],
            "author_id": None,
            "category": raw["genres"].str.split("|").str[0],
            "tags": raw["genres"],
            "duration_seconds": MOVIE_SECONDS,
            "title": raw["title"].fillna("").astype(str),
            "upload_ts": raw["upload_ts"],
            "visible": True,
        }
    )
    return conform(out, VIDEOS, name="movielens videos")


def _band_100k(age) -> str:
    age = int(age)
    bands = ((12, "<13"), (17, "13-17"), (24, "18-24"), (34, "25-34"), (44, "35-44"), (54, "45-54"))
    return next((band for upper, band in bands if age <= upper), "55+")


def region_of_zip(zip_code) -> str:
    """``NA-US-<3 digits>`` for a US zip code (its 3-digit prefix: HIPAA's safe-harbour level), else
    ``unknown``."""
    z = str(zip_code).strip()[:5]
    return f"NA-US-{z[:3]}" if len(z) == 5 and z.isdigit() else "unknown"


def _users(path: Path, sep: str, names: list[str], band) -> pd.DataFrame | None:
    if not path.exists():
        return None
    raw = _read(path, sep, names)
    out = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "email": None,
            "age_band": raw["age"].map(band),
            "gender": raw["gender"].astype(str).str.lower(),
            "region": raw["zip"].map(region_of_zip),
            "device": None,
            "activity": "unknown",
            "signup_ts": None,
        }
    )
    return conform(out, RAW_USERS, name="movielens users")


def _unknown_users(ids) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "user_id": pd.Series(ids).astype(str),
            "email": None,
            "age_band": "unknown",
            "gender": "unknown",
            "region": "unknown",
            "device": None,
            "activity": "unknown",
            "signup_ts": None,
        }
    )
    return conform(out, RAW_USERS, name="movielens users")


def events_for_day(ml: MovieLens, ds: date) -> pd.DataFrame:
    """The day's ratings as :data:`RAW_EVENTS` impressions."""
    day = ml.ratings[ml.ratings["day"] == pd.Timestamp(ds)]
    user = day["user_id"].astype(str)
    region = user.map(dict(zip(ml.users["user_id"], ml.users["region"], strict=True))).fillna("unknown")
    rating = day["rating"].astype(float)
    out = pd.DataFrame(
        {
            "event_id": "ml-" + user + "-" + day["item"].astype(str),
            "user_id": user,
            "email": None,
            "ip": None,
            "device": None,
            "region": region,
            "ts": day["ts"],
            "session_id": sessionize(user, day["ts"], "ml"),
            "video_id": day["item"],
            "position": None,
            "rec_version": None,
            "clicked": 1,
            "watch_seconds": (rating / 5.0 * MOVIE_SECONDS).round(1),
            "liked": (rating >= 4).astype(int),
            "shared": None,
        }
    )
    return conform(out.sort_values(["ts", "event_id"], kind="stable"), RAW_EVENTS, name="movielens events")


def days(path: Path) -> list[date]:
    """The UTC days with ratings."""
    return [d.date() for d in sorted(load(path).ratings["day"].unique())]


def load_day(path: Path, ds: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, videos, users) of ``ds`` from the MovieLens release at ``path``."""
    ml = load(path)
    return events_for_day(ml, ds), ml.videos.copy(), ml.users.copy()

"""KuaiRand (Gao et al., CIKM 2022; CC BY-SA 4.0) in the canonical raw schemas.

Reads the official files (schema in the dataset's README) from one folder: the logs ``log_*.csv`` (or one
log file named directly), ``user_features*.csv`` and ``video_features_basic*.csv``. Only the columns used
here are read, so the 27K/1K/Pure versions and the shared 200-row sample all work.

Mapping:

* events: ``is_click`` -> clicked, ``play_time_ms / 1000`` -> watch_seconds, ``is_like`` -> liked,
  ``is_forward`` -> shared (null when the log lacks the column). KuaiRand has no slate position, device,
  region, e-mail or IP: position, device, email and ip are null, region is ``"unknown"``. A session is a
  user's run of interactions with gaps under 30 minutes; the event id is ``kr-<file>-<row>``.
* time: ``time_ms`` (epoch milliseconds) when present; else ``date`` + ``hourmin`` read as Beijing time
  (UTC+8); else (the shared sample has no time columns) every row goes to one day
  (:data:`DAY_ENV`, default :data:`DEFAULT_DAY`), spread over that day in file order, and a log line
  says so; a user's rows of such a day are one session. Days are UTC days.
* videos: ``tag`` ("12,65") -> tags ``12|65`` and category ``12`` (first tag; ``unknown`` without tags),
  ``video_duration`` ms -> seconds, ``upload_dt`` -> upload_ts, ``visible_status == 0`` -> visible (every
  video of the Pure candidate pool has status 0). Titles are absent (empty string). The whole table is the
  catalog on every day (its ``upload_dt`` is when the table was dumped: after some logged plays).
* users: ``user_active_degree`` -> activity (``UNKNOWN`` -> ``unknown``); age, gender and region are
  ``unknown``, device null (KuaiRand does not record it), e-mail and signup time null.
"""

from __future__ import annotations

import functools
import logging
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS, conform
from recsys.data.sessions import sessionize, spread_over_day

log = logging.getLogger(__name__)

DAY_ENV = "RECSYS_KUAIRAND_DAY"
DEFAULT_DAY = date(2022, 4, 8)  # first day of the KuaiRand logs
BEIJING_OFFSET = pd.Timedelta(hours=8)
LOG_COLUMNS = (
    "user_id",
    "video_id",
    "date",
    "hourmin",
    "time_ms",
    "is_click",
    "is_like",
    "is_forward",
    "play_time_ms",
    "duration_ms",
)


# Files ---------------------------------------------------------------------------------------------
def log_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(path.glob("log_*.csv"))
    if not files:
        raise FileNotFoundError(f"no KuaiRand log (log_*.csv) under {path}")
    return files


def _table(path: Path, pattern: str) -> Path | None:
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    found = sorted(folder.glob(pattern))
    return found[0] if found else None


def default_day() -> date:
    """The day untimed logs are placed on: ``settings.kuairand_day`` (:data:`DAY_ENV`), else
    :data:`DEFAULT_DAY`."""
    from recsys.config import load_settings

    return load_settings().kuairand_day or DEFAULT_DAY


# Logs ----------------------------------------------------------------------------------------------
def read_log(path: Path, day: date | None = None) -> pd.DataFrame:
    """All interactions of the log file(s) at ``path``: the columns used here plus ``ts`` (UTC), ``day``
    (its UTC midnight, naive), ``file`` and ``row`` (the event's place in its file). ``day`` places an
    untimed log (default: :func:`default_day`).
    """
    files = tuple(log_files(path))
    stamp = tuple(f.stat().st_mtime_ns for f in files)
    return _read_logs(files, stamp, day or default_day()).copy()


@functools.lru_cache(maxsize=2)
def _read_logs(files: tuple[Path, ...], _mtimes: tuple[int, ...], day: date) -> pd.DataFrame:
    return pd.concat([_read_one_log(f, day) for f in files], ignore_index=True)


def _read_one_log(path: Path, day: date) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in ("user_id", "video_id", "is_click", "play_time_ms") if c not in header]
    if missing:
        raise ValueError(f"{path}: not a KuaiRand log, missing column(s) {missing}")
    df = pd.read_csv(path, usecols=[c for c in header if c in LOG_COLUMNS], engine="pyarrow")
    df["file"], df["row"] = path.stem, np.arange(len(df))
    if "time_ms" in df.columns:
        df["ts"] = pd.to_datetime(df["time_ms"].astype("int64"), unit="ms", utc=True)
    elif "date" in df.columns:
        local = pd.to_datetime(df["date"].astype("int64").astype(str), format="%Y%m%d")
        if "hourmin" in df.columns:
            hm = df["hourmin"].astype("int64")
            local = local + pd.to_timedelta(hm // 100 * 60 + hm % 100, unit="min")
            df["ts"] = (local - BEIJING_OFFSET).dt.tz_localize("UTC")
        else:  # a date without a time of day: that date, spread over it in file order
            df["ts"] = local.dt.tz_localize("UTC") + spread_over_day(len(df))
    else:
        log.warning(
            "KuaiRand log %s has no time columns (time_ms, date): its %d rows are assigned to %s "
            "(set %s to choose the day), spread over the day in file order",
            path,
            len(df),
            day,
            DAY_ENV,
        )
        df["ts"] = pd.Timestamp(day, tz="UTC") + spread_over_day(len(df))
    df["timed"] = "time_ms" in df.columns or "hourmin" in df.columns
    df["day"] = df["ts"].dt.tz_localize(None).dt.normalize()
    return df


def events_for_day(logs: pd.DataFrame, ds: date) -> pd.DataFrame:
    """The day's interactions in :data:`RAW_EVENTS`."""
    day = logs[logs["day"] == pd.Timestamp(ds)]
    user = day["user_id"].astype("int64").astype(str)
    binary = {"liked": "is_like", "shared": "is_forward"}
    out = pd.DataFrame(
        {
            "event_id": "kr-" + day["file"] + "-" + day["row"].astype(str),
            "user_id": user,
            "email": None,
            "ip": None,
            "device": None,
            "region": "unknown",
            "ts": day["ts"],
            "session_id": _sessions(user, day, ds),
            "video_id": day["video_id"],
            "position": None,
            "rec_version": None,
            "clicked": day["is_click"],
            "watch_seconds": day["play_time_ms"] / 1000.0,
            **{k: day[c] if c in day.columns else None for k, c in binary.items()},
        }
    )
    return conform(out.sort_values(["ts", "event_id"], kind="stable"), RAW_EVENTS, name="kuairand events")


def _sessions(user: pd.Series, day: pd.DataFrame, ds: date) -> pd.Series:
    """Gap-based sessions where the log has times of day; else one session per user and day."""
    timed = day["timed"].to_numpy(bool)
    out = ("kr-" + user + f"-{ds:%Y%m%d}").astype("string")
    if timed.any():
        out[timed] = sessionize(user[timed], day["ts"][timed], "kr")
    return out


def days(path: Path, day: date | None = None) -> list[date]:
    """The UTC days with interactions."""
    return [d.date() for d in sorted(read_log(path, day)["day"].unique())]


# Reference tables ------------------------------------------------------------------------------------
def read_videos(path: Path, logs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The catalog in :data:`VIDEOS`; without ``video_features_basic*.csv``, the logged video ids (with
    the logged durations) and unknown attributes."""
    table = _table(path, "video_features_basic*.csv")
    if table is None:
        if logs is None:
            raise FileNotFoundError(f"no video_features_basic*.csv next to {path}")
        log.warning("no KuaiRand video table next to %s: videos come from the log, attributes unknown", path)
        vids = logs.groupby("video_id", sort=True)
        raw = pd.DataFrame(
            {
                "video_id": list(vids.groups),
                "author_id": None,
                "tag": None,
                "video_duration": vids["duration_ms"].max().to_numpy() if "duration_ms" in logs else None,
                "upload_dt": None,
                "visible_status": 0,
            }
        )
    else:
        raw = pd.read_csv(
            table,
            usecols=["video_id", "author_id", "upload_dt", "visible_status", "video_duration", "tag"],
            dtype={"tag": "string"},
        )
    tags = raw["tag"].astype("string").str.replace(",", "|", regex=False)
    duration = pd.to_numeric(raw["video_duration"], errors="coerce") / 1000.0
    out = pd.DataFrame(
        {
            "video_id": raw["video_id"],
            "author_id": raw["author_id"],
            "category": tags.str.split("|").str[0].fillna("unknown"),
            "tags": tags.fillna("unknown"),
            "duration_seconds": duration.where(duration > 0),
            "title": "",
            "upload_ts": pd.to_datetime(raw["upload_dt"], utc=True),
            "visible": pd.to_numeric(raw["visible_status"]).eq(0),
        }
    )
    return conform(out, VIDEOS, name="kuairand videos")


def read_users(path: Path, logs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The users in :data:`RAW_USERS`; without ``user_features*.csv``, the logged user ids."""
    table = _table(path, "user_features*.csv")
    if table is None:
        if logs is None:
            raise FileNotFoundError(f"no user_features*.csv next to {path}")
        log.warning("no KuaiRand user table next to %s: users come from the log, attributes unknown", path)
        raw = pd.DataFrame({"user_id": np.unique(logs["user_id"]), "user_active_degree": "unknown"})
    else:
        raw = pd.read_csv(table, usecols=["user_id", "user_active_degree"])
    degree = raw["user_active_degree"].astype("string").fillna("unknown")
    out = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype("int64").astype(str),
            "email": None,
            "age_band": "unknown",
            "gender": "unknown",
            "region": "unknown",
            "device": None,
            "activity": degree.mask(degree == "UNKNOWN", "unknown"),
            "signup_ts": None,
        }
    )
    return conform(out, RAW_USERS, name="kuairand users")


def load_day(
    path: Path, ds: date, day: date | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, videos, users) of ``ds`` from the KuaiRand files at ``path``."""
    logs = read_log(path, day)
    return events_for_day(logs, ds), read_videos(path, logs), read_users(path, logs)

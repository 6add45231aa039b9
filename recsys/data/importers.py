"""Real datasets and databases as upstreams: one day of them written into the landing zone.

``land(ds, settings)`` is what the ``land`` stage calls when ``settings.source`` is one of

* ``kuairand``: the KuaiRand files under ``settings.source_path`` (else ``simulator.kuairand_path``;
  :mod:`recsys.data.kuairand`, whose untimed logs go to the day in ``RECSYS_KUAIRAND_DAY``);
* ``movielens``: a MovieLens release under ``settings.source_path`` (:mod:`recsys.data.movielens`);
* ``postgres``: tables in a database named by :data:`URL_ENV` (or ``settings.source_path``), see below.

It writes ``landing/{events,videos,users}/ds=D/part-0.jsonl`` in the canonical raw schemas with the
simulator's writer (JSON lines, written to a temporary name and renamed), replacing a sealed (``.enc``)
copy from an earlier run, so a rerun gives the same landing. ``available_days(settings)`` lists the days
the source has events on, from its own timestamps, for a demo or a backfill over the data's days.

PostgreSQL source
-----------------
``RECSYS_SOURCE_URL=<SQLAlchemy URL>#<events table>[,<videos table>[,<users table>]]``, e.g.
``postgresql+psycopg2://postgres@127.0.0.1:5432/test#events``. Without the variable ``settings.source_path``
(``RECSYS_SOURCE_PATH``) is read the same way. Table names may be schema-qualified (``raw.events``). The
events table has the :data:`~recsys.data.schema.RAW_EVENTS` columns (``event_id``, ``user_id``, ``video_id``,
``ts`` and ``clicked`` required; the others may be absent and land as null); a day is the rows with
``ds <= ts < ds + 1 day`` (UTC), read with a bound-parameter query. The videos and users tables (default
``<events>_videos`` and ``<events>_users``) have the VIDEOS / RAW_USERS columns; the catalog of a day is the
videos uploaded before its end (or with no upload time). A missing companion table is derived from the
events (ids only, attributes unknown).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd

from recsys.data.lake import Lake
from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS, conform
from recsys.data.sessions import SESSION_GAP_S, sessionize, spread_over_day  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

URL_ENV = "RECSYS_SOURCE_URL"
LANDING_FILE = "part-0.jsonl"
SOURCES = ("kuairand", "movielens", "postgres")


# Entry points ---------------------------------------------------------------------------------------
def land(ds: date, settings, lake: Lake | None = None) -> dict:
    """Write the day's events, the catalog and the users of the configured source into landing.

    Returns a summary for the stage record: the source, row counts and the landing paths.
    """
    events, videos, users = load_day(ds, settings)
    if events.empty:
        log.warning("%s has no events on %s: landing an empty events file", settings.source, ds)
    paths = write_landing_day(lake or Lake(settings.data_dir), ds, events, videos, users)
    return {
        "source": settings.source,
        "events_rows": len(events),
        "videos_rows": len(videos),
        "users_rows": len(users),
        "paths": {k: str(v) for k, v in paths.items()},
    }


def load_day(ds: date, settings) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, videos, users) of day ``ds`` from the configured source, conformed to the raw schemas."""
    source = settings.source
    if source == "kuairand":
        from recsys.data import kuairand

        return kuairand.load_day(_dataset_path(settings), ds)
    if source == "movielens":
        from recsys.data import movielens

        return movielens.load_day(_dataset_path(settings), ds)
    if source == "postgres":
        return postgres_load_day(postgres_location(settings), ds)
    raise ValueError(f"source {source!r} is not an importer source (one of {SOURCES})")


def available_days(settings) -> list[date]:
    """The days (UTC) on which the configured source has events, in order."""
    source = settings.source
    if source == "kuairand":
        from recsys.data import kuairand

        return kuairand.days(_dataset_path(settings))
    if source == "movielens":
        from recsys.data import movielens

        return movielens.days(_dataset_path(settings))
    if source == "postgres":
        return postgres_days(postgres_location(settings))
    raise ValueError(f"source {source!r} is not an importer source (one of {SOURCES})")


def _dataset_path(settings) -> Path:
    path = settings.source_path
    if path is None and settings.source == "kuairand":
        path = settings.simulator.kuairand_path
    if path is None:
        raise ValueError(
            f"source {settings.source!r} needs RECSYS_SOURCE_PATH (settings.source_path): the "
            "folder holding the dataset's files"
        )
    if not Path(path).exists():
        raise FileNotFoundError(f"{settings.source} data not found at {path}")
    return Path(path)


# Landing ------------------------------------------------------------------------------------------
def write_landing_day(
    lake: Lake, ds: date, events: pd.DataFrame, videos: pd.DataFrame, users: pd.DataFrame
) -> dict[str, Path]:
    """Write the three landing files of ``ds`` atomically (as the simulator stage does)."""
    from recsys.data.jsonl import to_jsonl

    frames = {
        "events": conform(events, RAW_EVENTS, name="events"),
        "videos": conform(videos, VIDEOS, name="videos"),
        "users": conform(users, RAW_USERS, name="users"),
    }
    paths = {}
    for dataset, frame in frames.items():
        # a rerun replaces the day's delivery, sealed or not, in one commit
        paths[dataset] = lake.write_bytes(
            "landing", dataset, ds, LANDING_FILE, to_jsonl(frame), drop=(LANDING_FILE + ".enc",)
        )
    return paths


# PostgreSQL -----------------------------------------------------------------------------------------
def postgres_location(settings=None) -> tuple[str, str, str, str]:
    """(SQLAlchemy URL, events table, videos table, users table) from :data:`URL_ENV`
    (``settings.source_url``) or source_path."""
    if settings is None:
        from recsys.config import load_settings

        settings = load_settings()
    raw = settings.source_url
    if not raw and settings.source_path is not None:
        # source_path is a Path, which folds "scheme://" into "scheme:/"
        raw = re.sub(r"^([A-Za-z][\w+.-]*):/(?!/)", r"\1://", str(settings.source_path))
    if not raw or "#" not in raw:
        raise ValueError(
            f"the postgres source needs {URL_ENV}=<SQLAlchemy URL>#<events table>"
            "[,<videos table>[,<users table>]] (or RECSYS_SOURCE_PATH in that form)"
        )
    url, _, fragment = raw.partition("#")
    names = [n.strip() for n in fragment.split(",") if n.strip()]
    if not names:
        raise ValueError(f"{URL_ENV}: no events table after '#'")
    events = names[0]
    videos = names[1] if len(names) > 1 else f"{events}_videos"
    users = names[2] if len(names) > 2 else f"{events}_users"
    return url, events, videos, users


def _reflect(engine, name: str):
    import sqlalchemy as sa

    schema, _, table = name.rpartition(".")
    if not sa.inspect(engine).has_table(table, schema=schema or None):
        return None
    return sa.Table(table, sa.MetaData(), autoload_with=engine, schema=schema or None)


def _bounds(column, ds: date) -> tuple[datetime, datetime]:
    """The day's [start, end) as values comparable with ``column`` (naive UTC for a naive timestamp)."""
    start = datetime.combine(ds, time(), tzinfo=UTC)
    if not getattr(column.type, "timezone", False):
        start = start.replace(tzinfo=None)
    return start, start + timedelta(days=1)


def _select_frame(conn, table, columns: list[str], where=None, order=()) -> pd.DataFrame:
    import sqlalchemy as sa

    present = [c for c in columns if c in table.c]
    stmt = sa.select(*[table.c[c] for c in present])
    if where is not None:
        stmt = stmt.where(where)
    if order:
        stmt = stmt.order_by(*[table.c[c] for c in order if c in table.c])
    rows = conn.execute(stmt).fetchall()
    frame = pd.DataFrame(rows, columns=present)
    for c in columns:
        if c not in frame.columns:
            frame[c] = None
    return frame[columns]


def postgres_load_day(
    location: tuple[str, str, str, str], ds: date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, videos, users) of ``ds`` from the tables at ``location`` (see the module docstring)."""
    import sqlalchemy as sa

    url, events_name, videos_name, users_name = location
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ev = _reflect(engine, events_name)
            if ev is None:
                raise LookupError(f"events table {events_name!r} not found at {engine.url!r}")
            required = [c for c in ("event_id", "user_id", "video_id", "ts", "clicked") if c not in ev.c]
            if required:
                raise ValueError(f"table {events_name!r} lacks required column(s) {required}")
            start, end = _bounds(ev.c.ts, ds)
            events = _select_frame(
                conn, ev, list(RAW_EVENTS), (ev.c.ts >= start) & (ev.c.ts < end), order=("ts", "event_id")
            )
            vt = _reflect(engine, videos_name)
            if vt is None:
                log.warning("no videos table %r: the catalog is the day's video ids", videos_name)
                videos = pd.DataFrame({"video_id": pd.unique(events["video_id"].dropna())})
            else:
                where = None
                if "upload_ts" in vt.c:
                    _, v_end = _bounds(vt.c.upload_ts, ds)
                    where = sa.or_(vt.c.upload_ts < v_end, vt.c.upload_ts.is_(None))
                videos = _select_frame(conn, vt, list(VIDEOS), where, order=("video_id",))
            ut = _reflect(engine, users_name)
            if ut is None:
                log.warning("no users table %r: users are the day's user ids", users_name)
                users = events.drop_duplicates("user_id")[["user_id", "email", "region", "device"]]
            else:
                users = _select_frame(conn, ut, list(RAW_USERS), order=("user_id",))
    finally:
        engine.dispose()
    videos = _fill(videos, VIDEOS, {"visible": True})
    users = _fill(users, RAW_USERS, {c: "unknown" for c in ("age_band", "gender", "region", "activity")})
    return (
        conform(events, RAW_EVENTS, name=events_name),
        conform(videos, VIDEOS, name=videos_name),
        conform(users, RAW_USERS, name=users_name),
    )


def _fill(frame: pd.DataFrame, schema: dict[str, str], defaults: dict) -> pd.DataFrame:
    out = frame.copy()
    for c in schema:
        if c not in out.columns:
            out[c] = None
        if c in defaults:
            out[c] = out[c].astype(object).where(out[c].notna(), defaults[c])
    return out


def postgres_days(location: tuple[str, str, str, str]) -> list[date]:
    """The UTC days of the events table."""
    import sqlalchemy as sa

    url, events_name, _, _ = location
    engine = sa.create_engine(url)
    try:
        ev = _reflect(engine, events_name)
        if ev is None:
            raise LookupError(f"events table {events_name!r} not found at {engine.url!r}")
        utc = sa.func.timezone("UTC", ev.c.ts) if getattr(ev.c.ts.type, "timezone", False) else ev.c.ts
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sa.cast(utc, sa.Date)).distinct()).fetchall()
    finally:
        engine.dispose()
    return sorted(r[0] for r in rows if r[0] is not None)

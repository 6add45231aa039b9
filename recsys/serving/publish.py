"""Versioned recommendation tables, published atomically (SQLite by default, PostgreSQL by URL).

Tables::

    recommendations(version, user_key, rank, video_id, score, model_version, generated_at)
    recommendation_versions(version, ds, status, row_count, user_count, model_version, created_at)
    recommendation_live(id = 1, version)                  -- the pointer
    live_recommendations                                  -- view: the live version's rows

A publish writes a new version completely, checks it, then moves the pointer in one transaction, so a
reader sees the old list or the new one, never a mix, never an empty list. The last ``keep`` versions stay
for rollback. Apps read ``live_recommendations`` (see the README for the query).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

log = logging.getLogger(__name__)
FALLBACK_KEY = "__fallback__"  # the list served to unknown or cold users

metadata = sa.MetaData()
recommendations = sa.Table(
    "recommendations",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("user_key", sa.String(64), primary_key=True),
    sa.Column("rank", sa.Integer, primary_key=True),
    sa.Column("video_id", sa.BigInteger, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
)
versions = sa.Table(
    "recommendation_versions",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("ds", sa.String(10), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("user_count", sa.Integer, nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
live = sa.Table(
    "recommendation_live",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.CheckConstraint("id = 1", name="single_pointer"),
)
LIVE_VIEW = "live_recommendations"
LIVE_VIEW_SQL = (
    f"CREATE VIEW {LIVE_VIEW} AS SELECT r.user_key, r.rank, r.video_id, r.score, r.model_version, "
    "r.generated_at, r.version FROM recommendations r JOIN recommendation_live l ON r.version = l.version"
)


class PublishCheckError(ValueError):
    """A new version failed its checks; the live version is unchanged."""


def engine_for(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        db = sa.engine.make_url(url).database
        if db and db != ":memory:":
            from pathlib import Path

            Path(db).parent.mkdir(parents=True, exist_ok=True)
        eng = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(eng, "connect")
        def _wal(dbapi_conn, _):  # readers keep reading the old snapshot while a version is written
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        return eng
    return sa.create_engine(url, pool_pre_ping=True)


def ensure_schema(engine: sa.Engine) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        if LIVE_VIEW not in sa.inspect(conn).get_view_names():
            conn.execute(sa.text(LIVE_VIEW_SQL))


def check_version(
    recs: pd.DataFrame, active_users: set[str], top_n: int, previous_rows: int | None, min_row_ratio: float
) -> None:
    """Raise :class:`PublishCheckError` unless every active user has ranks 1..n with distinct videos."""
    problems = []
    missing = active_users - set(recs["user_key"])
    if missing:
        problems.append(f"{len(missing)} active user(s) have no list")
    g = recs.groupby("user_key")
    ranks_ok = g["rank"].apply(lambda r: sorted(r.tolist()) == list(range(1, len(r) + 1)))
    if not ranks_ok.all():
        problems.append(f"{int((~ranks_ok).sum())} list(s) with ranks not 1..n")
    dup = g["video_id"].apply(lambda v: v.duplicated().any())
    if dup.any():
        problems.append(f"{int(dup.sum())} list(s) repeat a video")
    sizes = g.size()
    if (sizes > top_n).any():
        problems.append(f"lists longer than {top_n}")
    if previous_rows and len(recs) < min_row_ratio * previous_rows:
        problems.append(
            f"{len(recs)} rows is below {min_row_ratio:.0%} of the live version's {previous_rows}"
        )
    if recs.empty:
        problems.append("the new version is empty")
    if problems:
        raise PublishCheckError("refusing to publish: " + "; ".join(problems))


def live_version(conn) -> str | None:
    return conn.execute(sa.select(live.c.version).where(live.c.id == 1)).scalar()


def publish(
    engine: sa.Engine,
    recs: pd.DataFrame,
    *,
    ds: str,
    model_version: str,
    active_users: set[str],
    top_n: int,
    keep: int = 5,
    min_row_ratio: float = 0.5,
) -> dict:
    """Write ``recs`` (user_key, rank, video_id, score) as a new version and make it live atomically.

    Republishing a day replaces that day's earlier version after the switch, so rerunning a day leaves the
    same rows.
    """
    ensure_schema(engine)
    now = datetime.now(UTC)
    with engine.connect() as conn:
        cur = live_version(conn)
        prev_rows = conn.execute(sa.select(versions.c.row_count).where(versions.c.version == cur)).scalar()
        n_same_day = conn.execute(
            sa.select(sa.func.count()).select_from(versions).where(versions.c.ds == ds)
        ).scalar()
    check_version(recs[recs["user_key"] != FALLBACK_KEY], active_users, top_n, prev_rows, min_row_ratio)
    version = f"{ds}.{n_same_day + 1:03d}" if n_same_day else ds
    with engine.connect() as conn:  # make the name unique even after pruning
        while conn.execute(sa.select(versions.c.version).where(versions.c.version == version)).scalar():
            n_same_day += 1
            version = f"{ds}.{n_same_day + 1:03d}"
    rows = recs.assign(version=version, model_version=model_version, generated_at=now)
    rows = rows[["version", "user_key", "rank", "video_id", "score", "model_version", "generated_at"]]
    # 1. write the new version completely (not visible: the pointer does not name it yet)
    with engine.begin() as conn:
        conn.execute(
            versions.insert().values(
                version=version,
                ds=ds,
                status="staged",
                row_count=len(rows),
                user_count=rows["user_key"].nunique(),
                model_version=model_version,
                created_at=now,
            )
        )
        conn.execute(recommendations.insert(), rows.to_dict("records"))
    # 2. switch the pointer in one transaction
    with engine.begin() as conn:
        if live_version(conn) is None:
            conn.execute(live.insert().values(id=1, version=version))
        else:
            conn.execute(live.update().where(live.c.id == 1).values(version=version))
        conn.execute(versions.update().where(versions.c.status == "live").values(status="retired"))
        conn.execute(versions.update().where(versions.c.version == version).values(status="live"))
    # 3. drop the same day's older versions and anything beyond the last ``keep``
    pruned = prune(engine, keep=keep, replaced_ds=ds)
    log.info("published version %s (%d rows, model %s); pruned %s", version, len(rows), model_version, pruned)
    return {
        "version": version,
        "rows": len(rows),
        "users": int(rows["user_key"].nunique()),
        "previous": cur,
        "pruned": pruned,
    }


def prune(engine: sa.Engine, keep: int, replaced_ds: str | None = None) -> list[str]:
    with engine.begin() as conn:
        cur = live_version(conn)
        all_v = conn.execute(
            sa.select(versions.c.version, versions.c.ds).order_by(
                versions.c.created_at.desc(), versions.c.version.desc()
            )
        ).all()
        drop = [v for v, d in all_v if v != cur and d == replaced_ds]
        rest = [v for v, _ in all_v if v not in drop]
        drop += rest[keep:]
        drop = [v for v in drop if v != cur]
        if drop:
            conn.execute(recommendations.delete().where(recommendations.c.version.in_(drop)))
            conn.execute(versions.delete().where(versions.c.version.in_(drop)))
    return drop


def rollback(engine: sa.Engine) -> dict:
    """Make the newest version older than the live one live again."""
    with engine.begin() as conn:
        cur = live_version(conn)
        if cur is None:
            raise PublishCheckError("nothing is live")
        created = conn.execute(sa.select(versions.c.created_at).where(versions.c.version == cur)).scalar()
        prev = conn.execute(
            sa.select(versions.c.version)
            .where(versions.c.created_at < created)
            .order_by(versions.c.created_at.desc())
            .limit(1)
        ).scalar()
        if prev is None:
            raise PublishCheckError(f"no version older than {cur} is kept")
        conn.execute(live.update().where(live.c.id == 1).values(version=prev))
        conn.execute(versions.update().where(versions.c.version == cur).values(status="rolled_back"))
        conn.execute(versions.update().where(versions.c.version == prev).values(status="live"))
    return {"live": prev, "was": cur}


def read_live(engine: sa.Engine, user_key: str | None = None, n: int | None = None) -> pd.DataFrame:
    """The live lists (all users, or one), ordered by user and rank."""
    q = f"SELECT user_key, rank, video_id, score, model_version, version FROM {LIVE_VIEW}"
    params = {}
    if user_key is not None:
        q += " WHERE user_key = :k"
        params["k"] = user_key
        if n is not None:
            q += " AND rank <= :n"
            params["n"] = n
    q += " ORDER BY user_key, rank"
    with engine.connect() as conn:
        if LIVE_VIEW not in sa.inspect(conn).get_view_names():
            return pd.DataFrame(columns=["user_key", "rank", "video_id", "score", "model_version", "version"])
        return pd.read_sql(sa.text(q), conn, params=params)


def read_for_ds(engine: sa.Engine, ds: str) -> pd.DataFrame:
    """The newest kept version published for day ``ds`` (empty if none is kept)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("recommendation_versions"):
            return pd.DataFrame(columns=["user_key", "rank", "video_id", "version", "model_version"])
        v = conn.execute(
            sa.select(versions.c.version)
            .where(versions.c.ds == ds)
            .order_by(versions.c.created_at.desc())
            .limit(1)
        ).scalar()
        q = sa.select(
            recommendations.c.user_key,
            recommendations.c.rank,
            recommendations.c.video_id,
            recommendations.c.version,
            recommendations.c.model_version,
        ).where(recommendations.c.version == v)
        return pd.read_sql(q.order_by(recommendations.c.user_key, recommendations.c.rank), conn)


def models_of_versions(engine: sa.Engine, list_versions: list[str]) -> set[str]:
    """The model versions that produced the given list versions (what served a day's lists)."""
    if not list_versions:
        return set()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(versions.c.model_version).where(versions.c.version.in_(list_versions)))
        return {str(m) for (m,) in rows}


def publish_day(engine: sa.Engine, recs: pd.DataFrame, ds, active_users: set[str], cfg) -> dict:
    """Publish the lists of ``ds`` (the recs zone's frame) with the serving settings ``cfg``."""
    return publish(
        engine,
        recs[["user_key", "rank", "video_id", "score"]],
        ds=str(ds),
        model_version=str(recs["model_version"].iloc[0]),
        active_users=active_users,
        top_n=cfg.top_n,
        keep=cfg.keep_versions,
        min_row_ratio=cfg.min_row_ratio,
    )

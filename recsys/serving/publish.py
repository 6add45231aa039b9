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

import io
import itertools
import logging
from collections.abc import Iterable, Iterator
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
    checks = VersionChecks(top_n)
    checks.add(recs.sort_values("user_key", kind="stable"))
    checks.finish(active_users, previous_rows, min_row_ratio)


class VersionChecks:
    """:func:`check_version` over a version given in pieces (each user's rows together, users in any
    order): per-user problems are counted as each piece comes, the totals at :meth:`finish`. A piece's
    last user is held back until the next piece, so a user split across two pieces is checked whole."""

    def __init__(self, top_n: int):
        self.top_n = top_n
        self.rows = 0
        self.users: set[str] = set()
        self.bad_ranks = self.dup_lists = self.too_long = self.split = 0
        self._carry: pd.DataFrame | None = None

    def add(self, piece: pd.DataFrame) -> None:
        """Rows of users (``user_key``, ``rank``, ``video_id``); the fallback key is not a user."""
        self.rows += len(piece)
        if self._carry is not None:
            piece = pd.concat([self._carry, piece], ignore_index=True)
            self._carry = None
        if piece.empty:
            return
        keys = piece["user_key"].astype(str).to_numpy(object)
        other = keys[::-1] != keys[-1]
        tail = int(other.argmax()) if other.any() else len(keys)  # rows of the last user at the end
        self._carry = piece.iloc[len(piece) - tail :]
        self._check(piece.iloc[: len(piece) - tail])

    def _check(self, part: pd.DataFrame) -> None:
        if part.empty:
            return
        g = part.groupby(part["user_key"].astype(str), sort=False)
        n = g.size()
        r = g["rank"]
        ok = (r.min() == 1) & (r.max() == n) & (r.nunique() == n)
        self.bad_ranks += int((~ok).sum())
        self.dup_lists += int((g["video_id"].nunique() < n).sum())
        self.too_long += int((n > self.top_n).sum())
        new = set(n.index)
        self.split += len(new & self.users)  # a user whose rows came in two places
        self.users |= new

    def finish(self, active_users: set[str], previous_rows: int | None, min_row_ratio: float) -> None:
        if self._carry is not None:
            self._check(self._carry)
            self._carry = None
        problems = []
        missing = len(set(active_users) - self.users)
        if missing:
            problems.append(f"{missing} active user(s) have no list")
        if self.split:
            problems.append(f"{self.split} user(s) with rows in several places of the version")
        if self.bad_ranks:
            problems.append(f"{self.bad_ranks} list(s) with ranks not 1..n")
        if self.dup_lists:
            problems.append(f"{self.dup_lists} list(s) repeat a video")
        if self.too_long:
            problems.append(f"lists longer than {self.top_n}")
        if previous_rows and self.rows < min_row_ratio * previous_rows:
            problems.append(
                f"{self.rows} rows is below {min_row_ratio:.0%} of the live version's {previous_rows}"
            )
        if self.rows == 0:
            problems.append("the new version is empty")
        if problems:
            raise PublishCheckError("refusing to publish: " + "; ".join(problems))


def live_version(conn) -> str | None:
    return conn.execute(sa.select(live.c.version).where(live.c.id == 1)).scalar()


BATCH_ROWS = 50_000  # rows inserted (and checked) at a time
COLUMNS = ["version", "user_key", "rank", "video_id", "score", "model_version", "generated_at"]


def publish(
    engine: sa.Engine,
    recs: pd.DataFrame | Iterable[pd.DataFrame],
    *,
    ds: str,
    model_version: str,
    active_users: set[str],
    top_n: int,
    keep: int = 5,
    min_row_ratio: float = 0.5,
    batch_rows: int = BATCH_ROWS,
) -> dict:
    """Write ``recs`` (user_key, rank, video_id, score) as a new version and make it live atomically.

    ``recs``: one frame, or frames in pieces (each user's rows together, e.g. the recs partition read by
    row groups: :func:`read_partition`) so that a day of any size is published in bounded memory. Rows
    are inserted ``batch_rows`` at a time (COPY on PostgreSQL, ``executemany`` elsewhere) and checked
    as they go, all in one transaction: a version that fails its checks is rolled back, never staged.
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
    version = f"{ds}.{n_same_day + 1:03d}" if n_same_day else ds
    with engine.connect() as conn:  # make the name unique even after pruning
        while conn.execute(sa.select(versions.c.version).where(versions.c.version == version)).scalar():
            n_same_day += 1
            version = f"{ds}.{n_same_day + 1:03d}"
    pieces = [recs.sort_values("user_key", kind="stable")] if isinstance(recs, pd.DataFrame) else recs
    checks = VersionChecks(top_n)
    rows = users = fallback = 0
    # 1. write the new version completely (not visible: the pointer does not name it yet), checking it
    with engine.begin() as conn:
        insert = _inserter(conn)
        for piece in pieces:
            for lo in range(0, len(piece), max(1, batch_rows)):
                batch = piece.iloc[lo : lo + batch_rows][["user_key", "rank", "video_id", "score"]]
                mine = batch["user_key"] != FALLBACK_KEY
                fallback |= int(not mine.all())
                checks.add(batch[mine])
                insert(batch, version, model_version, now)
                rows += len(batch)
        checks.finish(active_users, prev_rows, min_row_ratio)  # raises: the transaction is rolled back
        users = len(checks.users) + fallback
        conn.execute(
            versions.insert().values(
                version=version,
                ds=ds,
                status="staged",
                row_count=rows,
                user_count=users,
                model_version=model_version,
                created_at=now,
            )
        )
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
    log.info("published version %s (%d rows, model %s); pruned %s", version, rows, model_version, pruned)
    return {"version": version, "rows": rows, "users": users, "previous": cur, "pruned": pruned}


def _inserter(conn):
    """``insert(batch, version, model_version, at)``: the batch's rows into ``recommendations`` on
    ``conn``'s transaction - COPY on PostgreSQL (psycopg 3 or psycopg2), ``executemany`` otherwise, with
    the values SQLAlchemy's own insert would bind (the time through the column type's processor)."""
    dialect = conn.engine.dialect
    at_type = recommendations.c.generated_at.type.dialect_impl(dialect)
    at_bind = at_type.bind_processor(dialect)
    cols = ", ".join(COLUMNS)
    if dialect.name == "postgresql" and dialect.driver in ("psycopg", "psycopg2"):
        copy = f"COPY recommendations ({cols}) FROM STDIN WITH (FORMAT csv)"

        def insert_pg(batch: pd.DataFrame, version: str, model_version: str, at) -> None:
            frame = batch.assign(version=version, model_version=model_version, generated_at=at.isoformat())
            data = frame[COLUMNS].to_csv(index=False, header=False).encode()
            raw = conn.connection.driver_connection
            with raw.cursor() as cur:
                if dialect.driver == "psycopg":
                    with cur.copy(copy) as cp:
                        cp.write(data)
                else:
                    cur.copy_expert(copy, io.BytesIO(data))

        return insert_pg
    stmt = f"INSERT INTO recommendations ({cols}) VALUES ({', '.join('?' * len(COLUMNS))})"
    if dialect.paramstyle != "qmark":  # another driver: SQLAlchemy's executemany

        def insert_any(batch: pd.DataFrame, version: str, model_version: str, at) -> None:
            frame = batch.assign(version=version, model_version=model_version, generated_at=at)
            conn.execute(recommendations.insert(), frame[COLUMNS].to_dict("records"))

        return insert_any

    def insert_qmark(batch: pd.DataFrame, version: str, model_version: str, at) -> None:
        at_value = at_bind(at) if at_bind else at
        n = len(batch)
        params = list(
            zip(
                itertools.repeat(version, n),
                batch["user_key"].astype(str).tolist(),
                batch["rank"].astype("int64").tolist(),
                batch["video_id"].astype("int64").tolist(),
                batch["score"].astype("float64").tolist(),
                itertools.repeat(model_version, n),
                itertools.repeat(at_value, n),
                strict=False,
            )
        )
        conn.exec_driver_sql(stmt, params)

    return insert_qmark


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


def read_partition(path, batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """The recs partition's file at ``path`` a few row groups at a time (``batch_rows`` rows)."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    for rb in f.iter_batches(batch_size=batch_rows):
        yield rb.to_pandas()


def publish_day(
    engine: sa.Engine, recs: pd.DataFrame | Iterable[pd.DataFrame], ds, active_users: set[str], cfg
) -> dict:
    """Publish the lists of ``ds`` (the recs zone's frame, or its pieces) with the serving settings
    ``cfg``; the model version is read from the first row."""
    pieces = iter([recs]) if isinstance(recs, pd.DataFrame) else iter(recs)
    first = next(pieces, None)
    while first is not None and first.empty:
        first = next(pieces, None)
    if first is None:
        raise PublishCheckError("refusing to publish: the new version is empty")
    model_version = str(first["model_version"].iloc[0])
    cols = ["user_key", "rank", "video_id", "score"]
    if isinstance(recs, pd.DataFrame):
        stream: pd.DataFrame | Iterable[pd.DataFrame] = recs[cols]
    else:
        stream = (p[cols] for p in itertools.chain([first], pieces))
    return publish(
        engine,
        stream,
        ds=str(ds),
        model_version=model_version,
        active_users=active_users,
        top_n=cfg.top_n,
        keep=cfg.keep_versions,
        min_row_ratio=cfg.min_row_ratio,
    )

"""The read-only application role on a real PostgreSQL: SELECT on live_recommendations, nothing else.

Needs the local server (``RECSYS_TEST_POSTGRES_URL``, default the trust-auth ``test`` database on
127.0.0.1:5432). A fresh database and a role with unique names are created and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid

import pandas as pd
import pytest
from services import service_missing

pytestmark = pytest.mark.postgres

URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture()
def fresh_db():
    """(writer engine on a new database, its URL); the database and the test role are dropped at the end."""
    import sqlalchemy as sa

    admin = sa.create_engine(URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except Exception as exc:  # no server: skip locally, fail under CI=true
        service_missing(f"PostgreSQL not reachable at {URL}: {exc}")
    name = f"recsys_test_{uuid.uuid4().hex[:10]}"
    role = f"recsys_app_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(URL).set(database=name)
    eng = sa.create_engine(url)
    try:
        yield eng, url, role
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def _publish(eng, ds: str, users=("k1", "k2")):
    from recsys.serving import publish as pub

    recs = pd.DataFrame(
        {
            "user_key": [u for u in users for _ in (1, 2)],
            "rank": [1, 2] * len(users),
            "video_id": [10, 11] * len(users),
            "score": [0.9, 0.8] * len(users),
        }
    )
    return pub.publish(eng, recs, ds=ds, model_version="1", active_users=set(users), top_n=10)


def test_app_role_reads_the_live_view_only(fresh_db):
    import sqlalchemy as sa
    from sqlalchemy.exc import DBAPIError

    from recsys.privacy.access import ensure_app_role

    eng, url, role = fresh_db
    _publish(eng, "2026-01-01")
    out = ensure_app_role(eng, role=role, password="p%ss:w'rd")
    assert out["created"] and out["select_on"] == ["live_recommendations"]
    again = ensure_app_role(eng, role=role)  # idempotent
    assert not again["created"]
    _publish(eng, "2026-01-02")  # a publish after the grants keeps them (the view is not recreated)

    app = sa.create_engine(url.set(username=role, password=None))
    try:
        with app.connect() as conn:
            live = conn.execute(
                sa.text(
                    "SELECT user_key, rank, video_id FROM live_recommendations "
                    "WHERE user_key = 'k1' ORDER BY rank"
                )
            ).all()
            assert [tuple(r) for r in live] == [("k1", 1, 10), ("k1", 2, 11)]
            assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "on"

        # the view is a join (not auto-updatable), so PostgreSQL may refuse a write for that reason before
        # checking privileges: the privileges themselves are asserted with has_table_privilege below
        view_writes = [
            "INSERT INTO live_recommendations (user_key, rank, video_id, score, model_version, generated_at, "
            "version) VALUES ('x', 1, 1, 1.0, '1', now(), '2026-01-02')",
            "UPDATE live_recommendations SET score = 0",
            "DELETE FROM live_recommendations",
        ]
        for sql in view_writes:
            with app.connect() as conn:
                conn.execute(sa.text("SET default_transaction_read_only = off"))
                with pytest.raises(DBAPIError, match="permission denied|cannot (insert into|update|delete)"):
                    conn.execute(sa.text(sql))
        denied = [
            "SELECT * FROM recommendations",
            "SELECT * FROM recommendation_versions",
            "SELECT * FROM recommendation_live",
            "UPDATE recommendation_live SET version = 'x'",
            "DELETE FROM recommendations",
            "CREATE TABLE public.mine (x int)",
        ]
        for sql in denied:
            with app.connect() as conn:
                # lift the read-only default so the privileges themselves are what is tested
                conn.execute(sa.text("SET default_transaction_read_only = off"))
                conn.commit()
                with pytest.raises(DBAPIError, match="permission denied"):
                    conn.execute(sa.text(sql))
    finally:
        app.dispose()
    # the privileges as PostgreSQL records them
    with eng.connect() as conn:

        def priv(obj, what):
            return conn.execute(
                sa.text("SELECT has_table_privilege(:r, :o, :p)"), {"r": role, "o": obj, "p": what}
            ).scalar()

        assert priv("live_recommendations", "SELECT")
        for what in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
            assert not priv("live_recommendations", what), what
        for table in ("recommendations", "recommendation_versions", "recommendation_live"):
            for what in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                assert not priv(table, what), (table, what)
    # the writer still reads and writes everything
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM recommendations")).scalar() == 8


def test_app_role_loses_privileges_granted_by_mistake(fresh_db):
    import sqlalchemy as sa
    from sqlalchemy.exc import DBAPIError

    from recsys.privacy.access import ensure_app_role

    eng, url, role = fresh_db
    _publish(eng, "2026-01-01")
    ensure_app_role(eng, role=role)
    with eng.begin() as conn:  # e.g. docker/postgres-init's "GRANT SELECT ON ALL TABLES"
        conn.execute(sa.text(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"'))
    ensure_app_role(eng, role=role)
    app = sa.create_engine(url.set(username=role, password=None))
    try:
        with app.connect() as conn, pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(sa.text("SELECT * FROM recommendation_versions"))
        with app.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM live_recommendations")).scalar() == 4
    finally:
        app.dispose()


def test_ensure_app_role_is_a_no_op_on_sqlite(tmp_path):
    from recsys.privacy.access import ensure_app_role
    from recsys.serving.publish import engine_for

    eng = engine_for(f"sqlite:///{tmp_path / 'r.db'}")
    assert "skipped" in ensure_app_role(eng)
    with pytest.raises(ValueError):
        from recsys.privacy.access import _ident

        _ident('x"; DROP TABLE recommendations; --')


def test_writer_without_role_privileges_resets_grants_of_an_existing_role(fresh_db):
    """As in compose: the writer owns the database but may not manage roles; the admin made the role."""
    import sqlalchemy as sa

    from recsys.privacy.access import ensure_app_role

    _, url, role = fresh_db
    writer = f"recsys_w_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(URL, isolation_level="AUTOCOMMIT")
    name = f"recsys_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE ROLE "{writer}" LOGIN'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}" OWNER "{writer}"'))
        eng = sa.create_engine(url.set(database=name, username=writer, password=None))
        try:
            _publish(eng, "2026-01-01")
            with pytest.raises(PermissionError, match="may not create roles"):
                ensure_app_role(eng, role=role)
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
            out = ensure_app_role(eng, role=role)
            assert not out["created"]
            with eng.connect() as conn:
                q = sa.text("SELECT has_table_privilege(:r, :o, 'SELECT')")
                assert conn.execute(q, {"r": role, "o": "live_recommendations"}).scalar()
                assert not conn.execute(q, {"r": role, "o": "recommendations"}).scalar()
            app = sa.create_engine(url.set(database=name, username=role, password=None))
            try:
                with app.connect() as conn:
                    assert conn.execute(sa.text("SELECT count(*) FROM live_recommendations")).scalar() == 4
            finally:
                app.dispose()
        finally:
            eng.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{writer}"'))
        admin.dispose()

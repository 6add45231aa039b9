"""Access control for the recommendations database (PostgreSQL): a read-only application role.

Applications read recommendations as ``recsys_app``, which may do exactly one thing: ``SELECT`` from the
view ``live_recommendations``. It cannot read the version history (``recommendations``,
``recommendation_versions``, ``recommendation_live``) nor write anything; on top of the privileges its
sessions default to read-only transactions. PostgreSQL checks a view's base tables with the privileges of
the view's owner (the pipeline's writer), so the view works without any privilege on the tables.

:func:`ensure_app_role` is idempotent; the publish stage calls it after each publish to a PostgreSQL URL,
so the grants also hold for tables that were (re)created. SQLite has no roles: there it does nothing.
"""

from __future__ import annotations

import logging
import re

import sqlalchemy as sa

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
TABLES = ("recommendations", "recommendation_versions", "recommendation_live")
VIEW = "live_recommendations"


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a plain lower-case SQL identifier: {name!r}")
    return f'"{name}"'


def ensure_app_role(
    engine: sa.Engine, role: str = "recsys_app", password: str | None = None, schema: str | None = None
) -> dict:
    """Create (if missing) the LOGIN role ``role`` and leave it with SELECT on ``live_recommendations`` only.

    Revokes every privilege of ``role`` on the recsys tables (and the view), grants USAGE on the schema,
    CONNECT on the database and SELECT on the view, and stops the connecting user's future tables from
    being granted to it by default. ``password`` (if given) is set, never logged. Needs a connection that
    owns the tables (the pipeline's writer) and may create roles (else create the role beforehand).
    Returns what it did (no secrets).
    """
    if engine.dialect.name != "postgresql":
        log.info("ensure_app_role: %s has no roles; nothing to do", engine.dialect.name)
        return {"skipped": f"{engine.dialect.name} has no roles"}
    from recsys.serving.publish import ensure_schema

    ensure_schema(engine)
    r = _ident(role)
    with engine.begin() as conn:
        schema = schema or conn.execute(sa.text("SELECT current_schema()")).scalar()
        s = _ident(schema)
        db = conn.execute(sa.text("SELECT current_database()")).scalar()
        exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
        # the pipeline's writer (e.g. `recsys` in compose) may not manage roles: then the role must exist
        # already (docker/postgres-init creates it) and only the privileges are (re)set
        can_manage = conn.execute(
            sa.text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        ).scalar()
        if not exists and not can_manage:
            raise PermissionError(
                f"role {role} does not exist and the connected user may not create roles; "
                "create it as an administrator first"
            )
        if not exists:
            conn.execute(sa.text(f"CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"))
        if can_manage:
            if password is not None:
                lit = sa.literal(password, sa.String).compile(
                    dialect=engine.dialect, compile_kwargs={"literal_binds": True}
                )
                sql = f"ALTER ROLE {r} WITH LOGIN PASSWORD {lit}"
                conn.execution_options(no_parameters=True).exec_driver_sql(sql)
            conn.execute(sa.text(f"ALTER ROLE {r} SET default_transaction_read_only = on"))
        elif password is not None:
            raise PermissionError("the connected user may not change role passwords")
        conn.execute(sa.text(f'GRANT CONNECT ON DATABASE "{db}" TO {r}'))
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {s} TO {r}"))
        for name in (*TABLES, VIEW):
            conn.execute(sa.text(f"REVOKE ALL ON {s}.{_ident(name)} FROM {r}"))
        conn.execute(sa.text(f"GRANT SELECT ON {s}.{_ident(VIEW)} TO {r}"))
        # a default privilege (e.g. docker/postgres-init) would hand every new table to the role again
        conn.execute(sa.text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} REVOKE ALL ON TABLES FROM {r}"))
    log.info("role %s: SELECT on %s.%s only (created: %s)", role, schema, VIEW, not exists)
    return {
        "role": role,
        "schema": schema,
        "database": db,
        "created": not exists,
        "select_on": [VIEW],
        "revoked_on": list(TABLES),
    }

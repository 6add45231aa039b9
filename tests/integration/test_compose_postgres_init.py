"""The PostgreSQL init scripts of the compose stack (docker/postgres-init), run as the postgres image
runs them, in a throwaway cluster: databases, roles, and a read-only app role."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from compose_helpers import (
    PG_INIT,
)
from services import service_missing

# --------------------------------------------------------------------------------------------------
# (g) PostgreSQL init scripts, in a throwaway cluster
# --------------------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for path in candidates:
        if int(path.parent.name) >= 15 and (path / "initdb").exists():
            return path
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


PASSWORDS = {  # awkward on purpose: quoting must hold
    "AIRFLOW_DB_PASSWORD": "air'flow pw",
    "MLFLOW_DB_PASSWORD": "ml\\flow;pw",
    "RECSYS_DB_PASSWORD": "recsys-writer-pw",
    "RECSYS_APP_PASSWORD": 'app"pw$1',
}


@pytest.fixture
def pg_cluster():
    """A fresh PostgreSQL cluster listening on a private socket directory only (no TCP), removed after."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        service_missing("PostgreSQL 15+ server binaries (initdb, pg_ctl) not found")
    as_server = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            service_missing("running as root without runuser: cannot start a PostgreSQL server")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            service_missing("running as root and there is no 'postgres' user to run the server")
        as_server = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="recsys-pginit-"))
    data = base / "data"
    pg_ctl = [*as_server, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        if as_server:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        initdb = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        subprocess.run([*as_server, str(bin_dir / "initdb"), "-D", str(data), *initdb], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        # The superuser connects freely (as the entrypoint does over the socket); others by password.
        (data / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        options = f"-c listen_addresses='' -c unix_socket_directories={base} -c fsync=off"
        subprocess.run([*pg_ctl, "-o", options, "-w", "-t", "60", "-l", str(base / "server.log"), "start"],
                       check=True, capture_output=True, timeout=90)  # fmt: skip
        yield {"psql": str(bin_dir / "psql") if (bin_dir / "psql").exists() else "psql", "host": str(base)}
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _psql(
    cluster, sql: str | None = None, *, user="postgres", db="postgres", password=None, file=None, env=None
) -> subprocess.CompletedProcess:
    args = [cluster["psql"], "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-X", "-At",
            "-h", cluster["host"], "-U", user, "-d", db]  # fmt: skip
    args += ["-f", str(file)] if file else ["-c", sql]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    run_env.update(env or {})
    if password is not None:
        run_env["PGPASSWORD"] = password
    return subprocess.run(args, capture_output=True, text=True, env=run_env, timeout=60)


def test_postgres_init_scripts_create_databases_and_a_read_only_app_role(pg_cluster):
    scripts = sorted(PG_INIT.glob("*.sql"))
    assert [s.name for s in scripts] == ["01-databases.sql", "02-recsys-readonly.sql"]

    # A missing password stops the scripts before anything is created, naming the variable.
    partial = {k: v for k, v in PASSWORDS.items() if k != "RECSYS_APP_PASSWORD"}
    failed = _psql(pg_cluster, file=scripts[0], env=partial)
    assert failed.returncode != 0 and "RECSYS_APP_PASSWORD" in failed.stderr
    assert _psql(pg_cluster, "SELECT count(*) FROM pg_roles WHERE rolname = 'airflow'").stdout.strip() == "0"

    for script in scripts:  # as docker-entrypoint.sh runs them: psql -v ON_ERROR_STOP=1 -f, superuser
        result = _psql(pg_cluster, file=script, env=PASSWORDS)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"

    def as_role(user, db, sql, password=None):
        role_password = {
            "airflow": "AIRFLOW_DB_PASSWORD",
            "mlflow": "MLFLOW_DB_PASSWORD",
            "recsys": "RECSYS_DB_PASSWORD",
            "recsys_app": "RECSYS_APP_PASSWORD",
        }[user]
        return _psql(
            pg_cluster,
            sql,
            user=user,
            db=db,
            password=PASSWORDS[role_password] if password is None else password,
        )

    # Each service owns its database.
    for user in ("airflow", "mlflow"):
        result = as_role(
            user, user, "CREATE TABLE t (x int); INSERT INTO t VALUES (1); SELECT count(*) FROM t"
        )
        assert result.returncode == 0 and result.stdout.split() == [
            "CREATE",
            "TABLE",
            "INSERT",
            "0",
            "1",
            "1",
        ], result.stdout + result.stderr
    writer = as_role(
        "recsys",
        "recsys",
        """
        CREATE TABLE recommendations (version text, user_key text, rank int, video_id text, score real);
        INSERT INTO recommendations VALUES ('2026-01-01', 'k1', 1, 'v9', 0.9);
        CREATE VIEW live_recommendations AS SELECT * FROM recommendations;
    """,
    )
    assert writer.returncode == 0, writer.stderr

    # Nothing is readable until the publish step grants the live view (ensure_app_role, as the owner) ...
    before = as_role("recsys_app", "recsys", "SELECT video_id FROM live_recommendations")
    assert before.returncode != 0 and "permission denied" in before.stderr, before.stdout
    grant = as_role("recsys", "recsys", "GRANT SELECT ON live_recommendations TO recsys_app")
    assert grant.returncode == 0, grant.stderr
    # ... then the app role reads the live view, and nothing else.
    read = as_role("recsys_app", "recsys", "SELECT video_id FROM live_recommendations WHERE user_key = 'k1'")
    assert read.returncode == 0 and read.stdout.strip() == "v9", read.stderr
    for sql in (
        "SELECT * FROM recommendations",
        "INSERT INTO recommendations VALUES ('x', 'k2', 1, 'v1', 0.1)",
        "DELETE FROM recommendations",
        "CREATE TABLE mine (x int)",
    ):
        denied = as_role("recsys_app", "recsys", sql)
        assert denied.returncode != 0, sql
        assert "permission denied" in denied.stderr or "read-only transaction" in denied.stderr, denied.stderr
    for db in ("airflow", "mlflow"):
        assert as_role("recsys_app", db, "SELECT 1").returncode != 0, f"recsys_app reached {db}"
    assert as_role("airflow", "recsys", "SELECT 1").returncode != 0
    # Passwords are the ones from the environment.
    assert as_role("recsys_app", "recsys", "SELECT 1", password="wrong").returncode != 0

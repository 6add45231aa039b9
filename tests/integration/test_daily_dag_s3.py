"""recsys_daily under Airflow (``airflow dags test``) with the lake on the test S3 server
(``RECSYS_LAKE_URL=s3://...``, SeaweedFS on loopback): two simulated days end to end, every zone in the
bucket, none on local disk; training reads the features through the local cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from s3_server import s3_server  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(2)]


def _env(root: Path, lake_url: str, s3_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "AIRFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root / 'airflow' / 'airflow.db'}",
            "RECSYS_DATA_DIR": str(root / "data"),
            "RECSYS_LAKE_URL": lake_url,
            **s3_env,
            "RECSYS_PRIVACY__PSEUDONYM_KEY": "integration-" + os.urandom(16).hex(),
            "RECSYS_PRIVACY__ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "RECSYS_SIMULATOR__N_USERS": "200",
            "RECSYS_SIMULATOR__N_VIDEOS": "200",
            "RECSYS_TRAIN__EPOCHS": "2",
            "RECSYS_EVALUATE__FLOOR_AUC": '{"click": 0.5}',
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "GX_ANALYTICS_ENABLED": "False",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    return env


def _airflow(env, root, *args, check=True):
    return subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, check=check, cwd=root)


def _state(env, root, ds: date) -> str:
    out = _airflow(env, root, "dags", "list-runs", "recsys_daily", "-o", "json")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    runs = [r for r in json.loads(lines[-1]) if str(r["logical_date"]).startswith(ds.isoformat())]
    return max(runs, key=lambda r: r["run_after"])["state"] if runs else "missing"


def test_the_daily_dag_runs_with_the_lake_on_s3(s3_server, tmp_path):  # noqa: F811
    where = s3_server.new_prefix()
    env = _env(tmp_path, f"s3://{where}", s3_server.env())
    (tmp_path / "airflow").mkdir()
    _airflow(env, tmp_path, "db", "migrate")
    for ds in DAYS:
        out = _airflow(env, tmp_path, "dags", "test", "recsys_daily", ds.isoformat(), check=False)
        state = _state(env, tmp_path, ds)
        assert state == "success", f"recsys_daily {ds} ended {state}:\n{(out.stdout + out.stderr)[-4000:]}"

    bucket, prefix = where.split("/", 1)
    c = s3_server.client()
    keys = [
        o["Key"][len(prefix) + 1 :]
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        for o in page.get("Contents", [])
    ]
    for ds in DAYS:
        for part in (
            "landing/events",
            "raw/events",
            "clean/interactions",
            "clean/users",
            "features/examples",
        ):
            assert f"{part}/ds={ds}/_manifest.json" in keys, (part, ds)
    data = tmp_path / "data"
    assert not any((data / z).exists() for z in ("landing", "raw", "quarantine", "clean", "features", "recs"))
    assert any((data / "cache" / "lake" / "features" / "examples").rglob("train.parquet"))

    import sqlalchemy as sa

    with sa.create_engine(f"sqlite:///{(data / 'recsys.db').resolve()}").connect() as conn:
        versions = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT version FROM recommendations"))}
    assert str(DAYS[-1]) in versions

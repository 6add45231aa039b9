"""A real multi-day run of recsys_daily under Airflow (``airflow dags test``), shared by integration tests.

The run happens once per test session in a temporary folder: its own Airflow home (SQLite), its own lake,
MLflow store and recommendations DB, secrets from the environment (not demo mode).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]


@dataclass
class PipelineRun:
    root: Path
    env: dict[str, str]
    days: list[date]
    logs: dict[str, str]

    @property
    def data_dir(self) -> Path:
        return Path(self.env["RECSYS_DATA_DIR"])

    def settings(self):
        from recsys.config import Settings

        old = dict(os.environ)
        os.environ.update(self.env)
        try:
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(old)

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, check=check, cwd=self.root
        )

    def run_day(self, ds: date, conf: dict | None = None) -> str:
        args = ["dags", "test", "recsys_daily", ds.isoformat()]
        if conf:
            args += ["--conf", json.dumps(conf)]
        out = self.airflow(*args, check=False)
        self.logs[f"{ds}-{len(self.logs)}"] = out.stdout + out.stderr
        return dag_state(self, "recsys_daily", ds)


def dag_state(run: PipelineRun, dag_id: str, ds: date) -> str:
    out = run.airflow("dags", "list-runs", dag_id, "-o", "json")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    runs = [r for r in json.loads(lines[-1]) if str(r["logical_date"]).startswith(ds.isoformat())]
    return max(runs, key=lambda r: r["run_after"])["state"] if runs else "missing"


def pipeline_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "AIRFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root / 'airflow' / 'airflow.db'}",
            "RECSYS_DATA_DIR": str(root / "data"),
            "RECSYS_PRIVACY__PSEUDONYM_KEY": "integration-" + os.urandom(16).hex(),
            "RECSYS_PRIVACY__ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "RECSYS_SIMULATOR__N_USERS": "300",
            "RECSYS_SIMULATOR__N_VIDEOS": "300",
            "RECSYS_TRAIN__EPOCHS": "6",
            # The suite's tiny world (300 users and videos, 1-3 days, 6 epochs) is below what the shipped
            # 0.55 click-AUC floor is set for: with the shipped gate, seed 1 blessed no model on any of its
            # 3 days (click AUC 0.434, 0.543, 0.565; bench/gate_floor.py, README "Development").
            "RECSYS_EVALUATE__FLOOR_AUC": '{"click": 0.5}',
            # ... and so is the popularity check: since video_popularity is leave-one-out on training rows
            # (issue 18), the model's day-3 click AUC on this world trails popularity's by 0.015-0.033 on
            # seeds 42 and 1 (0.561 vs 0.594, 0.578 vs 0.593; with the leaky feature it led: 0.611, 0.594),
            # while its true-utility NDCG@10 still leads (0.581 vs 0.516, 0.490 vs 0.346). The suite needs a
            # champion to test what follows it; tests/integration/test_gate.py keeps the shipped checks.
            "RECSYS_EVALUATE__MIN_MARGIN_OVER_POPULARITY": "-0.05",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "GX_ANALYTICS_ENABLED": "False",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    return env


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> PipelineRun:
    root = tmp_path_factory.mktemp("pipeline")
    run = PipelineRun(root, pipeline_env(root), DAYS, {})
    (root / "airflow").mkdir()
    run.airflow("db", "migrate")
    for ds in DAYS:
        state = run.run_day(ds)
        assert state == "success", f"recsys_daily {ds} ended {state}:\n{list(run.logs.values())[-1][-4000:]}"
    return run


def copy_data_dir(src: Path, dest: Path) -> Path:
    """A private copy of a run's data folder whose MLflow store points at the copy.

    MLflow keeps absolute artifact locations in its database: without the rewrite, the copy's registry
    would read, write and delete the original's artifacts (an erasure test would damage the shared run).
    """
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*.tmp-*"))
    db = dest / "mlflow" / "mlflow.db"
    if db.exists():
        old, new = str(Path(src).resolve()), str(Path(dest).resolve())
        con = sqlite3.connect(db)
        try:
            with con:
                tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for t in tables:
                    cols = [
                        r[1]
                        for r in con.execute(f'PRAGMA table_info("{t}")')
                        if any(x in (r[2] or "").upper() for x in ("CHAR", "TEXT", "CLOB"))
                    ]
                    for c in cols:
                        con.execute(
                            f'UPDATE "{t}" SET "{c}" = replace("{c}", ?, ?) WHERE instr("{c}", ?) > 0',
                            (old, new, old),
                        )
        finally:
            con.close()
    return dest


@pytest.fixture(scope="session")
def data_dir_copier():
    """:func:`copy_data_dir`, for tests that erase or retrain in a copy of the shared run."""
    return copy_data_dir

"""recsys_monitor under Airflow: the typed ``ds`` param, and a fired rule becomes a queued recsys_retrain run.

Runs on a copy of the session pipeline's data (the monitor writes its history and quality snapshot) with
its own Airflow home, so the other tests of the session see the pipeline as they expect.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def test_monitor_fires_a_retrain_run_with_its_reasons(pipeline_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(pipeline_run.data_dir, data)
    env = dict(pipeline_run.env)
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}",
            "RECSYS_DATA_DIR": str(data),
            # any champion is older than -1 days: the model-age rule fires
            "RECSYS_MONITORING__MAX_MODEL_AGE_DAYS": "-1",
        }
    )
    (tmp_path / "airflow").mkdir()

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [AIRFLOW, *args], env=env, capture_output=True, text=True, cwd=pipeline_run.root
        )

    assert airflow("db", "migrate").returncode == 0
    ds = pipeline_run.days[-1].isoformat()
    # the logical date differs from the day monitored: the param, not the logical date, names the day
    out = airflow("dags", "test", "recsys_monitor", "2026-03-01", "--conf", json.dumps({"ds": ds}))
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]

    runs = json.loads(
        [
            ln
            for ln in airflow("dags", "list-runs", "recsys_retrain", "-o", "json").stdout.splitlines()
            if ln.startswith("[")
        ][-1]
    )
    assert len(runs) == 1, f"{runs}\n--- recsys_monitor log ---\n{log[-6000:]}"
    (run,) = runs
    assert str(run["logical_date"]).startswith(ds), run
    assert run["state"] == "queued", run
    # `dags list-runs` does not print a run's conf: read it from the metadata database
    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as db:
        (raw,) = db.execute("SELECT conf FROM dag_run WHERE dag_id = 'recsys_retrain'").fetchone()
    conf = json.loads(raw)
    assert conf["ds"] == ds and conf["trigger"] == "monitor", conf
    assert conf["reasons"] and all("days old" in r for r in conf["reasons"]), conf  # a list, as sent

    # a conf the params refuse never starts a run
    bad = airflow("dags", "test", "recsys_monitor", "2026-03-02", "--conf", json.dumps({"ds": "yesterday"}))
    assert bad.returncode != 0
    assert "ds" in (bad.stdout + bad.stderr)
    listed = airflow("dags", "list-runs", "recsys_monitor", "-o", "json").stdout.splitlines()
    monitor_runs = json.loads([ln for ln in listed if ln.startswith("[")][-1])
    assert [str(r["logical_date"])[:10] for r in monitor_runs] == ["2026-03-01"], monitor_runs

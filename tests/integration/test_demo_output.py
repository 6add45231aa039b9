"""``recsys demo`` reads like a progress report, and the Airflow UI tells the truth afterwards.

A 2-day demo on small settings in its own Airflow home: the output stays within the line budget that
keeps the 4-day ``make demo`` under 80 lines (fixed lines + one line per task per day + the links), names
every task of every day with its figure, carries no task log or Great Expectations line, and ends with
links that exist. Airflow's metadata DB then holds runs stamped with the time they really ran (not their
logical date) and a monitor run per day.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from dag_tasks import DAILY_TASKS


def _pipeline_env(root: Path) -> dict[str, str]:
    """The integration runs' environment (``conftest.pipeline_env``: own home, lake, keys; small world)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_integration_env", Path(__file__).with_name("conftest.py"))
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return module.pipeline_env(root)


pytestmark = pytest.mark.slow

# per day: a rule, one line per daily task, the monitor's line
PER_DAY = 1 + len(DAILY_TASKS) + 1
# the "Airflow up" line; the summary: rule, metrics, gate, registry, live table, a user's list; 5 links;
# the catalog ranking: a heading and one line per scorer (model, champion, 4 baselines)
FIXED = 1 + 6 + 5 + 7
DAYS = [date(2026, 1, 1), date(2026, 1, 2)]


def budget(days: int) -> int:
    return FIXED + PER_DAY * days


def test_the_4_day_demo_fits_in_80_lines():
    assert budget(4) < 80


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    env = _pipeline_env(root)
    env.update(RECSYS_TRAIN__EPOCHS="2", COLUMNS="120")
    (root / "airflow").mkdir()
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    started = datetime.now(UTC)
    recsys = str(Path(sys.executable).with_name("recsys"))
    out = subprocess.run(
        [recsys, "demo", "--days", str(len(DAYS)), "--start", DAYS[0].isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return out, env, started


def test_demo_output_is_a_progress_report(demo):
    out, env, _ = demo
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.rstrip("\n").splitlines()
    print(out.stdout)
    assert len(lines) <= budget(len(DAYS)), f"{len(lines)} lines > {budget(len(DAYS))}"
    text = out.stdout
    for ds in DAYS:
        day = text.split(str(ds), 1)[1]
        for task in DAILY_TASKS:  # one line per task, with its duration
            assert re.search(rf"^\s+{re.escape(task)}\s+\d+\.\ds\s+\S", day, re.M), (ds, task)
        assert re.search(r"^\s+monitor\s+\d+\.\ds\s+(ctr |no recommended impressions yet)", day, re.M), ds
    assert re.search(r"ingest\.validate\s+\d+\.\ds\s+[\d,]+ rows in, [\d,]+ quarantined", text)
    assert re.search(r"model\.train\s+\d+\.\ds\s+\d+ epochs, best val loss \d\.\d{4}", text)
    assert re.search(r"model\.evaluate\s+\d+\.\ds\s+gate: (BLESSED|not blessed)", text)
    assert re.search(r"serve\.publish\s+\d+\.\ds\s+[\d,]+ rows published", text)
    # no task log, no Great Expectations or TensorFlow chatter in the terminal
    assert "great_expectations" not in text.lower() and "Calculating Metrics" not in text
    assert "[info" not in text and "INFO" not in text
    links = {}
    for line in lines[-5:]:
        name, where = re.match(r"^\s+(\S.*?)\s{2,}(\S+)", line).groups()
        links[name] = where
    assert set(links) == {"evaluation report", "learning curves", "MLflow run", "Data Docs", "Airflow runs"}
    for name in ("evaluation report", "learning curves", "Data Docs"):
        assert Path(links[name]).is_file(), (name, links[name])
    assert links["MLflow run"].startswith("http://localhost:5000/#/experiments/")


def test_airflow_records_the_real_start_of_every_run_and_the_monitor_runs(demo):
    out, env, started = demo
    assert out.returncode == 0
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT dag_id, logical_date, start_date, end_date, state FROM dag_run").fetchall()
    runs = {(dag_id, logical[:10]): (start, end, state) for dag_id, logical, start, end, state in rows}
    for ds in DAYS:
        for dag_id in ("recsys_daily", "recsys_monitor"):
            start, end, state = runs[(dag_id, ds.isoformat())]
            assert state == "success"
            t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
            t1 = datetime.fromisoformat(end).replace(tzinfo=UTC)
            # started when the demo ran it, not on its logical date; lasted minutes, not months
            assert started - timedelta(seconds=5) <= t0 <= t1 <= datetime.now(UTC), (dag_id, ds, start, end)
            assert t1 - t0 < timedelta(minutes=30), (dag_id, ds)
    # task logs are files under the Airflow home
    logs = Path(env["AIRFLOW_HOME"]) / "logs" / "dag_id=recsys_daily"
    assert len(list(logs.glob("run_id=*/task_id=ingest.validate/attempt=*.log"))) == len(DAYS)


def test_a_failed_task_prints_its_log_tail_and_path(tmp_path):
    """No encryption key: ``land`` fails at once (a permanent error); the demo shows why and where."""
    env = _pipeline_env(tmp_path)
    env.pop("RECSYS_PRIVACY__ENCRYPTION_KEYS")
    env["COLUMNS"] = "200"
    (tmp_path / "airflow").mkdir()
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    recsys = str(Path(sys.executable).with_name("recsys"))
    out = subprocess.run(
        [recsys, "demo", "--days", "1"], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert re.search(r"^\s+ingest\.land\s+\d+\.\ds\s+FAILED$", out.stdout, re.M), out.stdout
    (path,) = re.findall(r"last lines of (\S+\.log):", out.stdout)
    assert Path(path).is_file() and Path(path).is_relative_to(tmp_path / "airflow" / "logs")
    assert "KeyConfigError: no encryption key" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    assert len(out.stdout.splitlines()) < 40

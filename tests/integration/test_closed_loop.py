"""The closed loop under real Airflow (short version of ``make demo-drift``).

Seven simulated days; a preference shift on day 5. Per day ``recsys_daily`` then ``recsys_monitor`` run with
``airflow dags test``; the monitor's ``TriggerDagRunOperator`` queues a ``recsys_retrain`` run, which the
driver (``recsys.loop``) executes with ``airflow dags test recsys_retrain <day> --conf <its conf>``. The
daily DAG trains on day 1 only (``train_every_days`` 100), so any later model comes from the retrain.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.closed_loop,
    pytest.mark.timeout(5400),
]  # ~15 Airflow runs; minutes on 2 busy cores


def _pipeline_env(root: Path) -> dict[str, str]:
    """The integration suite's isolated environment (tests/integration/conftest.py)."""
    spec = importlib.util.spec_from_file_location(
        "_integration_conftest", Path(__file__).with_name("conftest.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass needs the module registered
    spec.loader.exec_module(module)
    return module.pipeline_env(root)


START = date(2026, 1, 1)
DAYS = 7
DRIFT = START + timedelta(days=4)  # the daily DAG needs a day or two before a model beats popularity


@pytest.fixture(scope="module")
def closed_loop(tmp_path_factory):
    from recsys.loop import AirflowLoop

    root = tmp_path_factory.mktemp("closed-loop")
    env = _pipeline_env(root)
    env.update(
        {
            "RECSYS_TRAIN__TRAIN_EVERY_DAYS": "100",
            # ~9k impressions a day, so a model trained on the one degraded day can pass the gate
            "RECSYS_SIMULATOR__SESSIONS_PER_ACTIVE_USER": "5",
            "RECSYS_SIMULATOR__DRIFT": json.dumps(
                [{"day": str(DRIFT), "kind": "preference_shift", "strength": 1.0}]
            ),
        }
    )
    (root / "airflow").mkdir()
    loop = AirflowLoop(env, cwd=root, echo=None)
    loop.airflow("db", "migrate")
    records = loop.run(START, DAYS)
    return loop, {r.ds: r for r in records}


def test_retrain_fired_exactly_once_on_the_drift_day_with_the_reason(closed_loop):
    loop, days = closed_loop
    fired = [ds for ds, r in days.items() if r.retrain_fired]
    assert fired == [str(DRIFT)], {ds: (r.ctr, r.reasons) for ds, r in days.items()}
    conf = days[str(DRIFT)].retrain_conf
    assert conf["trigger"] == "monitor" and conf["ds"] == str(DRIFT)
    assert isinstance(conf["reasons"], list) and any("ctr dropped" in r for r in conf["reasons"])
    # the run Airflow executed for the retrain is the one the monitor queued: nothing is left queued
    retrains = loop.runs("recsys_retrain")
    assert [r["state"] for r in retrains] == ["success"]
    assert retrains[0]["conf"]["reasons"] == conf["reasons"]
    # later days: the cooldown holds further retrains back (or nothing fires at all)
    for ds in (str(DRIFT + timedelta(days=i)) for i in range(1, DAYS - 4)):
        assert not days[ds].retrain_fired
        assert all("cooldown" in r for r in days[ds].reasons[-1:]) or not days[ds].reasons


def test_the_daily_dag_trained_only_until_there_was_a_champion(closed_loop):
    _, days = closed_loop
    trained = [ds for ds, r in days.items() if r.trained]
    assert trained and trained[0] == str(START) and max(trained) < str(DRIFT - timedelta(days=1)), trained


def test_retrain_run_carries_trigger_and_reasons_in_mlflow(closed_loop):
    import mlflow

    from recsys.tracking import configure

    loop, days = closed_loop
    train = json.loads((loop.data_dir / "reports" / "runs" / f"ds={DRIFT}" / "train.json").read_text())
    old = dict(os.environ)
    try:
        os.environ.update(loop.env)
        from recsys.config import Settings

        configure(Settings())
        tags = mlflow.MlflowClient().get_run(train["run_id"]).data.tags
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert tags["trigger"] == "monitor"
    assert "ctr dropped" in tags["trigger.reasons"]
    assert tags["trigger.window_days"] == str(days[str(DRIFT)].retrain_conf["window_days"])


def test_new_model_promoted_and_ctr_recovers(closed_loop):
    _, days = closed_loop
    drift = days[str(DRIFT)]
    before = [days[str(DRIFT - timedelta(days=i))] for i in (1, 2)]
    after = [days[str(DRIFT + timedelta(days=i))] for i in range(1, DAYS - 4)]
    assert drift.retrain_blessed, "the retrained model was not blessed"
    assert drift.champion != drift.served_model, "no new champion after the retrain"
    assert all(r.served_model == drift.champion for r in after), (
        "the next days are not served by the new model"
    )
    assert all(r.ctr < min(b.ctr for b in before) for r in [drift]), "the drift did not lower the CTR"
    for r in after:
        assert r.ctr > drift.ctr, f"CTR on {r.ds} ({r.ctr:.4f}) not above the degraded day ({drift.ctr:.4f})"

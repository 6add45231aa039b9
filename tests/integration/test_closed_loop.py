"""The closed loop under real Airflow (short version of ``make demo-drift``).

Seven simulated days; a preference shift on day 4 (users take on other users' tastes). Per day
``recsys_daily`` then ``recsys_monitor`` run with ``airflow dags test``; the monitor's
``TriggerDagRunOperator`` queues a ``recsys_retrain`` run, which the driver (``recsys.sim.loop``)
executes with
``airflow dags test recsys_retrain <day> --conf <its conf>``. The daily DAG trains only until a model is
blessed (``train_every_days`` 100), so any later model comes from the retrain.

Recovery: on every day after the retrain the online CTR is above what the demoted (degraded) model earns
on the same day, replayed in the simulator with its lists (``recsys.sim.replay.replay_ctr``: same users,
sessions
and random draws), and on the first day it is above the degraded CTR of the day the retrain fired. The
paired comparison is the fair one for the later days: any model left in place loses CTR day by day in this
simulator (users click its best picks, and watched videos are not recommended again), the new one
included, so its CTR can fall back to the degraded day's level while still well above the demoted model's.

Calibration: on the day the retrain fired, the drifted model's predicted/observed click ratio is above
every day before the drift. The retrained model's ratio is not compared (see the test).

Scenario settings, and why:

- 40% of sessions explore (the default is 20%): the retrain learns from the degraded days alone, and with
  less exploration they say too little about the new tastes (measured in-process: the retrained model then
  beat the demoted one on the next day, but not the degraded day).
- A model left in place loses CTR day by day here (from its first day to its second: 7-10% in 5 runs).
  Measured against that first day alone, a loss above 10% started a "sustained drop" on the day before
  the drift, and the retrain learnt from that day too (1 of 6 runs; on a 2000-video world 2 of 6, and
  once the retrain then failed the gate while the cooldown held the next one back). Since then a CTR rule
  needs ``min_baseline_days`` (2).
- The default catalog of 500 videos. On 2000 the daily loss was smaller, but offline click AUC hardly
  told models apart (about 0.59 for champion, challenger and popularity alike) and the gate refused the
  retrained model in 2 of 9 runs; on 500 it blessed it in all 10.
- The simulator's and the model's default sizes, not the integration suite's smaller ones.

The run is deterministic in its inputs: a fixed seed and a pseudonym key derived from it
(``recsys.sim.drift_scenario``; the key orders the users' vocabulary, so it decides which embedding row each
user gets). One green run is one sample of the scenario: how often it recovers, over seeds, is measured by
``bench/closed_loop.py`` (``bench/results/closed_loop.json``), not asserted here. Across seeds the retrain
fires on the drift day (a one-day drop, window 1) or later (window 2), and the first model may fail the
gate (popularity serves a day); the assertions hold on each path.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from recsys.sim.drift_scenario import DAYS, DEFAULT_SEED, DRIFT, START, scenario_env

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


@pytest.fixture(scope="module")
def closed_loop(tmp_path_factory):
    from recsys.sim.loop import AirflowLoop, format_timeline

    root = tmp_path_factory.mktemp("closed-loop")
    # the scenario with a fixed seed and pseudonym key: the same inputs every run (recsys.sim.drift_scenario)
    env = scenario_env(_pipeline_env(root), DEFAULT_SEED)
    (root / "airflow").mkdir()
    loop = AirflowLoop(env, cwd=root, echo=None)
    loop.airflow("db", "migrate")
    # two days after the retrain: its lists are live from the first; the cooldown covers both
    records = loop.run(START, DAYS, days_after_retrain=2)
    # the timeline in the test output (shown when a test fails) and next to the run's data
    timeline = format_timeline(records, [str(DRIFT)])
    (root / "timeline.txt").write_text(timeline + "\n")
    (root / "records.json").write_text(json.dumps([dataclasses.asdict(r) for r in records], indent=1))
    print(timeline)
    return loop, {r.ds: r for r in records}, timeline


def _fired(days) -> list[str]:
    return [ds for ds, r in days.items() if r.retrain_fired]


def test_retrain_fired_exactly_once_after_the_drift_with_the_reason(closed_loop):
    loop, days, _ = closed_loop
    fired = _fired(days)
    # one drift, one retrain: on the drift day (a drop above ctr_drop) or soon after (a sustained drop)
    assert len(fired) == 1 and str(DRIFT) <= fired[0] <= str(DRIFT + timedelta(days=2)), {
        ds: (r.ctr, r.reasons) for ds, r in days.items()
    }
    conf = days[fired[0]].retrain_conf
    assert conf["trigger"] == "monitor" and conf["ds"] == fired[0]
    assert isinstance(conf["reasons"], list) and any("ctr dropped" in r for r in conf["reasons"])
    # the fresh window is the monitor's count of degraded days
    monitor = loop.catalog.runs.read(fired[0], "monitor")
    assert conf["window_days"] == monitor["window_days"] >= 1
    # the run Airflow executed for the retrain is the one the monitor queued: nothing is left queued
    retrains = loop.runs("recsys_retrain")
    assert [r["state"] for r in retrains] == ["success"]
    assert retrains[0]["conf"]["reasons"] == conf["reasons"]
    # later days: the new model starts a new baseline, and the cooldown would hold a retrain back anyway
    for ds in (d for d in days if d > fired[0]):
        assert not days[ds].retrain_fired
        assert all("cooldown" in r for r in days[ds].reasons[-1:]) or not days[ds].reasons


def test_the_daily_dag_trained_only_until_there_was_a_champion(closed_loop):
    _, days, _ = closed_loop
    trained = [ds for ds, r in days.items() if r.trained]
    assert trained and trained[0] == str(START) and max(trained) < str(DRIFT - timedelta(days=1)), trained


def test_retrain_run_carries_trigger_and_reasons_in_mlflow(closed_loop):
    import mlflow

    from recsys.tracking import configure

    loop, days, _ = closed_loop
    (fired,) = _fired(days)
    train = loop.catalog.runs.read(fired, "train")
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
    assert tags["trigger.window_days"] == str(days[fired].retrain_conf["window_days"])


def test_drift_lowers_the_ctr_and_the_promoted_model_recovers_it(closed_loop):
    _, days, timeline = closed_loop
    (fired,) = _fired(days)
    retrain = days[fired]
    old_model = days[str(DRIFT)].served_model
    before = [r for ds, r in days.items() if ds < str(DRIFT) and r.served_model == old_model]
    degraded = [r for ds, r in days.items() if str(DRIFT) <= ds <= fired]
    after = [r for ds, r in days.items() if ds > fired]
    assert before and after
    assert all(r.ctr < min(b.ctr for b in before) for r in degraded), (
        f"the drift did not lower the CTR\n{timeline}"
    )
    assert retrain.retrain_blessed, "the retrained model was not blessed"
    assert retrain.champion != retrain.served_model, "no new champion after the retrain"
    assert all(r.served_model == retrain.champion for r in after), "the next days are not served by it"
    # the simulator's oracle view: the share of the best lists' expected clicks that the served ones miss
    assert all(r.regret_ratio is not None for r in before + degraded + after)
    assert after[0].regret_ratio < retrain.regret_ratio, timeline
    # calibration as a drift signal: on the day the retrain fired, the drifted model over-predicts its
    # picks more than on any day before the drift. (No claim on the retrained model's ratio: trained on a
    # day or two its scores are noisier, and its lists select its upward errors; to compare two models,
    # the paired exploration AUC in the timeline is the figure.)
    assert all(r.pred_obs_ratio is not None for r in before + degraded + after)
    assert retrain.pred_obs_ratio > max(b.pred_obs_ratio for b in before), timeline
    # the ranking figures on the exploration impressions are recorded every day a model served (they are
    # shown, not asserted on: the paired AUC gap after the retrain was 0.006-0.046 in 3 runs,
    # too close to the noise of ~5k impressions for a pass/fail line; test_daily_dag checks the figures)
    assert all(r.exploration_auc is not None for r in before + degraded + after)
    assert all(r.exploration_gauc is not None for r in before + degraded + after)
    # online: the day after the retrain is above the degraded CTR of the day it fired
    assert after[0].ctr > retrain.ctr, (
        f"{after[0].ds}: CTR {after[0].ctr:.4f} not above the degraded {retrain.ctr:.4f}\n{timeline}"
    )
    for r in after:
        # every following day: above what the demoted (degraded) model earns on the same simulated day
        # (same users, sessions and random draws; from the second day on the replay even favours it: users
        # did not watch its picks). Not against the degraded day's CTR beyond the first day: any model
        # left in place loses CTR day by day here (one run: 0.1652 two days on vs 0.1658 on the degraded
        # day, while the demoted model would have earned 0.1368 that day).
        assert r.replay and r.replay["model_version"] == old_model, r.replay
        assert r.replay["ctr_live"] == pytest.approx(r.ctr, abs=0.003), (r.ds, r.replay, r.ctr)
        assert r.ctr > r.replay["ctr_replay"], (
            f"{r.ds}: the promoted model's CTR {r.ctr:.4f} is not above the demoted model's "
            f"{r.replay['ctr_replay']:.4f} on the same day\n{timeline}"
        )
        # the replay scored the logged exploration impressions with the live model as the monitor did,
        # and with the demoted one (the AUC prev / GAUC prev columns)
        assert r.replay["exploration_auc_live"] == pytest.approx(r.exploration_auc, abs=1e-6)
        assert r.replay["exploration_gauc_live"] == pytest.approx(r.exploration_gauc, abs=1e-6)
        assert None not in (r.replay["exploration_auc_replay"], r.replay["exploration_gauc_replay"])

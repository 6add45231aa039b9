"""recsys.sim.drift_scenario: the closed-loop scenario's settings and its recovery verdict (used by the
closed-loop test and bench/closed_loop.py), on hand-made timelines."""

from __future__ import annotations

from datetime import timedelta

from recsys.sim.drift_scenario import DRIFT, START, pseudonym_key, recovery, scenario_env
from recsys.sim.timeline import DayRecord


def _day(i: int, **kw) -> DayRecord:
    return DayRecord(ds=str(START + timedelta(days=i)), **kw)


def timeline(after_ctr=(0.18, 0.17), replay=(0.14, 0.13), blessed=True) -> list[DayRecord]:
    fired = (DRIFT - START).days
    days = [_day(i, ctr=0.2, served_model="1", champion="1") for i in range(fired)]
    days.append(
        _day(fired, ctr=0.15, served_model="1", champion="2", retrain_fired=True, retrain_blessed=blessed)
    )
    for j, (c, r) in enumerate(zip(after_ctr, replay, strict=True)):
        days.append(_day(fired + 1 + j, ctr=c, served_model="2", champion="2", replay={"ctr_replay": r}))
    return days


def test_a_promoted_retrain_that_beats_the_degraded_day_and_the_demoted_model_recovers():
    out = recovery(timeline())
    assert out["recovered"] and out["days_to_recover"] == 1 and out["why"] is None
    assert out["fired"] == [str(DRIFT)]


def test_each_failure_is_named():
    assert recovery(timeline(blessed=False))["why"] == "the retrained model was not blessed"
    assert "degraded" in recovery(timeline(after_ctr=(0.14, 0.17)))["why"]
    assert "demoted" in recovery(timeline(replay=(0.14, 0.2)))["why"]
    none = [d for d in timeline() if not d.retrain_fired]
    assert not recovery(none)["recovered"] and recovery(none)["days_to_recover"] is None


def test_the_scenario_is_deterministic_per_seed():
    a, b = scenario_env({"RECSYS_SIMULATOR__N_USERS": "300"}, 3), scenario_env({}, 3)
    assert "RECSYS_SIMULATOR__N_USERS" not in a  # the default sizes
    assert a["RECSYS_PRIVACY__PSEUDONYM_KEY"] == b["RECSYS_PRIVACY__PSEUDONYM_KEY"] == pseudonym_key(3)
    assert pseudonym_key(3) != pseudonym_key(4) and a["RECSYS_SEED"] == "3"

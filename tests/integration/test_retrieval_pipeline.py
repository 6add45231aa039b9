"""The two-stage pipeline in process on a small simulated world: ingest two days, features, train_retrieval,
train / evaluate / register the ranker (paired), recommend with the two-tower pool; then a retrieval model
that cannot be loaded, and the lists are still served from the rule pools."""

from __future__ import annotations

from datetime import date

import pytest
from tiny import features_of_days

DAYS = [date(2026, 1, 1), date(2026, 1, 2)]


@pytest.fixture
def small(settings):
    return settings.model_copy(
        update={
            "simulator": settings.simulator.model_copy(update={"n_users": 200, "n_videos": 200}),
            "train": settings.train.model_copy(update={"epochs": 2}),
            "evaluate": settings.evaluate.model_copy(update={"floor_auc": {"click": 0.0}}),
            "retrieval": settings.retrieval.model_copy(update={"epochs": 2, "k": 50}),
        }
    )


def test_daily_two_stage_run(small):
    from recsys import stages
    from recsys.retrieval.registry import retrieval_version, serving_pair

    features_of_days(small, DAYS[0], len(DAYS))
    ds = DAYS[-1]
    rt = stages.train_retrieval(ds, small)
    assert rt["promoted"] and rt["gate"]["passed"] and rt["index_items"] > 0
    assert 0.0 <= rt["metrics"]["recall_200"] <= 1.0 and rt["metrics"]["held_out_engagements"] > 0
    tr = stages.train(ds, small)
    ev = stages.evaluate(ds, small, run_id=tr["run_id"], model_uri=tr["model_uri"])
    reg = stages.register(ds, small, run_id=tr["run_id"], blessed=True, model_uri=tr["model_uri"])
    assert serving_pair(small) == (reg["version"], rt["version"]) and ev["run_id"] == tr["run_id"]
    out = stages.recommend(ds, small)
    assert out["two_tower_users"] > 0 and out["recs_rows"] > 0
    # the two-tower search per shard of users (1, 7 per shard) gives the partition's lists (all in one)
    import pandas as pd

    from recsys.serving import batch_recommendations

    lake = stages.open_lake(small)
    written = lake.read_frame("recs", "lists", ds)
    for size in (1, 7):
        got, info = batch_recommendations(lake, ds, small, users_per_shard=size)
        assert info["two_tower_users"] == out["two_tower_users"]
        pd.testing.assert_frame_equal(got, written, check_exact=True)

    # a second retrieval run is gated against the first (same day, same data: recall cannot regress much)
    again = stages.train_retrieval(ds, small)
    assert again["champion_metrics"] is not None and "recall_200" in again["champion_metrics"]
    assert retrieval_version(small) in (rt["version"], again["version"])

    # the paired retrieval version cannot be loaded (not in the registry): served from the rule pools
    import mlflow

    from recsys.retrieval.registry import PAIR_TAG

    mlflow.MlflowClient().set_model_version_tag(small.model_name, reg["version"], PAIR_TAG, "999")
    broken = stages.recommend(ds, small)
    assert broken["two_tower_users"] == 0 and broken["recs_rows"] > 0

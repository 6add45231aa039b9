"""Incremental training end to end on a tiny simulated world, with the real stages, MLflow and registry.

Day 2 is trained in incremental mode with an empty registry: it falls back to a full training (tagged
with why) and is registered as the champion. Day 3 is then trained incrementally from it: a warm start,
tagged with the champion's version, evaluated by the gate's own code, registered, loaded back and used
to score rows of users and videos the champion never saw.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from tiny import TINY_MODEL

pytestmark = pytest.mark.slow
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]
TINY_SIM = {"n_users": 80, "n_videos": 100, "n_categories": 5, "n_authors": 12}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from cryptography.fernet import Fernet

    from recsys import stages
    from recsys.config import load_settings

    root = tmp_path_factory.mktemp("incremental-e2e")
    mp = pytest.MonkeyPatch()
    mp.delenv("RECSYS_DEMO", raising=False)
    mp.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", "test-pseudonym-key-incremental-0123")
    mp.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        s = load_settings(
            data_dir=root / "data",
            simulator=TINY_SIM,
            model=TINY_MODEL,
            train={"epochs": 2, "batch_size": 64, "patience": 5, "mode": "incremental"},
            evaluate={"truth_users": 0},
        )
        for ds in DAYS:
            for st in (stages.land, stages.collect, stages.validate, stages.anonymize):
                st(ds, s)
        for ds in DAYS[1:]:
            stages.features(ds, s)
        yield s, root
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def first(world):
    """Day 2 in incremental mode with no champion: a full training, then registered as the champion."""
    from recsys import stages
    from recsys.registry import register
    from recsys.train import train_day

    s, root = world
    handler = _Capture()
    logging.getLogger("recsys.incremental").addHandler(handler)
    try:
        out = train_day(s, DAYS[1], stages.features_dir(s, DAYS[1]), root / "ck1", "test")
    finally:
        logging.getLogger("recsys.incremental").removeHandler(handler)
    reg = register(s, out["model_uri"], promote=True, tags={"ds": str(DAYS[1])})
    return out, reg, handler.messages


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_without_a_champion_incremental_mode_falls_back_to_full_training(world, first):
    import mlflow

    out, reg, warnings = first
    run = mlflow.get_run(out["run_id"])
    assert run.data.tags["train.mode"] == "full (fallback: no champion)"
    assert "warm_start_version" not in run.data.tags
    assert run.data.params["train_mode"] == "full"
    assert any("falls back to a full training: no champion" in m for m in warnings)
    assert reg["champion"] == reg["version"] == "1"


def test_a_champion_with_another_architecture_is_not_extended(world, first, tmp_path):
    from recsys.incremental import plan_training
    from recsys.stages import features_dir

    s, _ = world
    other = s.model_copy(update={"model": s.model.model_copy(update={"expert_units": 16})})
    plan = plan_training(features_dir(s, DAYS[2]), other, tmp_path)
    assert plan.mode == "full" and plan.model is None
    assert plan.tags["train.mode"].startswith("full (fallback: champion version 1 cannot be extended: ")
    assert "expert_units 8 -> 16" in plan.tags["train.mode"]


def test_incremental_run_warm_starts_trains_logs_registers_and_scores_new_ids(world, first):
    import mlflow
    import pandas as pd

    from recsys import stages
    from recsys.challenge import challenge
    from recsys.features.build import EXAMPLE_COLUMNS
    from recsys.incremental import new_rows, read_examples
    from recsys.registry import load_ranker, register
    from recsys.train import train_day

    s, root = world
    champion = load_ranker(s)
    fdir = stages.features_dir(s, DAYS[2])
    out = train_day(s, DAYS[2], fdir, root / "ck2", "test")
    run = mlflow.get_run(out["run_id"])
    assert run.data.tags["train.mode"] == "incremental"
    assert run.data.tags["warm_start_version"] == "1"
    train = read_examples(fdir / "train.parquet")
    new = new_rows(train, 1)
    assert int(run.data.params["train_rows"]) == new.sum() < len(train)  # the new day's rows only
    assert int(run.data.params["window_train_rows"]) == len(train)
    assert out["epochs"] == 2 and np.isfinite(out["best_val_loss"])
    history = mlflow.MlflowClient().get_metric_history(out["run_id"], "val_loss")
    assert [m.step for m in history] == [0, 1]
    assert not (root / "ck2").exists()  # the work folder (with the re-encoded rows) is cleaned up

    # evaluated and gated exactly as a full training is, then registered
    verdict = challenge(s, DAYS[2], fdir, out["run_id"], out["model_uri"])
    assert isinstance(verdict["blessed"], bool) and "click_auc" in verdict["metrics"]
    reg = register(s, out["model_uri"], promote=True, tags={"ds": str(DAYS[2])})
    ranker = load_ranker(s)
    assert ranker.version == reg["version"] == "2"

    # every id the champion knew kept its index; rows of new users and videos get their own embedding rows
    for name, vocab in champion.transform.vocabs.items():
        assert {k: ranker.transform.vocabs[name][k] for k in vocab} == vocab, name
    known = champion.transform.vocabs
    rows = pd.concat([train[new], read_examples(fdir / "test.parquet")], ignore_index=True)
    user, video = rows["user_key"].astype(str), rows["video_id"].astype(str)
    grown_vocabs = ranker.transform.vocabs
    new_user = ~user.isin(known["user"]) & user.isin(grown_vocabs["user"])
    new_video = ~video.isin(known["video"]) & video.isin(grown_vocabs["video"])
    fresh = rows[new_user | new_video]
    assert len(fresh), "the check needs rows with ids the champion never saw"
    x = ranker.transform.apply(fresh)
    spec = ranker.model.feature_spec
    grown = (x["user"] >= champion.model.feature_spec.vocab_sizes["user"]) | (
        x["video"] >= champion.model.feature_spec.vocab_sizes["video"]
    )
    assert grown.all() and (x["user"] < spec.vocab_sizes["user"]).all()
    scored = ranker.predict(fresh.drop(columns=["position"]))
    assert len(scored) == len(fresh) and np.isfinite(scored.to_numpy()).all()
    assert scored["click"].between(0, 1).all()
    # and the registered pyfunc serves them too
    pyfunc = mlflow.pyfunc.load_model(f"models:/{s.model_name}@champion")
    served = fresh[[c for c in EXAMPLE_COLUMNS if c not in ("event_id", "rec_version", "position")]].head(5)
    for col in ("ts", "upload_ts"):
        served[col] = pd.to_datetime(served[col], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = pyfunc.predict(served)
    np.testing.assert_allclose(out["click"], scored["click"].head(len(served)), rtol=1e-5)


def test_full_mode_is_tagged_full(world, tmp_path):
    from recsys.incremental import plan_training
    from recsys.stages import features_dir

    s, _ = world
    full = s.model_copy(update={"train": s.train.model_copy(update={"mode": "full"})})
    plan = plan_training(features_dir(s, DAYS[2]), full, tmp_path)
    assert plan.mode == "full" and plan.tags == {"train.mode": "full"}
    assert plan.data_dir == Path(features_dir(s, DAYS[2]))

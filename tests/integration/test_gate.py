"""The evaluation gate on real (small) simulated data, stage-level leakage, and rollback before publish.

One module-scoped run of the pipeline's stages (land .. features) for three simulated days, and two models
trained on day 3's features: one on the real labels, one on shuffled labels.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]
LABEL_COLUMNS = ["click", "watch", "like", "share"]


@dataclass
class Trained:
    settings: object
    fdir: Path
    good: object  # TrainResult on the real labels
    shuffled: object  # TrainResult on shuffled labels

    def ranker(self, which: str):
        import mlflow

        from recsys.registry import load_ranker_dir

        res = getattr(self, which)
        local = mlflow.artifacts.download_artifacts(f"runs:/{res.run_id}/ranker")
        return load_ranker_dir(Path(local) / "artifacts", version=which)


def shuffled_copy(fdir: Path, dest: Path, seed: int = 0) -> Path:
    """The features with the label block of train and valid permuted across rows (test untouched)."""
    shutil.copytree(fdir, dest)
    rng = np.random.default_rng(seed)
    for part in ("train", "valid"):
        df = pd.read_parquet(fdir / f"{part}.parquet")
        perm = rng.permutation(len(df))
        df[LABEL_COLUMNS] = df[LABEL_COLUMNS].iloc[perm].to_numpy()
        df.to_parquet(dest / f"{part}.parquet", index=False)
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from cryptography.fernet import Fernet
    from tiny import features_of_days

    from recsys.config import load_settings
    from recsys.train import train_model

    root = tmp_path_factory.mktemp("gate")
    mp = pytest.MonkeyPatch()
    mp.delenv("RECSYS_DEMO", raising=False)
    for k, v in {
        "RECSYS_DATA_DIR": str(root / "data"),
        "RECSYS_PRIVACY__PSEUDONYM_KEY": "test-pseudonym-key-gate-0123456789",
        "RECSYS_PRIVACY__ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "RECSYS_SIMULATOR__N_USERS": "300",
        "RECSYS_SIMULATOR__N_VIDEOS": "300",
        "RECSYS_TRAIN__EPOCHS": "6",
        "RECSYS_EVALUATE__TRUTH_USERS": "100",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }.items():
        mp.setenv(k, v)
    try:
        s = load_settings()
        fdir = features_of_days(s, DAYS[0], len(DAYS))
        shuf = shuffled_copy(fdir, root / "shuffled" / f"ds={DAYS[-1]}")
        tags = {"ds": str(DAYS[-1]), "trigger": "test", "variant": s.model.variant, "window_days": "14"}
        good = train_model(fdir, s, run_name="good", tags=tags, work_dir=root / "ck-good")
        # the shuffled model only has to exist: fewer epochs
        quick = s.model_copy(update={"train": s.train.model_copy(update={"epochs": 2})})
        bad = train_model(shuf, quick, run_name="shuffled", tags=tags, work_dir=root / "ck-bad")
        yield Trained(s, fdir, good, bad)
    finally:
        mp.undo()


def test_features_stage_leaks_nothing_of_the_test_day(trained):
    from recsys.features.transform import Transform
    from recsys.stages import open_lake

    s, fdir, day = trained.settings, trained.fdir, DAYS[-1]
    start = pd.Timestamp(day, tz="UTC")
    for part in ("train", "valid"):
        ts = pd.to_datetime(pd.read_parquet(fdir / f"{part}.parquet", columns=["ts"])["ts"], utc=True)
        assert len(ts) and ts.max() < start, part
    test_ts = pd.to_datetime(pd.read_parquet(fdir / "test.parquet", columns=["ts"])["ts"], utc=True)
    assert test_ts.min() >= start
    lake = open_lake(s)
    before = pd.concat([lake.read_frame("clean", "interactions", d) for d in DAYS[:-1]])
    today = lake.read_frame("clean", "interactions", day)
    new_users = set(today["user_key"].astype(str)) - set(before["user_key"].astype(str))
    new_videos = set(today["video_id"].dropna().astype(int).astype(str)) - set(
        before["video_id"].dropna().astype(int).astype(str)
    )
    assert new_users or new_videos, "the check needs keys that first appear on the test day"
    t = Transform.load(fdir / "transform.json")
    assert not new_users & set(t.vocabs["user"])
    assert not new_videos & set(t.vocabs["video"])
    # and the popularity statistics of the transform only count earlier clicks
    train_clicks = pd.read_parquet(fdir / "train.parquet", columns=["video_id", "click"])
    counted = np.expm1(list(t.video_clicks.values())).sum()
    assert counted == pytest.approx(train_clicks["click"].sum(), rel=1e-4)
    # the transform the model was logged with (Transform.refreshed) sees the validation days, never the test
    # day: its affinity evidence counts exactly the train + valid impressions
    logged = trained.ranker("good").transform
    assert logged.vocabs == t.vocabs and logged.video_clicks == t.video_clicks
    seen = pd.concat(
        [pd.read_parquet(fdir / f"{p}.parquet", columns=["user_key", "category"]) for p in ("train", "valid")]
    )
    for name, table in logged.affinity.items():
        assert not new_users & set(table), name
    impressions = sum(
        n for per in logged.affinity["user_category_affinity"].values() for _, n in per.values()
    )
    assert (
        impressions
        == len(seen.dropna())
        > sum(n for per in t.affinity["user_category_affinity"].values() for _, n in per.values())
    )


def test_gate_refuses_a_shuffled_label_model_and_blesses_the_real_one(trained):
    from recsys.evaluate import evaluate_run
    from recsys.sim import world_for

    s = trained.settings
    good, bad = trained.ranker("good"), trained.ranker("shuffled")
    refused = evaluate_run(bad, good, trained.fdir, s.evaluate, world=world_for(s))
    blessed = evaluate_run(good, bad, trained.fdir, s.evaluate, world=world_for(s))
    k = s.evaluate.k
    shown = ("click_auc", f"ndcg_{k}", f"recall_{k}", f"map_{k}", f"true_ndcg_{k}")
    print("good", {m: round(blessed["candidate"][m], 4) for m in shown})
    print("shuffled", {m: round(refused["candidate"][m], 4) for m in shown})
    for name, m in blessed["baselines"].items():
        print(name, {x: round(m[x], 4) for x in shown})
    print("refused:", refused["decision"]["reasons"], "\nblessed:", blessed["decision"]["reasons"])

    assert not refused["decision"]["blessed"]
    failed = {c["check"]: c for c in refused["decision"]["checks"] if not c["passed"]}
    assert "regression_click_auc" in failed and failed["regression_click_auc"]["shortfall"] > 0
    assert blessed["decision"]["blessed"], blessed["decision"]["reasons"]
    assert blessed["candidate"]["click_auc"] > refused["candidate"]["click_auc"]
    assert blessed["candidate"][f"true_ndcg_{k}"] > refused["candidate"][f"true_ndcg_{k}"]
    # the same test rows for all scorers: the champion of one run is the candidate of the other
    assert blessed["champion"]["click_auc"] == pytest.approx(refused["candidate"]["click_auc"])
    assert set(blessed["baselines"]) == {"popularity", "recent_category", "covisitation"}


def test_evaluate_stage_logs_metrics_tags_and_report(trained):
    import mlflow

    from recsys import stages

    s = trained.settings
    out = stages.evaluate(DAYS[-1], s, run_id=trained.shuffled.run_id, model_uri=trained.shuffled.model_uri)
    run = mlflow.MlflowClient().get_run(trained.shuffled.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["gate.blessed"] == str(out["blessed"]).lower()
    assert tags["ds"] == str(DAYS[-1]) and tags["trigger"] == "test"
    assert tags["data_window"].endswith(str(DAYS[-1]))
    for m in (
        "test_click_auc",
        f"test_ndcg_{s.evaluate.k}",
        f"test_true_ndcg_{s.evaluate.k}",
        "baseline_popularity_click_auc",
        f"baseline_covisitation_ndcg_{s.evaluate.k}",
    ):
        assert m in metrics, m
    if not out["blessed"]:
        failed = tags["gate.failed_checks"].split(",")
        assert all(tags[f"gate.check.{c}"].startswith("FAILED by") for c in failed)
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/evaluation/report.html"))
    page = local.read_text()
    assert "data:image/png;base64," in page and "Gate decision" in page


def test_rollback_moves_aliases_and_the_next_publish_uses_the_previous_model(trained):
    from recsys import stages
    from recsys.registry import champion_version, register, rollback
    from recsys.serving.publish import engine_for, read_live

    s = trained.settings
    first = register(s, trained.good.model_uri, promote=True, tags={"ds": str(DAYS[-1])})["version"]
    second = register(s, trained.shuffled.model_uri, promote=True, tags={"ds": str(DAYS[-1])})
    assert second["champion"] != first and second["previous"] == first
    moved = rollback(s)
    assert moved == {"champion": first, "previous": second["version"]}
    assert champion_version(s) == first and champion_version(s, "previous") == second["version"]
    import mlflow

    client = mlflow.MlflowClient()
    assert "restored" in client.get_model_version(s.model_name, first).tags
    assert "rolled_back" in client.get_model_version(s.model_name, second["version"]).tags
    rec = stages.recommend(DAYS[-1], s)
    assert rec["model_version"] == first
    stages.publish(DAYS[-1], s)
    live = read_live(engine_for(s.resolved_db_url))
    assert len(live) and set(live["model_version"].astype(str)) == {first}

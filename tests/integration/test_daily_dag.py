"""recsys_daily end to end under Airflow on small simulated data: registry, table, idempotence."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.slow


def test_champion_has_per_task_metrics(pipeline_run):
    import mlflow

    from recsys.tracking import configure

    s = pipeline_run.settings()
    configure(s)
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias(s.model_name, "champion")
    run = client.get_run(mv.run_id)
    for task in ("click", "like", "share"):
        assert 0.5 <= run.data.metrics[f"test_{task}_auc"] <= 1.0
    assert "test_watch_rmse" in run.data.metrics
    assert run.data.params["variant"] == "mmoe"
    assert run.data.tags["gate.blessed"] == "true"


def test_table_lists_every_active_user_with_distinct_ranked_videos(pipeline_run):
    from recsys.serving.publish import FALLBACK_KEY, engine_for, read_live
    from recsys.stages import open_lake

    s = pipeline_run.settings()
    live = read_live(engine_for(s.resolved_db_url))
    last = pipeline_run.days[-1]
    # every returning user (issue 13): anyone with an event on the last day, or a click on an earlier day of
    # the serving window (30 days: the whole run here)
    lake = open_lake(s)
    today = lake.read_frame("clean", "interactions", last)
    earlier = pd.concat([lake.read_frame("clean", "interactions", d) for d in pipeline_run.days[:-1]])
    clicked = earlier[pd.to_numeric(earlier["clicked"], errors="coerce").fillna(0) > 0]
    active = set(today["user_key"]) | set(clicked["user_key"])
    assert set(today["user_key"]) < active, "the window must add returning users to the day's actives"
    users = live[live["user_key"] != FALLBACK_KEY]
    assert set(users["user_key"]) == active
    for _, g in users.groupby("user_key"):
        assert g["rank"].tolist() == list(range(1, s.serving.top_n + 1))
        assert g["video_id"].is_unique
    assert (live["version"] == str(last)).all()


def test_every_stage_recorded_its_day(pipeline_run):
    for ds in pipeline_run.days:
        runs = pipeline_run.data_dir / "reports" / "runs" / f"ds={ds}"
        for stage in ("land", "collect", "validate", "anonymize", "features", "recommend", "publish"):
            assert (runs / f"{stage}.json").exists(), f"{stage} {ds}"
        v = json.loads((runs / "validate.json").read_text())
        assert v["accepted_rows"] + v["quarantined_rows"] == v["input_rows"]


def test_rerunning_a_day_changes_nothing_downstream(pipeline_run):
    s = pipeline_run.settings()
    eng = sa.create_engine(s.resolved_db_url)
    last = pipeline_run.days[-1]

    def snapshot():
        with eng.connect() as c:
            n = pd.read_sql("select count(*) n from recommendations", c)["n"][0]
            live = pd.read_sql("select count(*) n from live_recommendations", c)["n"][0]
        clean = pd.read_parquet(pipeline_run.data_dir / "clean" / "interactions" / f"ds={last}")
        return n, live, len(clean), clean["event_id"].is_unique

    before = snapshot()
    assert pipeline_run.run_day(last) == "success"
    assert snapshot() == before


def test_registered_pyfunc_scores_serving_rows_without_position(pipeline_run):
    """What `mlflow models serve` or another team would call: the champion as a pyfunc, raw rows in."""
    import mlflow

    from recsys.features.build import EXAMPLE_COLUMNS
    from recsys.tracking import configure

    s = pipeline_run.settings()
    configure(s)
    model = mlflow.pyfunc.load_model(f"models:/{s.model_name}@champion")
    fdir = pipeline_run.data_dir / "features" / "examples" / f"ds={pipeline_run.days[-1]}"
    rows = pd.read_parquet(fdir / "test.parquet", columns=list(EXAMPLE_COLUMNS)).head(20)
    rows = rows.drop(columns=["event_id", "rec_version", "position"])
    for col in ("ts", "upload_ts"):
        rows[col] = pd.to_datetime(rows[col], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = model.predict(rows)
    assert list(out.columns) == ["click", "watch", "like", "share", "score"]
    assert len(out) == 20 and out["click"].between(0, 1).all()


def test_monitor_figures_of_the_serving_model_match_scoring_each_slice_alone(pipeline_run):
    """The monitor scores a day's events in one pass (build_examples reorders them): its predicted CTR of
    the recommended impressions and its AUC on the exploration ones equal scoring each slice on its own."""
    from recsys.evaluate import auc, gauc
    from recsys.features.build import build_examples
    from recsys.monitoring.model_figures import online_model_figures
    from recsys.registry import champion_version, load_ranker
    from recsys.serving.rank import predict_tasks
    from recsys.stages import open_lake

    s = pipeline_run.settings()
    ds = pipeline_run.days[-1]
    lake = open_lake(s)
    events = lake.read_frame("clean", "interactions", ds)
    videos, users = lake.read_frame("clean", "videos", ds), lake.read_frame("clean", "users", ds)
    version = champion_version(s)
    ranker = load_ranker(s, version=version)
    listed = events["rec_version"].notna()
    assert listed.any() and (~listed).any(), "the day needs both recommended and exploration impressions"

    def alone(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
        ex = build_examples(rows, videos, users)
        return pd.Series(predict_tasks(ranker, ex, encoding="frame")["click"]), ex["click"], ex["user_key"]

    p_rec, y_rec, _ = alone(events[listed])
    p_exp, y_exp, u_exp = alone(events[~listed])
    figures = online_model_figures(lake, s, ds, events, version)
    assert figures["predicted_ctr"] == pytest.approx(float(p_rec.mean()), rel=1e-5)
    assert figures["pred_obs_ratio"] == pytest.approx(float(p_rec.mean() / y_rec.mean()), rel=1e-5)
    expected_auc = auc(y_exp.to_numpy(), p_exp.to_numpy())
    assert figures["exploration_click_auc"] == pytest.approx(expected_auc, abs=1e-4)
    assert 0.5 < figures["exploration_click_auc"] < 1.0
    expected_gauc = gauc(y_exp.to_numpy(), p_exp.to_numpy(), u_exp.to_numpy())
    assert figures["exploration_click_gauc"] == pytest.approx(expected_gauc, abs=1e-4)
    # the same figures from the loaded ranker (how the loop's replay scores a demoted model)
    assert online_model_figures(lake, s, ds, events, version, ranker=ranker) == figures

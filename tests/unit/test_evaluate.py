from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from recsys.config import EvaluateSettings
from recsys.evaluate import expected_calibration_error, gate, gauc, log_evaluation, task_metrics


def test_gauc_matches_per_user_reference_and_skips_single_class_users():
    y = np.array([1, 0, 0, 1, 0, 1, 0, 1])
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.5, 0.5, 0.1, 0.8])
    g = np.array(["a", "a", "a", "b", "b", "c", "d", "d"])  # "c" has one class and one row: excluded
    ref = (
        roc_auc_score(y[:3], p[:3]) * 3 + roc_auc_score(y[3:5], p[3:5]) * 2 + roc_auc_score(y[6:], p[6:]) * 2
    ) / 7
    assert gauc(y.astype(float), p, g) == pytest.approx(ref)


def test_ece_reference():
    y = np.array([0, 0, 1, 1.0])
    p = np.array([0.05, 0.15, 0.95, 0.85])
    # bins: [0,.1): p=.05 y=0 ; [.1,.2): .15/0 ; [.8,.9): .85/1 ; [.9,1]: .95/1
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 0.15 + 0.05 + 0.15) / 4)


def test_task_metrics_ignore_nan_labels():
    y = {
        "click": np.array([1, 0, 1, 0.0]),
        "like": np.array([1, np.nan, 0, np.nan]),
        "share": np.array([np.nan] * 4),
        "watch": np.array([2.0, np.nan, 1.0, np.nan]),
    }
    p = {
        "click": np.array([0.8, 0.3, 0.6, 0.1]),
        "like": np.array([0.7, 0.9, 0.2, 0.9]),
        "share": np.full(4, 0.1),
        "watch": np.array([1.0, 9, 1, 9]),
    }
    m = task_metrics(y, p, np.array(["a", "a", "b", "b"]))
    assert m["click_auc"] == 1.0 and m["like_auc"] == 1.0 and np.isnan(m["share_auc"])
    assert m["watch_rmse"] == pytest.approx(np.sqrt(0.5))


def test_gate_reports_which_threshold_failed_and_by_how_much():
    cfg = EvaluateSettings(floor_auc={"click": 0.6}, max_regression={"click": 0.01})
    d = gate({"click_auc": 0.70}, {"click_auc": 0.75}, {"click_auc": 0.65}, cfg)
    assert not d.blessed
    assert any("regression_click_auc" in r and "-0.0500" in r for r in d.reasons)
    assert gate({"click_auc": 0.76}, {"click_auc": 0.75}, {"click_auc": 0.65}, cfg).blessed
    low = gate({"click_auc": 0.55}, None, {"click_auc": 0.5}, cfg)
    assert not low.blessed and "floor_click_auc" in low.reasons[0]


def test_a_candidate_below_popularity_replaces_a_champion_further_below_only_by_a_clear_gain():
    cfg = EvaluateSettings(floor_auc={"click": 0.55}, max_regression={"click": 0.01})
    pop = {"click_auc": 0.67}
    # after a drift: the champion fell to 0.567, the fresh candidate reaches 0.664, popularity 0.670
    d = gate({"click_auc": 0.664}, {"click_auc": 0.567}, pop, cfg)
    assert d.blessed and d.reasons == ["all checks passed"]
    (check,) = [c for c in d.checks if c["check"] == "margin_over_popularity"]
    assert (
        check["threshold"] == pytest.approx(0.587) and "champion is further below (0.5670)" in check["detail"]
    )
    # a gain under min_gain_over_weak_champion is not enough
    small = gate({"click_auc": 0.58}, {"click_auc": 0.567}, pop, cfg)
    assert not small.blessed and "must beat it by 0.0200 (delta -0.0070)" in small.reasons[0]
    # no champion, a champion above popularity, or the rule switched off: popularity must be beaten
    assert not gate({"click_auc": 0.664}, None, pop, cfg).blessed
    assert not gate({"click_auc": 0.664}, {"click_auc": 0.68}, pop, cfg).blessed
    off = EvaluateSettings(floor_auc={"click": 0.55}, min_gain_over_weak_champion=None)
    assert not gate({"click_auc": 0.664}, {"click_auc": 0.567}, pop, off).blessed


# ---------------------------------------------------------------------------------------- ranking metrics
def test_ndcg_matches_sklearn_on_fixed_lists():
    from sklearn.metrics import ndcg_score

    from recsys.evaluate import ndcg_at_k

    rel = np.array([3, 2, 3, 0, 1, 2, 0, 0.0])
    s = np.array([0.1, 0.9, 0.3, 0.8, 0.5, 0.2, 0.7, 0.4])
    for k in (1, 3, 5, 8):
        assert ndcg_at_k(rel, s, k) == pytest.approx(ndcg_score([rel], [s], k=k))
    binary = (rel > 1).astype(float)
    assert ndcg_at_k(binary, s, 4) == pytest.approx(ndcg_score([binary], [s], k=4))


def test_recall_and_map_by_hand():
    from recsys.evaluate import average_precision_at_k, recall_at_k

    rel = np.array([1, 0, 1, 0, 1.0])  # items a..e
    s = np.array([0.9, 0.8, 0.3, 0.7, 0.6])  # order: a(1) b(0) d(0) e(1) c(1)
    assert recall_at_k(rel, s, 2) == pytest.approx(1 / 3)
    assert recall_at_k(rel, s, 4) == pytest.approx(2 / 3)
    # hits at ranks 1 and 4 within k=4: (1/1 + 2/4) / min(3, 4)
    assert average_precision_at_k(rel, s, 4) == pytest.approx((1 + 0.5) / 3)
    # k=2: one hit at rank 1: 1 / min(3, 2)
    assert average_precision_at_k(rel, s, 2) == pytest.approx(0.5)
    assert np.isnan(recall_at_k(np.zeros(3), s[:3], 2))


def test_ranking_metrics_average_over_users_with_clicks_and_dedupe_impressions():
    from sklearn.metrics import ndcg_score

    from recsys.evaluate import ranking_metrics

    users = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "c"])
    items = np.array([1, 2, 3, 1, 1, 4, 5, 2, 6])  # a saw video 1 twice (clicked the second time)
    click = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0.0])  # c clicked nothing: excluded from the averages
    score = np.array([0.5, 0.9, 0.1, 0.5, 0.3, 0.2, 0.8, 0.4, 0.6])
    m = ranking_metrics(users, items, click, score, k=2)
    a = ndcg_score([[1, 0, 1]], [[0.5, 0.9, 0.1]], k=2)  # items 1, 2, 3
    b = ndcg_score([[0, 1, 0]], [[0.3, 0.2, 0.8]], k=2)  # items 1, 4, 5
    assert m["ndcg_2"] == pytest.approx((a + b) / 2)
    assert m["recall_2"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["map_2"] == pytest.approx(((1 / 2) / 2 + 0.0) / 2)  # a: hit at rank 2 -> (1/2)/min(2,2)
    # top-2 lists: a {2, 1}, b {5, 1}, c {6, 2} -> 4 of the 6 distinct videos
    assert m["coverage_2"] == pytest.approx(4 / 6)
    assert m["ranking_users"] == 2
    wide = ranking_metrics(users, items, click, score, k=2, catalog_size=10)
    assert wide["coverage_2"] == pytest.approx(0.4)


def test_gauc_handles_ties_like_sklearn():
    y = np.array([1, 0, 1, 0, 0, 1, 1, 0.0])
    p = np.array([0.5, 0.5, 0.2, 0.5, 0.1, 0.3, 0.3, 0.3])
    g = np.array(["a"] * 4 + ["b"] * 4)
    ref = (roc_auc_score(y[:4], p[:4]) * 4 + roc_auc_score(y[4:], p[4:]) * 4) / 8
    assert gauc(y, p, g) == pytest.approx(ref)


def test_true_ndcg_is_one_for_the_true_order_and_lower_otherwise():
    import pandas as pd

    from recsys.sim.truth import TruthSample, true_ndcg

    rows = pd.DataFrame({"user_key": ["u"] * 4 + ["w"] * 4, "video_id": [1, 2, 3, 4] * 2})
    util = np.array([0.1, 0.4, 0.3, 0.2, 0.5, 0.1, 0.2, 0.3])
    disc = 1 / np.log2(np.arange(2, 4))
    ideal = {"u": float((np.array([0.4, 0.3]) * disc).sum()), "w": float((np.array([0.5, 0.3]) * disc).sum())}
    sample = TruthSample(rows, util, ideal, catalog_size=4)
    assert true_ndcg(sample, util, 2)["true_ndcg_2"] == pytest.approx(1.0)
    worst = true_ndcg(sample, -util, 2)
    exp_u = (0.1 * disc[0] + 0.2 * disc[1]) / ideal["u"]
    exp_w = (0.1 * disc[0] + 0.2 * disc[1]) / ideal["w"]
    assert worst["true_ndcg_2"] == pytest.approx((exp_u + exp_w) / 2)
    assert worst["true_coverage_2"] == pytest.approx(4 / 4)  # u: {1, 4}, w: {2, 3}


def test_truth_sample_ideal_is_the_simulator_oracle(settings):
    from datetime import date

    import pandas as pd

    from recsys.config import SimulatorSettings
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.sim import build_world, world_for
    from recsys.sim.truth import true_ndcg

    s = settings.model_copy(update={"simulator": SimulatorSettings(n_users=30, n_videos=40, n_authors=10)})
    world = build_world(s.simulator, s.seed)
    key = load_pseudonym_key(s)
    ds = date(2026, 1, 3)
    test = pd.DataFrame(
        {
            "user_key": [pseudonym(u, key) for u in world.users["user_id"][:12]] + ["stranger"],
            "device": "ios",
            "region": "EU-DE",
            "age_band": "25-34",
            "activity": "mid",
            "ts": pd.Timestamp(ds, tz="UTC"),
        }
    )
    sample = world_for(s).truth_sample(ds, test, k=5, max_users=10, max_candidates=500)
    assert len(sample.ideal_dcg) == 10 and "stranger" not in sample.ideal_dcg
    assert sample.catalog_size == int(world.visible_mask(ds).sum())
    index = {pseudonym(u, key): i for i, u in enumerate(world.users["user_id"])}
    disc = 1 / np.log2(np.arange(2, 7))
    for u, ideal in sample.ideal_dcg.items():
        best = world.true_utility(np.full(5, index[u]), world.oracle(index[u], 5, ds), ds)
        assert ideal == pytest.approx(float((best * disc).sum()))
    assert true_ndcg(sample, sample.utility, 5)["true_ndcg_5"] == pytest.approx(1.0)
    rnd = true_ndcg(sample, np.random.default_rng(0).random(len(sample.rows)), 5)["true_ndcg_5"]
    assert 0 < rnd < 1


# ---------------------------------------------------------------------------------------- gate reporting
def test_gate_checks_carry_threshold_and_shortfall_into_tags_and_report():
    from recsys.evaluate import evaluation_tags
    from recsys.report import render_report

    cfg = EvaluateSettings(
        floor_auc={"click": 0.6}, max_regression={"click": 0.01}, min_margin_over_popularity=0.02
    )
    d = gate({"click_auc": 0.58}, {"click_auc": 0.70}, {"click_auc": 0.57}, cfg)
    failed = {c["check"]: c for c in d.checks if not c["passed"]}
    assert set(failed) == {"floor_click_auc", "regression_click_auc", "margin_over_popularity"}
    assert failed["floor_click_auc"]["shortfall"] == pytest.approx(0.02)
    assert failed["regression_click_auc"]["shortfall"] == pytest.approx(0.11)
    assert failed["margin_over_popularity"]["shortfall"] == pytest.approx(0.01)
    from dataclasses import asdict

    cand = {"click_auc": 0.58, "ndcg_10": 0.4}
    result = {
        "ds": "2026-01-03",
        "k": 10,
        "test_rows": 100,
        "candidate": cand,
        "champion": {"click_auc": 0.7},
        "baselines": {"popularity": {"click_auc": 0.57}},
        "popularity": {"click_auc": 0.57},
        "decision": asdict(d),
        "slices": {},
    }
    tags = evaluation_tags(result, {"trigger": "drift"})
    assert tags["gate.blessed"] == "false" and tags["trigger"] == "drift"
    assert tags["gate.failed_checks"] == "floor_click_auc,regression_click_auc,margin_over_popularity"
    assert tags["gate.check.regression_click_auc"].startswith("FAILED by 0.1100")
    page = render_report(result, tags)
    assert "NOT BLESSED" in page and "regression_click_auc failed" in page and "drift" in page


def test_report_is_self_contained_html_with_plots():
    from recsys.report import render_report

    bins = [
        {"lo": 0.0, "hi": 0.1, "n": 5, "mean_pred": 0.05, "observed": 0.1},
        {"lo": 0.1, "hi": 0.2, "n": 5, "mean_pred": 0.15, "observed": 0.1},
    ]
    seg = [
        {"position": p, "rows": 10, "ctr": 0.1 * p, "candidate_pred": 0.1, "candidate_auc": 0.6}
        for p in (1, 2)
    ]
    act = [
        {
            "activity": a,
            "rows": 10,
            "ctr": 0.1,
            "candidate_pred": 0.1,
            "candidate_auc": 0.6,
            "candidate_gauc": 0.55,
        }
        for a in ("low", "high")
    ]
    result = {
        "ds": "2026-01-03",
        "k": 10,
        "candidate": {"click_auc": 0.6},
        "champion": None,
        "baselines": {"popularity": {"click_auc": 0.55}, "covisitation": {"click_auc": 0.5}},
        "decision": {"blessed": True, "reasons": ["all checks passed"], "checks": []},
        "truth": {"users": 3, "catalog": 40},
        "slices": {
            "calibration": {"candidate": {t: bins for t in ("click", "like", "share")}},
            "by_position": seg,
            "by_activity": act,
        },
    }
    page = render_report(result)
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 3
    assert "BLESSED" in page and "baseline covisitation" in page and "true_ndcg_10" in page
    assert "<link" not in page and 'src="http' not in page


@pytest.mark.slow  # creates an MLflow SQLite store (its migrations take a while on a busy machine)
def test_log_evaluation_writes_prefixed_metrics_gate_tags_and_the_report(settings):
    import mlflow

    from recsys.tracking import configure

    exp = configure(settings)
    run = mlflow.MlflowClient().create_run(exp)
    d = gate({"click_auc": 0.52}, None, {"click_auc": 0.5}, EvaluateSettings(floor_auc={"click": 0.55}))
    from dataclasses import asdict

    cand = {"click_auc": 0.52, "ndcg_10": 0.3, "like_auc": float("nan")}
    result = {
        "ds": "2026-01-03",
        "k": 10,
        "test_rows": 10,
        "candidate": cand,
        "champion": None,
        "baselines": {"popularity": {"click_auc": 0.5}, "covisitation": {"ndcg_10": 0.2}},
        "popularity": {"click_auc": 0.5},
        "decision": asdict(d),
        "slices": {},
    }
    extra = {"trigger": "manual", "data_window": "2025-12-21..2026-01-03"}
    tags = log_evaluation(run.info.run_id, result, extra)
    got = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert got.metrics == {
        "test_click_auc": 0.52,
        "test_ndcg_10": 0.3,
        "baseline_popularity_click_auc": 0.5,
        "baseline_covisitation_ndcg_10": 0.2,
    }
    assert got.tags["gate.blessed"] == "false" and got.tags["gate.failed_checks"] == "floor_click_auc"
    assert got.tags["gate.check.floor_click_auc"].startswith("FAILED by 0.0300")
    assert got.tags["trigger"] == "manual" and tags["data_window"] == "2025-12-21..2026-01-03"
    names = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert names == {"evaluation/evaluation.json", "evaluation/report.html"}


def test_segments_are_in_natural_order_with_per_scorer_click_metrics():
    import pandas as pd

    from recsys.evaluate import _segment_rows

    test = pd.DataFrame(
        {"position": pd.array([10, 2, 1, 10, 2, 1], dtype="Int64"), "click": [0, 1, 1, 1, 0, 0.0]}
    )
    preds = {"candidate": {"click": np.array([0.1, 0.9, 0.8, 0.7, 0.2, 0.3])}}
    rows = _segment_rows(test, "position", preds, np.array(list("aabbcc")), with_gauc=False)
    assert [r["position"] for r in rows] == [1, 2, 10]
    assert rows[0]["ctr"] == 0.5 and rows[0]["candidate_pred"] == pytest.approx(0.55)
    assert rows[0]["candidate_auc"] == 1.0 and "candidate_gauc" not in rows[0]


def _ranking_metrics_per_list(users, items, rel, scores, k):
    """The definition: each user's list through the per-list functions, one user at a time."""
    from recsys.evaluate import average_precision_at_k, ndcg_at_k, recall_at_k

    df = pd.DataFrame({"u": users, "i": items, "r": np.nan_to_num(np.asarray(rel, float)), "s": scores})
    df = df.groupby(["u", "i"], sort=True).agg(r=("r", "max"), s=("s", "max")).reset_index()
    nd, rc, ap, top = [], [], [], set()
    for _, g in df.groupby("u", sort=True):
        it, r, s = g["i"].to_numpy(), g["r"].to_numpy(float), g["s"].to_numpy(float)
        top.update(it[np.argsort(-s, kind="stable")][:k].tolist())
        if (r > 0).any():
            nd.append(ndcg_at_k(r, s, k))
            rc.append(recall_at_k(r, s, k))
            ap.append(average_precision_at_k(r, s, k))
    return np.mean(nd), np.mean(rc), np.mean(ap), len(top), len(nd)


@pytest.mark.parametrize("seed", range(6))
def test_ranking_metrics_of_all_users_at_once_equal_the_per_list_definition(seed):
    from recsys.evaluate import ranking_metrics

    rng = np.random.default_rng(seed)
    n = 3000
    users = rng.choice([f"u{i}" for i in range(150)], n)
    items = rng.integers(0, 60, n)
    rel = rng.choice([0.0, 0.0, 0.0, 1.0, 2.5, np.nan], n)
    scores = rng.integers(0, 8, n) / 8.0  # many ties: broken by item id, as the per-list path does
    k = int(rng.integers(1, 12))
    m = ranking_metrics(users, items, rel, scores, k, catalog_size=60)
    nd, rc, ap, covered, judged = _ranking_metrics_per_list(users, items, rel, scores, k)
    assert m[f"ndcg_{k}"] == pytest.approx(nd, rel=1e-12)
    assert m[f"recall_{k}"] == pytest.approx(rc, rel=1e-12)
    assert m[f"map_{k}"] == pytest.approx(ap, rel=1e-12)
    assert m[f"coverage_{k}"] == covered / 60
    assert m["ranking_users"] == judged


def test_ranking_metrics_of_no_rows_are_nan():
    from recsys.evaluate import ranking_metrics

    m = ranking_metrics(np.array([], str), np.array([], int), np.array([]), np.array([]), 10)
    assert np.isnan(m["ndcg_10"]) and m["ranking_users"] == 0

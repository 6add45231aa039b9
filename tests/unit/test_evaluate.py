from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recsys.config import EvaluateSettings
from recsys.evaluate import expected_calibration_error, gate, gauc, task_metrics


def test_gauc_matches_per_user_reference_and_skips_single_class_users():
    y = np.array([1, 0, 0, 1, 0, 1, 0, 1])
    p = np.array([.9, .2, .6, .4, .5, .5, .1, .8])
    g = np.array(["a", "a", "a", "b", "b", "c", "d", "d"])  # "c" has one class and one row: excluded
    ref = (roc_auc_score(y[:3], p[:3]) * 3 + roc_auc_score(y[3:5], p[3:5]) * 2
           + roc_auc_score(y[6:], p[6:]) * 2) / 7
    assert gauc(y.astype(float), p, g) == pytest.approx(ref)


def test_ece_reference():
    y = np.array([0, 0, 1, 1.0])
    p = np.array([0.05, 0.15, 0.95, 0.85])
    # bins: [0,.1): p=.05 y=0 ; [.1,.2): .15/0 ; [.8,.9): .85/1 ; [.9,1]: .95/1
    assert expected_calibration_error(y, p) == pytest.approx((.05 + .15 + .05 + .15) / 4)


def test_task_metrics_ignore_nan_labels():
    y = {"click": np.array([1, 0, 1, 0.0]), "like": np.array([1, np.nan, 0, np.nan]),
         "share": np.array([np.nan] * 4), "watch": np.array([2.0, np.nan, 1.0, np.nan])}
    p = {"click": np.array([.8, .3, .6, .1]), "like": np.array([.7, .9, .2, .9]),
         "share": np.full(4, .1), "watch": np.array([1.0, 9, 1, 9])}
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

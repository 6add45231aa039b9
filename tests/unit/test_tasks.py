"""The task spec (recsys/tasks.py): labels, weights, validation, and a fifth head added by the spec alone."""

from __future__ import annotations

import dataclasses
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from tiny import TINY_MODEL, TINY_SIM, features_of_days

from recsys import tasks
from recsys.tasks import Task

NAN = np.nan
# The fifth head: did a click lead to more than a minute of watching? Derived from an existing column.
LONG_WATCH = Task(
    "long_watch", "binary", column="watch_seconds", threshold=60.0, loss_weight=0.5, score_weight=0.25
)


def interactions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "clicked": pd.array([1, 0, 1, 1], dtype="Int64"),
            "watch_seconds": pd.array([90.0, 0.0, 12.5, 60.0], dtype="Float64"),
            "liked": pd.array([1, 0, 0, 1], dtype="Int64"),
            "shared": pd.array([0, 0, 1, 0], dtype="Int64"),
        }
    )


# ------------------------------------------------------------------------------------------ the spec
def test_the_default_spec_is_the_four_heads_in_model_order():
    assert tasks.names() == ("click", "watch", "like", "share")
    assert [t.name for t in tasks.binary()] == ["click", "like", "share"]
    assert [t.name for t in tasks.regression()] == ["watch"]
    watch = tasks.get("watch")
    assert (watch.loss, watch.activation, watch.metrics) == ("masked_mean_squared_error", "linear", ())
    click = tasks.get("click")
    assert (click.loss, click.activation, click.metrics) == (
        "masked_binary_crossentropy",
        "sigmoid",
        ("auc",),
    )
    assert watch.score_scale == math.log1p(600.0)


def test_labels_match_the_rules_they_replace():
    """click on every impression; watch = log1p(seconds), like, share only on clicks (NaN elsewhere)."""
    df = interactions()
    np.testing.assert_array_equal(tasks.get("click").label(df), [1, 0, 1, 1])
    np.testing.assert_array_equal(
        tasks.get("watch").label(df), np.float32([np.log1p(90.0), NAN, np.log1p(12.5), np.log1p(60.0)])
    )
    np.testing.assert_array_equal(tasks.get("like").label(df), [1, NAN, 0, 1])
    np.testing.assert_array_equal(tasks.get("share").label(df), [0, NAN, 1, 0])
    assert all(t.label(df).dtype == np.float32 for t in tasks.TASKS)


def test_a_threshold_turns_a_numeric_column_into_a_binary_label():
    np.testing.assert_array_equal(LONG_WATCH.label(interactions()), [1, NAN, 0, 0])  # 60 is not > 60


def test_weights_default_from_the_spec_and_are_overridden_by_name():
    assert tasks.loss_weights() == {"click": 1.0, "watch": 0.5, "like": 0.5, "share": 0.5}
    assert tasks.score_weights() == {"click": 1.0, "watch": 0.3, "like": 0.5, "share": 0.5}
    assert tasks.loss_weights({"share": 0.0}) == {"click": 1.0, "watch": 0.5, "like": 0.5, "share": 0.0}
    five = (*tasks.TASKS, LONG_WATCH)
    assert tasks.score_weights({"click": 2.0}, five)["long_watch"] == 0.25
    with pytest.raises(ValueError, match="dwell"):
        tasks.score_weights({"dwell": 1.0})


def test_the_settings_defaults_are_the_spec_s():
    from recsys.config import ModelSettings

    ms = ModelSettings()
    assert ms.loss_weights == tasks.loss_weights() and ms.score_weights == tasks.score_weights()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"kind": "ordinal"}, "kind"),
        ({"loss": "hinge"}, "loss"),
        ({"activation": "relu"}, "activation"),
        ({"metrics": ("precision",)}, "metric"),
        ({"name": "long watch"}, "identifier"),
        ({"score_scale": 0.0}, "score_scale"),
        ({"log1p": True}, "log1p"),
        ({"kind": "regression", "threshold": 1.0}, "threshold"),
    ],
)
def test_an_inconsistent_task_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        Task(**{"name": "t", "kind": "binary", "column": "clicked", **bad})


def test_a_spec_needs_unique_names():
    with pytest.raises(ValueError, match="unique"):
        tasks.current((*tasks.TASKS, tasks.get("like")))


def test_a_task_round_trips_through_its_dict():
    for t in (*tasks.TASKS, LONG_WATCH):
        assert Task.from_dict(t.to_dict()) == t


def test_a_model_saved_before_the_spec_reloads_with_the_default_heads():
    """A saved config without ``tasks`` (models registered before the spec) builds the four heads."""
    from recsys.config import ModelSettings
    from recsys.features.spec import FeatureSpec
    from recsys.model import MultiTaskModel, build_multi_task_model

    spec = FeatureSpec(vocab_sizes={"user": 5, "video": 5}, title_vocab_size=5, title_len=2, n_numeric=1)
    spec = dataclasses.replace(spec, categorical=("user", "video"))
    model = build_multi_task_model(spec, ModelSettings(**TINY_MODEL), seed=1)
    config = model.get_config()
    assert [t["name"] for t in config.pop("tasks")] == list(tasks.names())
    legacy = MultiTaskModel.from_config(config)
    legacy.build()
    assert legacy.tasks == tasks.TASKS
    assert set(legacy(legacy.dummy_inputs(3))) == set(tasks.names())


# ------------------------------------------------------------------------------------------ a fifth head
@pytest.fixture(scope="module")
def five_heads(tmp_path_factory):
    """The spec with a fifth task appended, and a tiny features dir built by the pipeline's own stages.

    Only ``recsys.tasks.TASKS`` changes: the stages, the feature builder, the model, training and
    evaluation are the production code, which must all pick the new head up from the spec.
    """
    from cryptography.fernet import Fernet

    from recsys.config import load_settings

    root = tmp_path_factory.mktemp("tasks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks, "TASKS", (*tasks.TASKS, LONG_WATCH))
        mp.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", "test-pseudonym-key-0123456789")
        mp.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
        settings = load_settings(
            data_dir=root / "data",
            simulator=TINY_SIM,
            model=TINY_MODEL,
            train={"epochs": 1, "batch_size": 64, "patience": 5},
        )
        yield settings, features_of_days(settings, date(2026, 1, 1)), root


def test_the_fifth_head_gets_labels_a_tower_a_loss_a_metric_and_a_score_term(five_heads):
    from recsys.evaluate import evaluate_run, task_metrics
    from recsys.features.transform import Transform
    from recsys.model import ranking_score
    from recsys.registry import Ranker, load_ranker_dir
    from recsys.report import render_report
    from recsys.serving.rank import predict_scores, predict_tasks
    from recsys.serving.synthetic import save_ranker
    from recsys.train import fit_model

    settings, fdir, root = five_heads
    assert tasks.names()[-1] == "long_watch"

    # labels: the features stage wrote the fifth label column, derived as the spec says
    train = pd.read_parquet(fdir / "train.parquet")
    y = train["long_watch"].to_numpy(float)
    clicked = train["click"].to_numpy(float) > 0
    assert np.isnan(y[~clicked]).all()
    watched_long = np.expm1(train["watch"].to_numpy(float)[clicked]) > 60.0 + 1e-3
    np.testing.assert_array_equal(y[clicked], watched_long.astype(float))
    assert 0 < y[clicked].sum() < clicked.sum()  # both classes, so its AUC is defined

    # training: one epoch; the fifth head has a tower, a loss and its AUC, on train and validation
    fit = fit_model(fdir, settings, root / "work")
    model = fit.model
    assert [t.name for t in model.tasks] == list(tasks.names())
    assert "tower_long_watch" in {layer.name for layer in model.towers}
    for key in ("long_watch_loss", "long_watch_auc", "val_long_watch_loss", "val_long_watch_auc"):
        assert np.isfinite(fit.history[key][0]), key
    assert "watch_auc" not in fit.history  # a regression head still has no AUC

    # outputs: a probability per row, in the serving path and through the registry's ranker
    test = pd.read_parquet(fdir / "test.parquet")
    ranker = Ranker(
        model,
        Transform.load(fdir / "transform.json"),
        tasks.score_weights(settings.model.score_weights),
        "five",
    )
    preds = predict_tasks(ranker, test, encoding="frame")
    assert set(preds) == set(tasks.names())
    p = preds["long_watch"]
    assert p.shape == (len(test),) and ((p > 0) & (p < 1)).all()
    assert ranker.score_weights["long_watch"] == 0.25
    four = {k: w for k, w in ranker.score_weights.items() if k != "long_watch"}
    scores = predict_scores(ranker, test, encoding="frame")
    np.testing.assert_allclose(scores, ranking_score(preds, four) + 0.25 * p, rtol=1e-6)
    frame = ranker.predict(test)
    np.testing.assert_allclose(frame["long_watch"], p, rtol=1e-5)

    # a saved ranker reloads with its five heads
    again = load_ranker_dir(save_ranker(ranker, root / "saved"))
    np.testing.assert_allclose(predict_tasks(again, test, encoding="frame")["long_watch"], p, rtol=1e-5)

    # offline evaluation: the fifth task's metrics for the model and the baselines, and its calibration
    labels = {t: test[t].to_numpy(float) for t in tasks.names()}
    m = task_metrics(labels, preds, test["user_key"].to_numpy())
    assert (
        0.0 <= m["long_watch_auc"] <= 1.0 and m["long_watch_rows"] == np.isfinite(labels["long_watch"]).sum()
    )
    result = evaluate_run(ranker, None, fdir, settings.evaluate)
    assert np.isfinite(result["candidate"]["long_watch_logloss"])
    assert "long_watch_auc" in result["popularity"]
    assert "long_watch" in result["slices"]["calibration"]["candidate"]
    assert "long_watch_auc" in render_report(result)

"""Masked losses and AUC against NumPy / scikit-learn, and the ranking score on an exact table."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recsys.model import MaskedAUC, MaskedBinaryCrossentropy, MaskedMeanSquaredError, ranking_score
from recsys.model.losses import EPSILON

NAN = np.nan


def np_bce(y, p):
    p = np.clip(p, EPSILON, 1 - EPSILON)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def loss_value(loss, y, p):
    return float(keras.ops.convert_to_numpy(loss(y, p)))


def test_masked_bce_is_the_mean_over_labelled_rows():
    y = np.array([1.0, NAN, 0.0, 1.0, NAN], "float32")
    p = np.array([[0.9], [0.2], [0.3], [0.6], [1.0]], "float32")
    labelled = ~np.isnan(y)
    expected = np_bce(y[labelled], p[labelled, 0]).mean()
    assert loss_value(MaskedBinaryCrossentropy(), y, p) == pytest.approx(expected, rel=1e-5)


def test_masked_bce_without_nan_equals_plain_bce():
    y = np.array([1.0, 0.0, 0.0, 1.0], "float32")
    p = np.array([0.9, 0.2, 0.4, 0.6], "float32")
    plain = float(keras.ops.convert_to_numpy(keras.losses.BinaryCrossentropy()(y, p)))
    assert loss_value(MaskedBinaryCrossentropy(), y, p) == pytest.approx(plain, rel=1e-5)


def test_masked_mse_is_the_mean_over_labelled_rows():
    y = np.array([2.0, NAN, 0.5, NAN], "float32")
    pred = np.array([[1.0], [9.0], [1.5], [-3.0]], "float32")
    assert loss_value(MaskedMeanSquaredError(), y, pred) == pytest.approx((1.0 + 1.0) / 2, rel=1e-6)


@pytest.mark.parametrize("loss", [MaskedBinaryCrossentropy(), MaskedMeanSquaredError()])
def test_an_all_nan_batch_gives_zero_loss_and_zero_gradient(loss):
    import tensorflow as tf

    y = np.full(3, NAN, "float32")
    p = tf.Variable([[0.3], [0.7], [0.5]])
    with tf.GradientTape() as tape:
        value = loss(y, p)
    assert float(value) == 0.0
    np.testing.assert_array_equal(tape.gradient(value, p).numpy(), 0.0)


def test_masked_auc_ignores_nan_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype("float32")
    p = np.clip(0.3 * y + rng.uniform(size=200), 0, 1).astype("float32")
    y_nan = y.copy()
    y_nan[::4] = NAN
    auc = MaskedAUC(num_thresholds=2000)
    auc.update_state(y_nan, p[:, None])
    labelled = ~np.isnan(y_nan)
    assert float(auc.result()) == pytest.approx(roc_auc_score(y[labelled], p[labelled]), abs=2e-3)


def test_ranking_score_weights_probabilities_and_scaled_watch():
    preds = {
        "click": np.array([[0.5], [0.1]]),
        "watch": np.array([[np.log1p(600.0)], [-1.0]]),  # 10 minutes -> 1.0; negative -> 0
        "like": np.array([[0.2], [0.4]]),
        "share": np.array([[0.9], [0.9]]),
    }
    score = ranking_score(preds, {"click": 1.0, "watch": 0.5, "like": 2.0})
    np.testing.assert_allclose(score, [0.5 + 0.5 + 0.4, 0.1 + 0.0 + 0.8])


def test_ranking_score_rejects_weighted_tasks_without_predictions():
    with pytest.raises(KeyError):
        ranking_score({"click": np.array([0.5])}, {"click": 1.0, "like": 1.0})

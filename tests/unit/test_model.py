"""The multi-task model: variants, the bias tower at inference, gates, save/load and a tiny learning check."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from recsys.config import ModelSettings
from recsys.features.spec import FeatureSpec
from recsys.model import (
    TASKS,
    build_multi_task_model,
    compile_multi_task_model,
    load_multi_task_model,
)

CATEGORICAL = ("user", "video", "category", "device")
SPEC = FeatureSpec(
    vocab_sizes={"user": 30, "video": 40, "category": 5, "device": 3},
    title_vocab_size=20,
    title_len=4,
    n_numeric=2,
    n_positions=6,
    categorical=CATEGORICAL,
)
SMALL = {
    "embedding_dim": 4,
    "shallow_units": (16,),
    "n_experts": 3,
    "n_shared_experts": 1,
    "expert_units": 8,
    "tower_units": 4,
}


def make_features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    features = {name: rng.integers(1, SPEC.vocab_sizes[name], n).astype("int32") for name in CATEGORICAL}
    features["title"] = rng.integers(0, SPEC.title_vocab_size, (n, SPEC.title_len)).astype("int32")
    features["numeric"] = rng.normal(size=(n, SPEC.n_numeric)).astype("float32")
    features["position"] = rng.integers(0, SPEC.n_positions, n).astype("int32")
    return features


def make_labels(rng: np.random.Generator, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Click depends on the category (1-2: often, 3-4: rarely); like/share are half missing."""
    n = len(features["user"])
    p_click = np.where(features["category"] <= 2, 0.7, 0.1)
    labels = {"click": (rng.uniform(size=n) < p_click).astype("float32")}
    labels["watch"] = np.where(labels["click"] == 1, rng.uniform(1, 5, n), 0.0).astype("float32")
    for task in ("like", "share"):
        y = (rng.uniform(size=n) < 0.2 * labels["click"]).astype("float32")
        y[rng.uniform(size=n) < 0.5] = np.nan
        labels[task] = y
    return labels


def dataset(features, labels, batch_size=64):
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)


def build(seed=0, **overrides) -> keras.Model:
    settings = ModelSettings(**{**SMALL, **overrides})
    return compile_multi_task_model(build_multi_task_model(SPEC, settings, seed=seed), settings, 1e-2)


@pytest.fixture(scope="module")
def trained():
    """An MMoE model fitted for a few epochs on the click-depends-on-category problem, and held-out data."""
    rng = np.random.default_rng(0)
    x_train, x_test = make_features(rng, 1500), make_features(rng, 500)
    y_train, y_test = make_labels(rng, x_train), make_labels(rng, x_test)
    model = build(seed=0)
    model.fit(dataset(x_train, y_train), epochs=4, verbose=0, shuffle=False)
    return model, x_test, y_test


def test_learns_that_click_depends_on_the_category(trained):
    model, x_test, y_test = trained
    pred = model.predict(x_test, verbose=0)
    assert set(pred) == set(TASKS) and all(pred[t].shape == (500, 1) for t in TASKS)
    assert roc_auc_score(y_test["click"], pred["click"][:, 0]) > 0.7


def test_save_and_load_give_identical_predictions_and_gates(trained, tmp_path):
    model, x_test, _ = trained
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = load_multi_task_model(path)
    before, after = model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    for task in TASKS:
        np.testing.assert_array_equal(before[task], after[task])
    for task, gates in model.gate_weights(x_test).items():
        np.testing.assert_array_equal(gates, loaded.gate_weights(x_test)[task])
    assert loaded.get_config()["settings"] == model.get_config()["settings"]


def test_gate_weights_are_one_softmax_per_task(trained):
    model, x_test, _ = trained
    gates = model.gate_weights(x_test, batch_size=128)
    assert set(gates) == set(TASKS)
    for weights in gates.values():
        assert weights.shape == (500, 3)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)


def train_one_step(variant: str, run_eagerly: bool):
    rng = np.random.default_rng(1)
    features = make_features(rng, 32)
    model = build(variant=variant)
    model.run_eagerly = run_eagerly
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(
        dataset(features, make_labels(rng, features), batch_size=32), epochs=1, verbose=0, shuffle=False
    )
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights, strict=True))
    out = model(features, training=False)
    assert all(out[t].shape == (32, 1) for t in TASKS)
    gates = model.gate_weights(features)
    assert gates == {} if variant == "shared_bottom" else {g.shape for g in gates.values()} == {(32, 3)}


@pytest.mark.parametrize("variant", ["mmoe", "shared_bottom", "ple"])
def test_each_variant_builds_and_trains_one_step(variant):
    train_one_step(variant, run_eagerly=True)  # eager: tracing a train step costs ~8 s on this machine


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["shared_bottom", "ple"])  # mmoe is fitted in graph mode above
def test_each_variant_trains_one_step_in_graph_mode(variant):
    train_one_step(variant, run_eagerly=False)


def test_bias_tower_is_added_to_the_click_logit_in_training_only():
    model = build(gate_dropout=0.0, position_dropout=0.0)
    table = np.random.default_rng(2).normal(size=model.bias_tower.table.shape).astype("float32")
    model.bias_tower.table.assign(table)
    features = make_features(np.random.default_rng(3), 50)
    served = {k: v for k, v in features.items() if k != "position"}
    inference = keras.ops.convert_to_numpy(model(features, training=False)["click"])[:, 0]
    for other in (np.zeros_like(features["position"]), (features["position"] + 1) % SPEC.n_positions):
        shifted = keras.ops.convert_to_numpy(model({**features, "position": other}, training=False)["click"])
        np.testing.assert_array_equal(shifted[:, 0], inference)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(served, training=False)["click"])[:, 0], inference
    )

    def logit(p):
        return np.log(p) - np.log1p(-p)

    training = keras.ops.convert_to_numpy(model(features, training=True)["click"])[:, 0]
    cell = features["position"] * SPEC.vocab_sizes["device"] + features["device"]
    expected_bias = np.where(features["position"] > 0, table[cell, 0], 0.0)
    np.testing.assert_allclose(logit(training) - logit(inference), expected_bias, atol=1e-4)


def test_the_same_seed_gives_the_same_weights():
    a, b, c = (build_multi_task_model(SPEC, ModelSettings(**SMALL), seed=s) for s in (7, 7, 8))
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    assert any(
        not np.array_equal(wa.numpy(), wc.numpy()) for wa, wc in zip(a.weights, c.weights, strict=True)
    )


def test_compile_rejects_loss_weights_for_unknown_tasks():
    settings = ModelSettings(loss_weights={"click": 1.0, "dwell": 1.0})
    with pytest.raises(ValueError, match="dwell"):
        compile_multi_task_model(build_multi_task_model(SPEC, settings, seed=0), settings, 1e-3)

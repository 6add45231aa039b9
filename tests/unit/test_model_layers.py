"""Each model layer against the same computation in NumPy, using the layer's own weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from recsys.model import build_expert_models, build_gating_network, build_shallow_tower, mixture_of_experts
from recsys.model.experts import PLE, MMoE
from recsys.model.layers import FeatureEmbedding, MaskedMeanPooling
from recsys.model.towers import PositionBiasTower

ATOL = 1e-5


def relu(x):
    return np.maximum(x, 0.0)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def dense(layer, x):
    kernel, bias = (w.numpy() for w in layer.weights)
    return x @ kernel + bias


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(5, 6)).astype("float32")


def test_masked_mean_pooling_ignores_padding_and_empty_rows_give_zeros():
    emb = np.arange(3 * 3 * 2, dtype="float32").reshape(3, 3, 2)
    ids = np.array([[5, 1, 0], [0, 0, 0], [2, 3, 4]], dtype="int32")
    out = keras.ops.convert_to_numpy(MaskedMeanPooling()(emb, ids))
    expected = np.stack([emb[0, :2].mean(0), np.zeros(2), emb[2].mean(0)])
    np.testing.assert_allclose(out, expected, atol=ATOL)


def test_feature_embedding_concatenates_lookups_pooled_title_and_numeric():
    layer = FeatureEmbedding(
        {"user": 4, "device": 3}, title_vocab_size=6, embedding_dim=2, categorical=("user", "device"), seed=0
    )
    inputs = {
        "user": np.array([1, 3, 9], "int32"),  # 9 is out of range: the unknown bucket 0
        "device": np.array([0, 2, 1], "int32"),
        "title": np.array([[2, 3, 0], [1, 0, 0], [0, 0, 0]], "int32"),
        "numeric": np.array([[0.5], [-1.0], [2.0]], "float32"),
    }
    out = keras.ops.convert_to_numpy(layer(inputs))
    user, device = (e.embeddings.numpy() for e in layer.embeddings)
    title = layer.title_embedding.embeddings.numpy()
    pooled = np.stack([title[[2, 3]].mean(0), title[1], np.zeros(2)])
    expected = np.concatenate([user[[1, 3, 0]], device[[0, 2, 1]], pooled, inputs["numeric"]], axis=1)
    np.testing.assert_allclose(out, expected, atol=ATOL)


def test_shallow_tower_is_a_relu_dense_stack(x):
    model = build_shallow_tower(x.shape[1], (4, 3), seed=0)
    assert model.output_shape == (None, 3)
    tower = model.get_layer("shallow_tower")
    out = keras.ops.convert_to_numpy(model(x))
    expected = relu(dense(tower.dense_layers[1], relu(dense(tower.dense_layers[0], x))))
    np.testing.assert_allclose(out, expected, atol=ATOL)


def test_experts_gate_and_mixture_match_numpy(x):
    experts = build_expert_models(n_experts=3, units=4, seed=0)
    gate = build_gating_network(n_experts=3, seed=1)
    e_out, g_out = experts(x), gate(x)
    kernel, bias = experts.kernel.numpy(), experts.bias.numpy()
    e_np = relu(np.einsum("bd,kdu->bku", x, kernel) + bias)
    g_np = softmax(dense(gate.logits, x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(e_out), e_np, atol=ATOL)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(g_out), g_np, atol=ATOL)
    mixed = keras.ops.convert_to_numpy(mixture_of_experts(x, experts, gate))
    np.testing.assert_allclose(mixed, (g_np[:, :, None] * e_np).sum(axis=1), atol=ATOL)


def test_mmoe_each_task_mixes_the_shared_experts_with_its_own_gate(x):
    layer = MMoE(("a", "b"), n_experts=3, expert_units=4, gate_dropout=0.5, seed=0)
    out = layer(x, training=False)  # no gate dropout at inference
    e_np = relu(np.einsum("bd,kdu->bku", x, layer.experts.kernel.numpy()) + layer.experts.bias.numpy())
    for task, gate in zip(("a", "b"), layer.gates, strict=True):
        g_np = softmax(dense(gate.logits, x))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(out[task]), np.einsum("bku,bk->bu", e_np, g_np), atol=ATOL
        )
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.gate_weights(x)[task]), g_np, atol=ATOL)


def test_ple_gates_span_own_then_shared_experts(x):
    layer = PLE(("a", "b"), n_experts=3, n_shared_experts=1, expert_units=4, seed=0)
    out = layer(x)
    shared = layer.shared_experts
    shared_np = relu(np.einsum("bd,kdu->bku", x, shared.kernel.numpy()) + shared.bias.numpy())
    own = layer.task_experts[1]
    own_np = relu(np.einsum("bd,kdu->bku", x, own.kernel.numpy()) + own.bias.numpy())
    g_np = softmax(dense(layer.gates[1].logits, x))
    assert g_np.shape == (5, 3)  # 2 own + 1 shared
    expected = np.einsum("bku,bk->bu", np.concatenate([own_np, shared_np], axis=1), g_np)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["b"]), expected, atol=ATOL)


def test_gate_dropout_zeroes_experts_renormalizes_and_never_drops_all():
    x = np.random.default_rng(1).normal(size=(2000, 6)).astype("float32")
    gate = build_gating_network(n_experts=4, gate_dropout=0.5, seed=0)
    full = keras.ops.convert_to_numpy(gate(x, training=False))
    dropped = keras.ops.convert_to_numpy(gate(x, training=True))
    kept = dropped > 0
    np.testing.assert_allclose(dropped.sum(axis=1), 1.0, atol=ATOL)
    assert kept.any(axis=1).all()
    # Survivors keep their relative weights: the undropped softmax renormalized over the kept experts.
    expected = np.where(kept, full, 0.0) / np.where(kept, full, 0.0).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dropped, expected, atol=ATOL)
    # P(zero) = 0.5, minus the rows that would lose all 4 experts (p = 1/16) and keep them all instead.
    assert abs((~kept).mean() - (0.5 - 0.5**4)) < 0.03
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gate(x, training=False)), full)


def test_gate_dropout_near_one_still_keeps_a_full_row():
    x = np.random.default_rng(2).normal(size=(50, 6)).astype("float32")
    gate = build_gating_network(n_experts=3, gate_dropout=0.999, seed=0)
    dropped = keras.ops.convert_to_numpy(gate(x, training=True))
    np.testing.assert_allclose(dropped.sum(axis=1), 1.0, atol=ATOL)
    assert (dropped > 0).any(axis=1).all()


def test_position_bias_tower_is_a_position_x_device_table_and_unknown_position_is_zero():
    tower = PositionBiasTower(n_positions=4, n_devices=3, position_dropout=0.0, seed=0)
    tower.build()
    table = np.random.default_rng(3).normal(size=(12, 1)).astype("float32")
    tower.table.assign(table)
    position, device = np.array([0, 1, 3, 2, 7], "int32"), np.array([2, 0, 2, 1, 1], "int32")
    out = keras.ops.convert_to_numpy(tower(position, device, training=True))
    expected = table[[0, 3, 11, 7, 0]] * np.array([[0], [1], [1], [1], [0]])  # 7 is out of range: unknown
    np.testing.assert_allclose(out, expected, atol=ATOL)


def test_position_dropout_sets_a_share_of_positions_to_unknown():
    tower = PositionBiasTower(n_positions=3, n_devices=1, position_dropout=0.3, seed=0)
    tower.build()
    tower.table.assign(np.ones((3, 1), "float32"))
    position = np.full(4000, 2, "int32")
    out = keras.ops.convert_to_numpy(tower(position, np.zeros_like(position), training=True))
    assert abs((out == 0).mean() - 0.3) < 0.03
    assert (keras.ops.convert_to_numpy(tower(position, np.zeros_like(position), training=False)) == 1).all()

"""Experts, gates and the three ways of sharing them between tasks: MMoE, shared bottom and PLE.

Each mixture layer maps the shallow tower's output ``[B, D]`` to one representation per task
(``{task: [B, expert_units]}``) and reports its gates with ``gate_weights(x)`` (``{task: [B, E]}``).

Gate dropout (Zhao et al., "Recommending What Video to Watch Next", RecSys 2019) fights gate
polarization, where a softmax gate collapses onto one expert: in training, each expert's gate weight is
set to zero with probability ``gate_dropout`` and the surviving weights are renormalized to sum to 1.
A row whose experts would all be dropped keeps its undropped gate.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from recsys.model.layers import derived_seed, glorot, register


@register
class Experts(keras.layers.Layer):
    """``n_experts`` independent one-layer ReLU experts, computed in one einsum.

    Output ``[B, n_experts, units]``: ``relu(x @ kernel[k] + bias[k])`` for each expert ``k``.
    """

    def __init__(self, n_experts: int, units: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.n_experts = int(n_experts)
        self.units = int(units)
        self.seed = seed

    def build(self, input_shape):
        input_dim = int(input_shape[-1])
        # Glorot for each expert's [input_dim, units] matrix (fan-in/out of one expert, not the stack).
        limit = (6.0 / (input_dim + self.units)) ** 0.5
        self.kernel = self.add_weight(
            shape=(self.n_experts, input_dim, self.units),
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=derived_seed(self.seed, 0)),
            name="kernel",
        )
        self.bias = self.add_weight(shape=(self.n_experts, self.units), initializer="zeros", name="bias")

    def call(self, x):
        return ops.relu(ops.einsum("bd,kdu->bku", x, self.kernel) + self.bias)

    def get_config(self):
        return {**super().get_config(), "n_experts": self.n_experts, "units": self.units, "seed": self.seed}


@register
class SoftmaxGate(keras.layers.Layer):
    """A softmax over experts computed from the input, with gate dropout in training. Output ``[B, E]``."""

    def __init__(self, n_experts: int, gate_dropout: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= gate_dropout < 1.0:
            raise ValueError(f"gate_dropout must be in [0, 1), got {gate_dropout}")
        self.n_experts = int(n_experts)
        self.gate_dropout = float(gate_dropout)
        self.seed = seed
        self.logits = keras.layers.Dense(n_experts, kernel_initializer=glorot(seed, 0), name="logits")
        self.seed_generator = keras.random.SeedGenerator(derived_seed(seed, 1))

    def call(self, x, training=None):
        weights = ops.softmax(self.logits(x), axis=-1)
        if training and self.gate_dropout > 0.0:
            weights = self.drop(weights)
        return weights

    def drop(self, weights):
        """Zero each weight with probability ``gate_dropout`` and renormalize; never drop a whole row."""
        keep = keras.random.uniform(ops.shape(weights), seed=self.seed_generator) >= self.gate_dropout
        keep = ops.cast(keep, weights.dtype)
        any_kept = ops.sum(keep, axis=-1, keepdims=True) > 0
        keep = ops.where(any_kept, keep, ops.ones_like(keep))
        kept = weights * keep
        return kept / ops.sum(kept, axis=-1, keepdims=True)

    def get_config(self):
        return {
            **super().get_config(),
            "n_experts": self.n_experts,
            "gate_dropout": self.gate_dropout,
            "seed": self.seed,
        }


def combine_experts(expert_outputs, gate_weights):
    """Gate-weighted sum of expert outputs: ``[B, E, U]`` and ``[B, E]`` -> ``[B, U]``."""
    return ops.einsum("beu,be->bu", expert_outputs, gate_weights)


def mixture_of_experts(inputs, experts, gating_weights):
    """The seed's mixture of experts: one gate's mixture of the experts' outputs, ``[B, expert_units]``.

    This is the computation inside every MMoE / PLE layer of the ranker (:func:`combine_experts`).

    Args:
        inputs: ``[B, D]``, the shared representation the experts read: the shallow tower's output
            (e.g. ``shallow_tower_model(x)``); used when ``experts`` or ``gating_weights`` is a layer.
        experts: a bank of experts from :func:`build_expert_models` (called on ``inputs``), or its output
            ``[B, E, U]``.
        gating_weights: one task's gate weights ``[B, E]`` (rows sum to 1), e.g.
            ``build_gating_network(D)(inputs)``; or the gate layer itself (called on ``inputs``).

    Returns:
        ``[B, U]``: for each row, the sum over experts of gate weight x expert output.
    """
    expert_outputs = experts(inputs) if callable(experts) else experts
    weights = gating_weights(inputs) if callable(gating_weights) else gating_weights
    return combine_experts(expert_outputs, weights)


def _model_settings():
    from recsys.defaults import settings_or_default

    return settings_or_default()


def build_expert_models(
    input_shape: int | None = None,
    n_experts: int | None = None,
    units: int | None = None,
    *,
    seed: int | None = None,
) -> Experts:
    """The seed's bank of experts: the :class:`Experts` layer the ranker's MMoE/PLE use.

    Args:
        input_shape: width ``D`` of the input (the shallow tower's output); the layer is built for it
            when given, else on its first call.
        n_experts: default ``settings.model.n_experts`` (4).
        units: each expert's output width, default ``settings.model.expert_units`` (32).
        seed: default ``settings.seed``.

    Returns:
        An ``Experts`` layer, ``[B, D] -> [B, n_experts, units]``.
    """
    if n_experts is None or units is None or seed is None:
        s = _model_settings()
        n_experts = s.model.n_experts if n_experts is None else n_experts
        units = s.model.expert_units if units is None else units
        seed = s.seed if seed is None else seed
    layer = Experts(n_experts, units, seed=seed, name="experts")
    if input_shape is not None:
        layer.build((None, int(input_shape)))
    return layer


def build_gating_network(
    input_shape: int | None = None,
    n_experts: int | None = None,
    gate_dropout: float | None = None,
    *,
    seed: int | None = None,
) -> SoftmaxGate:
    """The seed's gating network: one task's :class:`SoftmaxGate`, as in the ranker's MMoE/PLE.

    Args:
        input_shape: width ``D`` of the input; the layer is built for it when given.
        n_experts: default ``settings.model.n_experts`` (4).
        gate_dropout: gate dropout in training, default ``settings.model.gate_dropout`` (0.1).
        seed: default ``settings.seed`` + 1 (not the experts' seed).

    Returns:
        A ``SoftmaxGate`` layer, ``[B, D] -> [B, n_experts]`` softmax weights.
    """
    if n_experts is None or gate_dropout is None or seed is None:
        s = _model_settings()
        n_experts = s.model.n_experts if n_experts is None else n_experts
        gate_dropout = s.model.gate_dropout if gate_dropout is None else gate_dropout
        seed = s.seed + 1 if seed is None else seed
    layer = SoftmaxGate(n_experts, gate_dropout, seed=seed)
    if input_shape is not None:  # create the weights: one call on a zero row
        layer(ops.zeros((1, int(input_shape))))
    return layer


@register
class MMoE(keras.layers.Layer):
    """Multi-gate mixture of experts: ``n_experts`` shared experts and one gate per task."""

    def __init__(
        self,
        tasks: Sequence[str],
        n_experts: int,
        expert_units: int,
        gate_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.n_experts = int(n_experts)
        self.expert_units = int(expert_units)
        self.gate_dropout = float(gate_dropout)
        self.seed = seed
        self.experts = Experts(n_experts, expert_units, seed=derived_seed(seed, 0), name="experts")
        self.gates = [
            SoftmaxGate(n_experts, gate_dropout, seed=derived_seed(seed, 1 + i), name=f"gate_{task}")
            for i, task in enumerate(self.tasks)
        ]

    def call(self, x, training=None):
        experts = self.experts(x)
        return {
            task: combine_experts(experts, gate(x, training=training))
            for task, gate in zip(self.tasks, self.gates, strict=True)
        }

    def gate_weights(self, x):
        """Inference-time gates, ``{task: [B, n_experts]}``."""
        return {task: gate(x, training=False) for task, gate in zip(self.tasks, self.gates, strict=True)}

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": list(self.tasks),
            "n_experts": self.n_experts,
            "expert_units": self.expert_units,
            "gate_dropout": self.gate_dropout,
            "seed": self.seed,
        }


@register
class SharedBottom(keras.layers.Layer):
    """The baseline: one shared ReLU block whose output every task tower reads. It has no gates."""

    def __init__(self, tasks: Sequence[str], expert_units: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.expert_units = int(expert_units)
        self.seed = seed
        self.block = keras.layers.Dense(
            expert_units, activation="relu", kernel_initializer=glorot(seed, 0), name="block"
        )

    def call(self, x, training=None):
        shared = self.block(x)
        return {task: shared for task in self.tasks}

    def gate_weights(self, x):
        """No gates: an empty dict."""
        return {}

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": list(self.tasks),
            "expert_units": self.expert_units,
            "seed": self.seed,
        }


@register
class PLE(keras.layers.Layer):
    """Progressive Layered Extraction with one extraction layer (Tang et al., RecSys 2020, "CGC").

    Each task owns ``n_experts - n_shared_experts`` experts (at least 1) and all tasks share
    ``n_shared_experts``, so every task's gate spans ``n_experts`` experts, as in MMoE, which keeps the
    gate-utilization reports comparable. Gate columns: the task's own experts first, then the shared ones.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        n_experts: int,
        n_shared_experts: int,
        expert_units: int,
        gate_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.n_experts = int(n_experts)
        self.n_shared_experts = int(n_shared_experts)
        self.n_task_experts = max(1, self.n_experts - self.n_shared_experts)
        self.expert_units = int(expert_units)
        self.gate_dropout = float(gate_dropout)
        self.seed = seed
        n_gate = self.n_task_experts + self.n_shared_experts
        self.shared_experts = (
            Experts(self.n_shared_experts, expert_units, seed=derived_seed(seed, 0), name="shared_experts")
            if self.n_shared_experts > 0
            else None
        )
        self.task_experts = [
            Experts(self.n_task_experts, expert_units, seed=derived_seed(seed, 1 + i), name=f"experts_{task}")
            for i, task in enumerate(self.tasks)
        ]
        self.gates = [
            SoftmaxGate(n_gate, gate_dropout, seed=derived_seed(seed, 101 + i), name=f"gate_{task}")
            for i, task in enumerate(self.tasks)
        ]

    def call(self, x, training=None):
        shared = self.shared_experts(x) if self.shared_experts is not None else None
        out = {}
        for task, experts, gate in zip(self.tasks, self.task_experts, self.gates, strict=True):
            own = experts(x)
            pool = own if shared is None else ops.concatenate([own, shared], axis=1)
            out[task] = combine_experts(pool, gate(x, training=training))
        return out

    def gate_weights(self, x):
        """Inference-time gates, ``{task: [B, n_task_experts + n_shared_experts]}``."""
        return {task: gate(x, training=False) for task, gate in zip(self.tasks, self.gates, strict=True)}

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": list(self.tasks),
            "n_experts": self.n_experts,
            "n_shared_experts": self.n_shared_experts,
            "expert_units": self.expert_units,
            "gate_dropout": self.gate_dropout,
            "seed": self.seed,
        }


def build_mixture(
    variant: str,
    tasks: Sequence[str],
    n_experts: int,
    n_shared_experts: int,
    expert_units: int,
    gate_dropout: float,
    seed: int | None = None,
) -> MMoE | SharedBottom | PLE:
    """The mixture layer for a configured ``variant`` ("mmoe", "shared_bottom" or "ple")."""
    if variant == "mmoe":
        return MMoE(tasks, n_experts, expert_units, gate_dropout, seed=seed, name="mixture")
    if variant == "shared_bottom":
        return SharedBottom(tasks, expert_units, seed=seed, name="mixture")
    if variant == "ple":
        return PLE(tasks, n_experts, n_shared_experts, expert_units, gate_dropout, seed=seed, name="mixture")
    raise ValueError(f"unknown model variant {variant!r}")

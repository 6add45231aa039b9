"""Task towers and the selection-bias (position x device) shallow tower."""

from __future__ import annotations

import keras
from keras import ops

from recsys.model.layers import derived_seed, glorot, register, safe_index


@register
class TaskTower(keras.layers.Layer):
    """One task's head: a ReLU dense layer then a single logit ``[B, 1]`` (the model applies the link)."""

    def __init__(self, units: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.seed = seed
        self.hidden = keras.layers.Dense(
            units, activation="relu", kernel_initializer=glorot(seed, 0), name="hidden"
        )
        self.logit = keras.layers.Dense(1, kernel_initializer=glorot(seed, 1), name="logit")

    def call(self, x):
        return self.logit(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "seed": self.seed}


@register
class PositionBiasTower(keras.layers.Layer):
    """The selection-bias shallow tower: one learned scalar per (position, device) cell, ``[B, 1]``.

    Position 0 means "unknown" and always contributes exactly 0. In training, each row's position is
    dropped (set to unknown) with probability ``position_dropout``, so the main towers learn to predict
    without it, which is how serving calls the model. The table starts at zero: no bias until learned.
    The model adds this to the click logit in training only; at inference it is not added at all.
    """

    def __init__(
        self,
        n_positions: int,
        n_devices: int,
        position_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n_positions = int(n_positions)
        self.n_devices = int(n_devices)
        self.position_dropout = float(position_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(derived_seed(seed, 0))

    def build(self, input_shape=None):
        self.table = self.add_weight(
            shape=(self.n_positions * self.n_devices, 1), initializer="zeros", name="table"
        )

    def call(self, position, device, training=None):
        position = safe_index(position, self.n_positions)
        if training and self.position_dropout > 0.0:
            keep = (
                keras.random.uniform(ops.shape(position), seed=self.seed_generator) >= self.position_dropout
            )
            position = ops.where(keep, position, 0)
        cell = position * self.n_devices + safe_index(device, self.n_devices)
        known = ops.expand_dims(ops.cast(position > 0, self.compute_dtype), -1)
        return ops.take(self.table, cell, axis=0) * known

    def get_config(self):
        return {
            **super().get_config(),
            "n_positions": self.n_positions,
            "n_devices": self.n_devices,
            "position_dropout": self.position_dropout,
            "seed": self.seed,
        }

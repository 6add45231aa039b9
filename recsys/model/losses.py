"""Losses and metrics that ignore missing labels (NaN).

A row without a label for a task contributes nothing to that task's loss, and the loss is the mean over
the rows that have one; a batch with no labels at all gives 0, not NaN. The per-row losses returned by
``call`` are scaled by ``batch / labelled`` so that Keras' usual mean over the batch gives exactly that.
"""

from __future__ import annotations

import keras
from keras import ops

from recsys.model.layers import register

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] before the log


def _flatten(y_true, y_pred):
    return ops.reshape(y_true, (-1,)), ops.reshape(y_pred, (-1,))


def _masked_mean_weights(y_true):
    """(labels with NaN set to 0, per-row weight: batch/labelled for labelled rows, 0 otherwise)."""
    labelled = ops.logical_not(ops.isnan(y_true))
    mask = ops.cast(labelled, y_true.dtype)
    total = ops.cast(ops.shape(y_true)[0], y_true.dtype)
    weight = mask * ops.divide_no_nan(total, ops.sum(mask))
    return ops.where(labelled, y_true, 0.0), weight


def masked_binary_crossentropy(y_true, y_pred):
    """Per-row cross-entropy of probabilities ``y_pred``, scaled for a masked mean (see module doc)."""
    y_true, y_pred = _flatten(y_true, y_pred)
    y, weight = _masked_mean_weights(y_true)
    p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    return -(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p)) * weight


def masked_mean_squared_error(y_true, y_pred):
    """Per-row squared error, scaled for a masked mean (see module doc)."""
    y_true, y_pred = _flatten(y_true, y_pred)
    y, weight = _masked_mean_weights(y_true)
    return ops.square(y_pred - y) * weight


@register
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy over the labelled rows only."""

    def __init__(self, name: str = "masked_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return masked_binary_crossentropy(y_true, y_pred)


@register
class MaskedMeanSquaredError(keras.losses.Loss):
    """Mean squared error over the labelled rows only."""

    def __init__(self, name: str = "masked_mean_squared_error", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return masked_mean_squared_error(y_true, y_pred)


@register
class MaskedAUC(keras.metrics.AUC):
    """ROC AUC over the labelled rows only (NaN labels get sample weight 0)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.reshape(ops.convert_to_tensor(y_true, "float32"), (-1,))
        y_pred = ops.reshape(ops.convert_to_tensor(y_pred, "float32"), (-1,))
        labelled = ops.logical_not(ops.isnan(y_true))
        weight = ops.cast(labelled, "float32")
        if sample_weight is not None:
            weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        return super().update_state(ops.where(labelled, y_true, 0.0), y_pred, sample_weight=weight)


# The task spec (recsys/tasks.py) names its loss and training metrics; these are the Keras objects.
LOSSES = {
    "masked_binary_crossentropy": MaskedBinaryCrossentropy,
    "masked_mean_squared_error": MaskedMeanSquaredError,
}
METRICS = {"auc": MaskedAUC}

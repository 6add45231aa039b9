"""The multi-task ranking model (see ARCHITECTURE.md, "The model").

Modules: ``layers`` (feature embeddings, title pooling, shallow tower), ``experts`` (experts, gates,
MMoE / shared bottom / PLE), ``towers`` (task towers, selection-bias tower), ``losses`` (NaN-masked
losses and AUC), ``multitask`` (the model, build, compile, load), ``scoring`` (the ranking score). The
heads (names, kinds, losses, metrics, weights) come from the task spec, :mod:`recsys.tasks`.

Importing this package imports Keras and registers the custom layers, which ``keras.saving.load_model``
needs; keep it out of module-level imports in DAG files.
"""

from recsys.model.experts import build_expert_models, build_gating_network, mixture_of_experts
from recsys.model.layers import build_shallow_tower
from recsys.model.losses import MaskedAUC, MaskedBinaryCrossentropy, MaskedMeanSquaredError
from recsys.model.multitask import (
    BINARY_TASKS,
    TASKS,
    MultiTaskModel,
    build_multi_task_model,
    compile_multi_task_model,
    load_multi_task_model,
)
from recsys.model.scoring import WATCH_SCALE, ranking_score

__all__ = [
    "BINARY_TASKS",
    "TASKS",
    "WATCH_SCALE",
    "MaskedAUC",
    "MaskedBinaryCrossentropy",
    "MaskedMeanSquaredError",
    "MultiTaskModel",
    "build_expert_models",
    "build_gating_network",
    "build_multi_task_model",
    "build_shallow_tower",
    "compile_multi_task_model",
    "load_multi_task_model",
    "mixture_of_experts",
    "ranking_score",
]

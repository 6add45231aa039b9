"""The multi-task ranking model (see ARCHITECTURE.md, "The model").

Modules: ``layers`` (feature embeddings, title pooling, shallow tower), ``experts`` (experts, gates,
MMoE / shared bottom / PLE), ``towers`` (task towers, selection-bias tower), ``losses`` (NaN-masked
losses and AUC), ``multitask`` (the model, build, compile, load), ``scoring`` (the ranking score). The
heads (names, kinds, losses, metrics, weights) come from the task spec, :mod:`recsys.tasks`.

The seed's names are re-exported here: :func:`build_shallow_tower`, :func:`build_multi_task_model`,
:func:`compile_multi_task_model`, :func:`build_expert_models`, :func:`build_gating_network`,
:func:`mixture_of_experts` (see docs/api.md). Imports are lazy: ``import recsys.model`` stays cheap (no
Keras) until a name is used; using any model name imports Keras and registers the custom layers, which
``keras.saving.load_model`` needs (:func:`register_layers` does only that).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_expert_models": "experts",
    "build_gating_network": "experts",
    "mixture_of_experts": "experts",
    "combine_experts": "experts",
    "build_shallow_tower": "layers",
    "MaskedAUC": "losses",
    "MaskedBinaryCrossentropy": "losses",
    "MaskedMeanSquaredError": "losses",
    "BINARY_TASKS": "multitask",
    "TASKS": "multitask",
    "MultiTaskHead": "multitask",
    "MultiTaskModel": "multitask",
    "build_multi_task_model": "multitask",
    "compile_multi_task_model": "multitask",
    "load_multi_task_model": "multitask",
    "WATCH_SCALE": "scoring",
    "ranking_score": "scoring",
}

__all__ = sorted([*_EXPORTS, "register_layers"])


def register_layers() -> None:
    """Import every module that registers a custom Keras layer (before ``keras.saving.load_model``)."""
    importlib.import_module(f"{__name__}.multitask")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

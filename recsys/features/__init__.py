"""Feature engineering: examples, labels, the time split and the fitted transform.

Modules: ``build`` (examples + labels, time split, encoding), ``transform`` (fitted vocabularies and
normalizers, saved with the model), ``partition`` (the features stage), ``api`` (the seed's functions).

The seed's names are re-exported here (see docs/api.md): :func:`feature_engineering` builds labelled
examples; :func:`create_text_embeddings`, :func:`create_categorical_embeddings` and
:func:`scale_numerical_features` apply the champion's fitted transform and embedding tables. Imports are
lazy, so ``import recsys.features`` pulls in neither pandas nor Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "feature_engineering": "api",
    "create_text_embeddings": "api",
    "create_categorical_embeddings": "api",
    "scale_numerical_features": "api",
    "build_feature_partition": "partition",
    "build_examples": "build",
    "split_by_time": "build",
    "CATEGORICAL": "spec",
    "NUMERIC": "spec",
    "FeatureSpec": "spec",
    "Transform": "transform",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

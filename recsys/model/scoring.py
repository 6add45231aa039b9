"""The final ranking score: a configurable weighted sum of the task predictions (NumPy only).

``score = sum_t weights[t] * term_t`` where, for the binary tasks (click, like, share), ``term_t`` is the
predicted probability, and for ``watch`` it is the predicted log1p(watch seconds), floored at 0 and
divided by ``watch_scale`` (default log1p(600): ten minutes of watch time counts 1.0). That puts watch
on the same rough [0, 1] scale as the probabilities, grows slowly for long videos, and is a per-row
function, so a candidate's score does not depend on which other candidates share its batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

WATCH_SCALE = float(np.log1p(600.0))


def ranking_score(
    predictions: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    watch_scale: float = WATCH_SCALE,
) -> np.ndarray:
    """Score ``[N]`` for ``predictions`` as returned by the model (``{task: [N, 1] or [N]}``).

    Tasks absent from ``weights`` count 0; a weighted task absent from ``predictions`` is an error.
    """
    missing = [task for task, w in weights.items() if w and task not in predictions]
    if missing:
        raise KeyError(f"no predictions for weighted tasks {missing}")
    n = len(np.asarray(next(iter(predictions.values()))).reshape(-1))
    score = np.zeros(n, dtype=np.float64)
    for task, w in weights.items():
        if not w:
            continue
        term = np.asarray(predictions[task], dtype=np.float64).reshape(-1)
        if task == "watch":
            term = np.maximum(term, 0.0) / watch_scale
        score += w * term
    return score

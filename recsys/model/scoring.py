"""The final ranking score: a configurable weighted sum of the task predictions (NumPy only).

``score = sum_t weights[t] * term_t`` over the tasks of the spec (:mod:`recsys.tasks`): for a binary task
(click, like, share) ``term_t`` is the predicted probability; for a regression task (``watch``) it is the
prediction floored at 0 and divided by the task's ``score_scale`` (watch: log1p(600), so ten minutes of
watch time counts 1.0). That puts watch on the same rough [0, 1] scale as the probabilities, grows slowly
for long videos, and is a per-row function, so a candidate's score does not depend on which other
candidates share its batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys import tasks as task_spec
from recsys.tasks import Task

WATCH_SCALE = task_spec.get("watch").score_scale  # kept for callers of the old API


def ranking_score(
    predictions: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    tasks: Sequence[Task] | None = None,
) -> np.ndarray:
    """Score ``[N]`` for ``predictions`` as returned by the model (``{task: [N, 1] or [N]}``).

    Tasks absent from ``weights`` count 0; a weighted task absent from ``predictions`` or from the spec
    (``tasks``, default :data:`recsys.tasks.TASKS`) is an error.
    """
    missing = [task for task, w in weights.items() if w and task not in predictions]
    if missing:
        raise KeyError(f"no predictions for weighted tasks {missing}")
    spec = {t.name: t for t in task_spec.current(tasks)}
    unknown = [task for task, w in weights.items() if w and task not in spec]
    if unknown:
        raise KeyError(f"weighted tasks {unknown} are not in the task spec {list(spec)}")
    n = len(np.asarray(next(iter(predictions.values()))).reshape(-1))
    score = np.zeros(n, dtype=np.float64)
    for task, w in weights.items():
        if not w:
            continue
        term = np.asarray(predictions[task], dtype=np.float64).reshape(-1)
        if not spec[task].binary:
            term = np.maximum(term, 0.0) / spec[task].score_scale
        score += w * term
    return score

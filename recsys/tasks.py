"""The one spec of the ranker's tasks: what each head predicts, how it is labelled, trained, judged, scored.

Every place that used to spell out ``("click", "watch", "like", "share")`` reads :data:`TASKS` instead:
the examples' label columns (``features.build``), the model's towers, output links, losses, loss
weights and Keras metrics (``model.multitask``), the ranking score (``model.scoring``), the offline
metrics and reliability diagrams (``evaluate``, ``report``), the baselines' per-task predictions, the
serving outputs (``serving.rank``, ``registry``) and the default loss/score weights of
:class:`recsys.config.ModelSettings`. Adding a head is adding a :class:`Task` to :data:`TASKS`, nothing
else (``tests/unit/test_tasks.py`` does it and trains the fifth head).

As with TFRS/keras-rs task objects, a task carries its loss and metrics; here as names (this module
imports nothing heavy: config and the DAG files import it), which ``recsys.model.losses`` maps to the
NaN-masked Keras objects. The kind decides the defaults: a ``binary`` task is a sigmoid probability
trained with masked binary cross-entropy and judged by (masked) AUC; a ``regression`` task is a linear
output trained with masked squared error and judged by RMSE.

Functions taking ``tasks=None`` use :data:`TASKS` as it is *when called* (not when imported), so the spec
is injectable: pass another tuple, or replace ``recsys.tasks.TASKS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

Kind = Literal["binary", "regression"]
CLICK_COLUMN = "clicked"  # the interaction column that says an impression was clicked
ENGAGEMENT = "click"  # the task the selection-bias tower's logit is added to (in training only)

LOSSES = ("masked_binary_crossentropy", "masked_mean_squared_error")
ACTIVATIONS = ("sigmoid", "linear")
TRAIN_METRICS = ("auc",)  # Keras metrics a task may ask for (logged as ``{task}_auc``, ``val_{task}_auc``)
_DEFAULTS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    # kind: (loss, activation, training metrics, offline metrics)
    "binary": (
        "masked_binary_crossentropy",
        "sigmoid",
        ("auc",),
        ("auc", "gauc", "logloss", "ece", "pred_obs_ratio", "rows"),
    ),
    "regression": ("masked_mean_squared_error", "linear", (), ("rmse",)),
}


@dataclass(frozen=True)
class Task:
    """One head of the ranker.

    Label (:meth:`label`, from a frame of interactions): the interaction ``column``, as a float; with
    ``log1p``, log1p of it (regression on a skewed quantity); with ``threshold``, 1 where it exceeds the
    threshold, else 0 (a binary label derived from a numeric column). With ``on_click`` the label exists
    only on clicked impressions and is NaN elsewhere, so those rows are masked out of the task's loss and
    metrics (satisfaction given a click, not engagement).

    Loss, activation and metrics default from ``kind`` (see the module doc). ``loss_weight`` and
    ``score_weight`` are the defaults of ``ModelSettings.loss_weights`` / ``score_weights``, which override
    them by task name. Score term: a binary task adds ``score_weight * p``; a regression task adds
    ``score_weight * max(prediction, 0) / score_scale``, which puts it on the rough [0, 1] scale of a
    probability.
    """

    name: str
    kind: Kind
    column: str
    on_click: bool = True
    log1p: bool = False
    threshold: float | None = None
    loss_weight: float = 0.5
    score_weight: float = 0.0
    score_scale: float = 1.0
    loss: str = ""
    activation: str = ""
    metrics: tuple[str, ...] | None = None  # Keras metrics during training
    offline_metrics: tuple[str, ...] | None = None  # ``recsys.evaluate.task_metrics`` names

    def __post_init__(self):
        if self.kind not in _DEFAULTS:
            raise ValueError(
                f"task {self.name!r}: kind must be one of {sorted(_DEFAULTS)}, not {self.kind!r}"
            )
        if not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} must be an identifier (it names layers and metrics)")
        loss, activation, metrics, offline = _DEFAULTS[self.kind]
        object.__setattr__(self, "loss", self.loss or loss)
        object.__setattr__(self, "activation", self.activation or activation)
        object.__setattr__(self, "metrics", tuple(metrics if self.metrics is None else self.metrics))
        object.__setattr__(
            self, "offline_metrics", tuple(offline if self.offline_metrics is None else self.offline_metrics)
        )
        for what, value, allowed in (
            ("loss", self.loss, LOSSES),
            ("activation", self.activation, ACTIVATIONS),
            *(("metric", m, TRAIN_METRICS) for m in self.metrics),
        ):
            if value not in allowed:
                raise ValueError(f"task {self.name!r}: {what} must be one of {allowed}, not {value!r}")
        if self.score_scale <= 0:
            raise ValueError(f"task {self.name!r}: score_scale must be > 0")
        if self.threshold is not None and self.kind != "binary":
            raise ValueError(f"task {self.name!r}: a threshold makes a binary label; kind is {self.kind!r}")
        if self.log1p and self.kind != "regression":
            raise ValueError(f"task {self.name!r}: log1p is for a regression target; kind is {self.kind!r}")

    @property
    def binary(self) -> bool:
        return self.kind == "binary"

    def label(self, interactions):
        """The label ``float32 [N]`` of each row of ``interactions`` (NaN: no label, masked out)."""
        import numpy as np
        import pandas as pd

        x = pd.to_numeric(interactions[self.column]).to_numpy(float)
        if self.threshold is not None:
            x = np.where(np.isnan(x), np.nan, (x > self.threshold).astype(float))
        if self.log1p:
            x = np.log1p(x)
        if self.on_click:
            x = x * np.where(pd.to_numeric(interactions[CLICK_COLUMN]).to_numpy(float) > 0, 1.0, np.nan)
        return x.astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-able fields (the model's config carries its tasks, so a saved model reloads as trained)."""
        d = asdict(self)
        d["metrics"], d["offline_metrics"] = list(self.metrics), list(self.offline_metrics)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Task:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("metrics", "offline_metrics"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# The order is part of the model: it fixes the towers' seeds and the outputs' order.
TASKS: tuple[Task, ...] = (
    Task("click", "binary", column="clicked", on_click=False, loss_weight=1.0, score_weight=1.0),
    Task(
        "watch",
        "regression",
        column="watch_seconds",
        log1p=True,
        loss_weight=0.5,
        score_weight=0.3,
        score_scale=math.log1p(600.0),  # ten minutes of watch time counts 1.0
    ),
    Task("like", "binary", column="liked", loss_weight=0.5, score_weight=0.5),
    Task("share", "binary", column="shared", loss_weight=0.5, score_weight=0.5),
)


def current(tasks: Sequence[Task] | None = None) -> tuple[Task, ...]:
    """``tasks``, or the module's :data:`TASKS` as it is now; checks names are unique and present."""
    out = tuple(TASKS if tasks is None else tasks)
    seen = [t.name for t in out]
    if not out or len(set(seen)) != len(seen):
        raise ValueError(f"a task spec needs at least one task and unique names, got {seen}")
    return out


def of_model(model) -> tuple[Task, ...]:
    """The tasks a model was built with (a ``MultiTaskModel``'s ``tasks``), else the spec's."""
    return current(getattr(model, "tasks", None))


def names(tasks: Sequence[Task] | None = None) -> tuple[str, ...]:
    return tuple(t.name for t in current(tasks))


def binary(tasks: Sequence[Task] | None = None) -> tuple[Task, ...]:
    return tuple(t for t in current(tasks) if t.kind == "binary")


def regression(tasks: Sequence[Task] | None = None) -> tuple[Task, ...]:
    return tuple(t for t in current(tasks) if t.kind == "regression")


def get(name: str, tasks: Sequence[Task] | None = None) -> Task:
    for t in current(tasks):
        if t.name == name:
            return t
    raise KeyError(f"no task {name!r} in the spec {names(tasks)}")


def check_names(weights: Mapping[str, float], what: str, tasks: Sequence[Task] | None = None) -> None:
    """A clear error when ``weights`` names a task the spec does not have (a typo in the settings)."""
    unknown = set(weights) - set(names(tasks))
    if unknown:
        raise ValueError(
            f"{what} names unknown tasks: {sorted(unknown)} (the tasks are {list(names(tasks))})"
        )


def loss_weights(
    overrides: Mapping[str, float] | None = None, tasks: Sequence[Task] | None = None
) -> dict[str, float]:
    """``{task: loss weight}`` in spec order: the spec's defaults, overridden by name (0 turns a task off)."""
    overrides = dict(overrides or {})
    check_names(overrides, "loss_weights", tasks)
    return {t.name: float(overrides.get(t.name, t.loss_weight)) for t in current(tasks)}


def score_weights(
    overrides: Mapping[str, float] | None = None, tasks: Sequence[Task] | None = None
) -> dict[str, float]:
    """``{task: score weight}`` in spec order: the spec's defaults, overridden by name."""
    overrides = dict(overrides or {})
    check_names(overrides, "score_weights", tasks)
    return {t.name: float(overrides.get(t.name, t.score_weight)) for t in current(tasks)}

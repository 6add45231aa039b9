"""The multi-task ranker: features -> shallow tower -> mixture (MMoE / shared bottom / PLE) -> task towers.

Outputs, a dict of ``[B, 1]`` arrays, one per task of the task spec (:mod:`recsys.tasks`): by default
``click``, ``like``, ``share`` probabilities and ``watch``, the predicted log1p(watch seconds); the spec
gives each head its name, its output link (sigmoid or linear), its loss and metrics. In training only,
the selection-bias tower's position x device scalar is added to the click logit; at inference
(``training=False``, which ``predict`` uses) it is not, so predictions do not depend on ``position`` and
serving may leave it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from recsys import tasks as task_spec
from recsys.config import ModelSettings
from recsys.features.spec import DEVICE, POSITION, TITLE, FeatureSpec
from recsys.model.experts import build_mixture
from recsys.model.layers import FeatureEmbedding, ShallowTower, derived_seed, register
from recsys.model.losses import LOSSES, METRICS
from recsys.model.towers import PositionBiasTower, TaskTower
from recsys.tasks import Task

# Names of the default spec's tasks, kept for callers of the old API (the spec is recsys.tasks.TASKS).
TASKS = task_spec.names()
BINARY_TASKS = tuple(t.name for t in task_spec.binary())
ENGAGEMENT_TASK = task_spec.ENGAGEMENT  # the logit the selection-bias tower is added to


def task_logits(mixture, towers, shared, training, tasks: Sequence[Task]) -> dict:
    """The mixture's per-task representations of ``shared`` ``[B, D]`` through each task's tower."""
    reps = mixture(shared, training=training)
    return {t.name: tower(reps[t.name]) for t, tower in zip(tasks, towers, strict=True)}


def task_outputs(logits: dict, tasks: Sequence[Task]) -> dict:
    """Each task's output activation on its logit: a probability (sigmoid) or a regression (linear)."""
    return {t.name: _link(t, logits[t.name]) for t in tasks}


@register
class MultiTaskModel(keras.Model):
    """The ranker. Built from plain dicts (``FeatureSpec.to_dict()``, ``ModelSettings.model_dump()``) so
    that its config is JSON and a saved ``.keras`` file reloads without the caller's objects. ``tasks``:
    the task spec as ``Task.to_dict()`` dicts (default: :data:`recsys.tasks.TASKS`); the config keeps it."""

    def __init__(
        self, spec: dict, settings: dict, seed: int | None = None, tasks: list[dict] | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        fs, ms = FeatureSpec.from_dict(spec), ModelSettings(**settings)
        self.feature_spec, self.model_settings, self.seed = fs, ms, seed
        self.tasks = task_spec.current(None if tasks is None else [Task.from_dict(t) for t in tasks])
        names = task_spec.names(self.tasks)
        self.features = FeatureEmbedding(
            fs.vocab_sizes,
            fs.title_vocab_size,
            ms.embedding_dim,
            fs.categorical,
            seed=derived_seed(seed, 0),
            name="features",
        )
        self.shallow = ShallowTower(ms.shallow_units, seed=derived_seed(seed, 1), name="shallow_tower")
        self.mixture = build_mixture(
            ms.variant,
            names,
            ms.n_experts,
            ms.n_shared_experts,
            ms.expert_units,
            ms.gate_dropout,
            seed=derived_seed(seed, 2),
        )
        self.towers = [
            TaskTower(ms.tower_units, seed=derived_seed(seed, 10 + i), name=f"tower_{task}")
            for i, task in enumerate(names)
        ]
        self.bias_tower = (
            PositionBiasTower(
                fs.n_positions,
                fs.vocab_sizes.get(DEVICE, 1),
                ms.position_dropout,
                seed=derived_seed(seed, 3),
                name="bias_tower",
            )
            if ms.bias_tower
            else None
        )

    def build(self, input_shape=None):
        """Create every weight by running the model once on a one-row dummy input made from the spec."""
        self._forward(self.dummy_inputs(), training=False)
        if self.bias_tower is not None:
            self.bias_tower.build()

    def dummy_inputs(self, batch: int = 1) -> dict[str, np.ndarray]:
        fs = self.feature_spec
        inputs = {name: np.zeros((batch,), np.int32) for name in fs.categorical}
        inputs[TITLE] = np.zeros((batch, fs.title_len), np.int32)
        inputs["numeric"] = np.zeros((batch, fs.n_numeric), np.float32)
        inputs[POSITION] = np.zeros((batch,), np.int32)
        return inputs

    def _shared(self, inputs, training):
        return self.shallow(self.features(inputs), training=training)

    def _forward(self, inputs, training):
        logits = task_logits(self.mixture, self.towers, self._shared(inputs, training), training, self.tasks)
        if training and self.bias_tower is not None and POSITION in inputs and ENGAGEMENT_TASK in logits:
            device = inputs[DEVICE] if DEVICE in inputs else ops.zeros_like(inputs[POSITION])
            bias = self.bias_tower(inputs[POSITION], device, training=True)
            logits[ENGAGEMENT_TASK] = logits[ENGAGEMENT_TASK] + bias
        return task_outputs(logits, self.tasks)

    def call(self, inputs, training=None):
        return self._forward(inputs, training=bool(training))

    def gate_weights(self, inputs: Mapping[str, np.ndarray], batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Inference-time gate weights per task, ``{task: [N, n_gate_experts]}``; empty for shared bottom.

        For PLE the columns are the task's own experts, then the shared experts.
        """
        n = len(next(iter(inputs.values())))
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, batch_size):
            batch = {k: np.asarray(v)[start : start + batch_size] for k, v in inputs.items()}
            for task, w in self.mixture.gate_weights(self._shared(batch, training=False)).items():
                chunks.setdefault(task, []).append(ops.convert_to_numpy(w))
        return {task: np.concatenate(parts) for task, parts in chunks.items()}

    def get_config(self):
        return {
            **super().get_config(),
            "spec": self.feature_spec.to_dict(),
            "settings": self.model_settings.model_dump(mode="json"),
            "seed": self.seed,
            "tasks": [t.to_dict() for t in self.tasks],
        }


def _link(task: Task, logit):
    """The task's output activation: sigmoid (a probability) or linear (a regression)."""
    return ops.sigmoid(logit) if task.activation == "sigmoid" else logit


@register
class MultiTaskHead(keras.Model):
    """The ranker above its shallow tower: the same mixture and task towers as :class:`MultiTaskModel`,
    over a dense input vector ``[B, input_dim]`` instead of the feature dict. What the seed's
    ``build_multi_task_model(input_shape)`` builds, to try the architecture on any dense features."""

    def __init__(
        self,
        input_dim: int,
        settings: dict,
        seed: int | None = None,
        tasks: list[dict] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        ms = ModelSettings(**settings)
        self.input_dim, self.model_settings, self.seed = int(input_dim), ms, seed
        self.tasks = task_spec.current(None if tasks is None else [Task.from_dict(t) for t in tasks])
        names = task_spec.names(self.tasks)
        self.mixture = build_mixture(
            ms.variant,
            names,
            ms.n_experts,
            ms.n_shared_experts,
            ms.expert_units,
            ms.gate_dropout,
            seed=derived_seed(seed, 2),
        )
        self.towers = [
            TaskTower(ms.tower_units, seed=derived_seed(seed, 10 + i), name=f"tower_{task}")
            for i, task in enumerate(names)
        ]

    def build(self, input_shape=None):
        self.call(np.zeros((1, self.input_dim), np.float32), training=False)

    def call(self, inputs, training=None):
        logits = task_logits(self.mixture, self.towers, inputs, bool(training), self.tasks)
        return task_outputs(logits, self.tasks)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "settings": self.model_settings.model_dump(mode="json"),
            "seed": self.seed,
            "tasks": [t.to_dict() for t in self.tasks],
        }


def build_multi_task_model(
    spec: FeatureSpec | int | None = None,
    settings: ModelSettings | None = None,
    seed: int | None = None,
    tasks: Sequence[Task] | None = None,
) -> MultiTaskModel | MultiTaskHead:
    """A built (weights created) but uncompiled ranker, one head per task of ``tasks`` (default: the
    spec, :data:`recsys.tasks.TASKS`). With a ``seed``, the initial weights and the training-time dropout
    draws are a pure function of it.

    Args:
        spec: the feature spec of a fitted transform (what training passes): the full ranker, which
            takes the transform's input dict. An ``int`` (the seed's ``build_multi_task_model(input_shape)``)
            builds :class:`MultiTaskHead` over a dense input of that width instead. Default: the spec of
            the champion's fitted transform.
        settings: default ``settings.model`` of the configured settings.
        seed: default ``settings.seed`` when ``spec`` is not a ``FeatureSpec``, else None.
        tasks: the heads; default the task spec.

    Returns:
        A ``keras.Model`` with one output per task (``{click, watch, like, share}``), each ``[B, 1]``.
    """
    if spec is None or settings is None:
        from recsys.defaults import champion_ranker, settings_or_default

        s = settings_or_default()
        settings = settings or s.model
        if spec is None:
            spec = champion_ranker(s).transform.spec()
        if not isinstance(spec, FeatureSpec):
            seed = s.seed if seed is None else seed
    task_dicts = [t.to_dict() for t in task_spec.current(tasks)]
    if isinstance(spec, int):
        model = MultiTaskHead(
            spec, settings.model_dump(mode="json"), seed=seed, tasks=task_dicts, name="multi_task_head"
        )
    else:
        model = MultiTaskModel(
            spec.to_dict(),
            settings.model_dump(mode="json"),
            seed=seed,
            tasks=task_dicts,
            name="multi_task_model",
        )
    model.build()
    return model


def compile_multi_task_model(
    model: keras.Model,
    settings: ModelSettings | None = None,
    learning_rate: float | None = None,
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """Compile with Adam and, per task of the model's spec, its masked loss weighted by the task's loss
    weight (``settings.loss_weights`` overrides the spec's default by name; 0 turns a task off) and its
    metrics (a masked AUC per binary task, logged as ``click_auc``, ``val_click_auc``...). An unknown task
    name in ``loss_weights`` is an error. Returns the same model, compiled.

    Defaults: ``settings`` = the configured ``settings.model``; ``learning_rate`` =
    ``settings.train.learning_rate`` (3e-3). ``jit_compile``: Keras's (``"auto"``: XLA where the layers
    allow it; :func:`recsys.train.jit_compile` turns it off for large days).
    """
    if settings is None or learning_rate is None:
        from recsys.defaults import settings_or_default

        s = settings_or_default()
        settings = settings or s.model
        learning_rate = s.train.learning_rate if learning_rate is None else learning_rate
    tasks = task_spec.current(getattr(model, "tasks", None))
    weights = task_spec.loss_weights(settings.loss_weights, tasks)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss={t.name: LOSSES[t.loss]() for t in tasks},
        loss_weights=weights,
        metrics={t.name: [METRICS[m](name=m) for m in t.metrics] for t in tasks if t.metrics},
        jit_compile=jit_compile,
    )
    return model


def load_multi_task_model(path: str) -> MultiTaskModel:
    """Reload a model saved with ``model.save("….keras")`` (compiled state included when it was saved)."""
    return keras.saving.load_model(path)

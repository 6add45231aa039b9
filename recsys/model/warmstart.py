"""Warm start: the champion's ranker rebuilt with larger embedding tables, its weights carried over.

:func:`warm_started_model` builds a fresh model for the grown feature spec (every weight seeded, as a new
model would be) and then overwrites it with the champion: each embedding table's first rows (the ids the
champion knows, whose indices a grown vocabulary keeps) and every other weight as it is. The rows of the
new ids keep their fresh, seeded initialisation. The selection-bias table is indexed by
``position * n_devices + device``, so when the device vocabulary grows its cells are moved to the new
layout (the new devices' cells start at zero, as the tower's own initialiser has them).

Anything the copy cannot map (another architecture, other heads, a shrunk table) raises
:class:`IncompatibleModel`: incremental training then falls back to a full one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys import tasks as task_spec
from recsys.config import ModelSettings
from recsys.features.spec import DEVICE, FeatureSpec
from recsys.tasks import Task

# the settings that shape the weights; the others (dropouts, loss and score weights) may change freely
ARCHITECTURE = (
    "variant",
    "embedding_dim",
    "shallow_units",
    "n_experts",
    "n_shared_experts",
    "expert_units",
    "tower_units",
    "bias_tower",
)


class IncompatibleModel(ValueError):
    """The champion's model cannot be carried over to the configured one."""


def grown_spec(old: FeatureSpec, added: dict[str, int], title_added: int = 0) -> FeatureSpec:
    """``old`` with ``added[name]`` more rows in each named categorical table and ``title_added`` more
    title tokens."""
    sizes = {n: s + int(added.get(n, 0)) for n, s in old.vocab_sizes.items()}
    return FeatureSpec(
        vocab_sizes=sizes,
        title_vocab_size=old.title_vocab_size + int(title_added),
        title_len=old.title_len,
        n_numeric=old.n_numeric,
        n_positions=old.n_positions,
        categorical=old.categorical,
    )


def check_compatible(champion, settings: ModelSettings, tasks: Sequence[Task] | None = None) -> None:
    """Raise :class:`IncompatibleModel` unless ``champion`` has the configured architecture and heads."""
    if not hasattr(champion, "feature_spec") or not hasattr(champion, "model_settings"):
        raise IncompatibleModel(f"the champion is not a multi-task ranker ({type(champion).__name__})")
    old = champion.model_settings
    changed = [
        f"{f} {getattr(old, f)!r} -> {getattr(settings, f)!r}"
        for f in ARCHITECTURE
        if getattr(old, f) != getattr(settings, f)
    ]
    if changed:
        raise IncompatibleModel("model architecture changed: " + ", ".join(changed))
    have, want = task_spec.names(task_spec.of_model(champion)), task_spec.names(task_spec.current(tasks))
    if tuple(have) != tuple(want):
        raise IncompatibleModel(f"task heads changed: {list(have)} -> {list(want)}")


def _bias_table(old: np.ndarray, new: np.ndarray, n_positions: int, n_dev_old: int, n_dev_new: int):
    out = new.copy()
    grid = out.reshape(n_positions, n_dev_new, -1)
    grid[:, :n_dev_old] = old.reshape(n_positions, n_dev_old, -1)
    return grid.reshape(new.shape)


def warm_started_model(
    champion,
    spec: FeatureSpec,
    settings: ModelSettings,
    seed: int | None,
    tasks: Sequence[Task] | None = None,
):
    """A built ranker for ``spec`` (the champion's spec with grown tables, see :func:`grown_spec`) holding
    the champion's weights: embedding rows of known ids copied, new rows seeded, every other weight as is."""
    from recsys.model.multitask import build_multi_task_model

    check_compatible(champion, settings, tasks)
    old_spec: FeatureSpec = champion.feature_spec
    if tuple(old_spec.categorical) != tuple(spec.categorical) or (
        old_spec.title_len,
        old_spec.n_numeric,
        old_spec.n_positions,
    ) != (spec.title_len, spec.n_numeric, spec.n_positions):
        raise IncompatibleModel(f"feature spec changed: {old_spec} -> {spec}")
    model = build_multi_task_model(spec, settings, seed=seed, tasks=task_spec.of_model(champion))
    source = {w.path: w for w in champion.weights}
    for w in model.weights:
        src = source.pop(w.path, None)
        if src is None:
            raise IncompatibleModel(f"the champion has no weight {w.path}")
        old, new = np.asarray(src.numpy()), np.asarray(w.numpy())
        if old.shape == new.shape:
            w.assign(old)
        elif w.path.endswith("bias_tower/table"):
            n_dev_old, n_dev_new = old_spec.vocab_sizes[DEVICE], spec.vocab_sizes[DEVICE]
            if old.shape[0] != old_spec.n_positions * n_dev_old or n_dev_new < n_dev_old:
                raise IncompatibleModel(f"{w.path}: {old.shape} cannot grow to {new.shape}")
            w.assign(_bias_table(old, new, spec.n_positions, n_dev_old, n_dev_new))
        elif "/embedding_" in w.path and old.ndim == new.ndim == 2 and old.shape[1] == new.shape[1]:
            if old.shape[0] > new.shape[0]:
                raise IncompatibleModel(f"{w.path}: {old.shape[0]} rows cannot shrink to {new.shape[0]}")
            new[: old.shape[0]] = old
            w.assign(new)
        else:
            raise IncompatibleModel(f"{w.path}: shape {old.shape} -> {new.shape}")
    if source:
        raise IncompatibleModel(f"weights the configured model lacks: {sorted(source)}")
    return model

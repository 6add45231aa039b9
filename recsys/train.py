"""Training: stream the feature files through tf.data, fit the multi-task model, record it all in MLflow.

Memory stays flat as data grows: examples are read from Parquet in chunks, shuffled within a chunk, and
batched. EarlyStopping restores the best weights by validation loss; ModelCheckpoint keeps the best model;
BackupAndRestore lets a killed training resume at the epoch after the last one it finished, and
``work_dir/state.json`` (:class:`~recsys.train_state.TrainState`) makes that resume continue the same
MLflow run, with the epochs before the kill still counted for early stopping and for the best weights.
The input pipeline is :mod:`recsys.features.dataset`. :func:`should_train` is the training schedule.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys import tasks as task_spec
from recsys.config import Settings, TrainSettings
from recsys.features.dataset import (  # noqa: F401  (re-exported)
    CHUNK_ROWS,
    ShuffleEpoch,
    _columns,
    batch_to_arrays,
    parquet_dataset,
)
from recsys.features.partition import serving_transform
from recsys.features.spec import FeatureSpec
from recsys.features.transform import Transform
from recsys.tasks import Task
from recsys.train_state import TrainState, _epoch_logger, _resume_callback

log = logging.getLogger(__name__)


BASE_BATCH_SIZE = 256  # the batch train.learning_rate is set for


def auto_batch_size(train_rows: int, ts: TrainSettings) -> int:
    """The batch size ``train.batch_size = "auto"`` picks for ``train_rows`` training examples: 256 below
    ``ts.auto_batch_min_rows``; from there the largest power of two from 256 to ``ts.auto_batch_max``
    that leaves an epoch at least ``ts.auto_batch_min_steps`` steps. ``auto_batch_max`` is 512 by default:
    at 700k rows 512 kept the test quality of 256 and 4096 lost click AUC beyond the seeds' spread
    (docs/scaling.md "Training by data size")."""
    batch = BASE_BATCH_SIZE
    if train_rows < ts.auto_batch_min_rows:
        return batch
    while batch * 2 <= ts.auto_batch_max and train_rows // (batch * 2) >= ts.auto_batch_min_steps:
        batch *= 2
    return batch


def batch_and_learning_rate(train_rows: int, ts: TrainSettings) -> tuple[int, float]:
    """(batch size, learning rate) a training on ``train_rows`` examples runs with: an explicit
    ``batch_size`` with ``learning_rate`` as set; ``"auto"`` with :func:`auto_batch_size` and the learning
    rate scaled by sqrt(batch / 256) (the square-root rule: the gradient noise of a batch falls as its
    square root; unchanged at 256)."""
    if ts.batch_size != "auto":
        return int(ts.batch_size), ts.learning_rate
    batch = auto_batch_size(train_rows, ts)
    return batch, ts.learning_rate * math.sqrt(batch / BASE_BATCH_SIZE)


def patience(train_rows: int, ts: TrainSettings) -> int:
    """Early stopping's patience for ``train_rows`` training examples: ``ts.patience`` when set; ``"auto"``:
    ``auto_patience_small`` (3) below ``auto_batch_min_rows``, ``auto_patience_large`` (1) from there.
    Every large day measured had its best validation loss after the first epoch, so with
    ``restore_best_weights`` patience 1 keeps the same weights as 3 in two epochs instead of four."""
    if ts.patience != "auto":
        return int(ts.patience)
    return ts.auto_patience_small if train_rows < ts.auto_batch_min_rows else ts.auto_patience_large


XLA_OFF_FROM_BATCH = 4096


def jit_compile(batch_size: int, ts: TrainSettings) -> bool | str:
    """XLA for ``model.compile``: ``ts.jit_compile`` when set; ``"auto"``: Keras's own choice (XLA where
    the layers allow it) below batch :data:`XLA_OFF_FROM_BATCH`, off from there. Measured on the 1M day:
    at 4096 XLA's compilation added about 36 s to the first epoch and the later ones were no faster; at 256
    the later epochs were 3.5x faster with it (docs/scaling.md "Training by data size")."""
    if ts.jit_compile != "auto":
        return ts.jit_compile
    return "auto" if batch_size < XLA_OFF_FROM_BATCH else False


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    epochs_run: int  # epochs of the whole run, including those before a resume
    best_val_loss: float


@dataclass
class FitResult:
    model: object
    history: dict[str, list[float]]  # every epoch of the run, including those before a resume
    resumed_from: int  # the first epoch this call ran (0 unless it resumed)
    best_epoch: int | None
    best_val_loss: float


def fit_model(
    features_dir: Path,
    settings: Settings,
    work_dir: Path,
    *,
    state: TrainState | None = None,
    extra_callbacks: list | None = None,
    verbose: int = 0,
    tasks: Sequence[Task] | None = None,
    model=None,
    spec=None,
) -> FitResult:
    """Build, compile and fit the model on ``features_dir`` with the resumable callbacks, one head per task
    of ``tasks`` (default: the task spec, whose labels the features were built with). ``model``: a built
    model to start from instead (a warm start, :mod:`recsys.incremental`); its feature spec is used.
    ``spec``: the feature spec of ``features_dir``'s transform, when the caller holds it (else the
    transform is read for it).

    It opens no MLflow run (the epoch logger writes into the active one, if any). ``work_dir`` holds the
    backup, the best checkpoint and the state; a call after a kill resumes from them. With the same
    settings and data the result is a pure function of ``settings.seed``.
    """
    import keras

    from recsys.model import build_multi_task_model, compile_multi_task_model

    work_dir.mkdir(parents=True, exist_ok=True)
    state = state or TrainState(work_dir)
    if model is not None:
        spec = model.feature_spec
    elif spec is None:  # a caller holding the transform passes its spec: a large transform parses slowly
        spec = Transform.load(features_dir / "transform.json").spec()
    keras.utils.set_random_seed(settings.seed)
    ts = settings.train
    shuffle_epoch = ShuffleEpoch()
    tasks = task_spec.current(tasks)
    n_train = pq.ParquetFile(features_dir / "train.parquet").metadata.num_rows
    batch_size, learning_rate = batch_and_learning_rate(n_train, ts)
    train_ds = parquet_dataset(
        features_dir / "train.parquet",
        spec,
        batch_size,
        seed=settings.seed,
        epoch=shuffle_epoch,
        tasks=tasks,
    )
    valid_ds = parquet_dataset(features_dir / "valid.parquet", spec, batch_size, tasks=tasks)

    if model is None:
        model = build_multi_task_model(spec, settings.model, seed=settings.seed, tasks=tasks)
    compile_multi_task_model(model, settings.model, learning_rate, jit_compile=jit_compile(batch_size, ts))
    start = state.backed_up_epochs()
    state.history = {e: h for e, h in state.history.items() if e < start}
    best_path = work_dir / "best.keras"
    if start == 0:
        best_path.unlink(missing_ok=True)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience(n_train, ts), restore_best_weights=True
    )
    checkpoint = keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_loss", save_best_only=True)
    # Order matters at epoch end: the metrics and the best checkpoint are written before the backup that
    # marks the epoch done, so a kill never leaves a backed-up epoch without its record.
    callbacks = [
        shuffle_epoch.callback(),
        early_stopping,
        checkpoint,
        _resume_callback(state, start, early_stopping, checkpoint),
        _epoch_logger(state),
        *(extra_callbacks or []),
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
    ]
    model.fit(train_ds, validation_data=valid_ds, epochs=ts.epochs, callbacks=callbacks, verbose=verbose)
    best = state.best()
    if best is not None and best[0] < start and best_path.exists():
        # The best epoch came before the kill: EarlyStopping never held its weights; ModelCheckpoint did.
        model.load_weights(str(best_path))
    return FitResult(
        model,
        state.merged_history(),
        start,
        best[0] if best else None,
        float(best[1]) if best else float("nan"),
    )


def train_model(
    features,
    labels=None,
    settings: Settings | None = None,
    *,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    work_dir: Path | None = None,
    extra_callbacks: list | None = None,
) -> TrainResult:
    """Train the ranker and log everything to MLflow (params, per-epoch metrics, curves, the model).

    Args:
        features: a features folder (``train/valid/test.parquet`` + ``transform.json``: what the
            ``train`` task passes), or a frame of examples (the seed's ``train_model(features, labels)``,
            e.g. :func:`recsys.features.feature_engineering`'s output). A frame is split by time (test =
            its latest day), the transform fitted on its train split, exactly as the features stage does,
            and written under ``settings.data_dir/api/features``.
        labels: with a frame only: the task labels per row (``click``, ``watch`` = log1p watch seconds,
            ``like``, ``share``; NaN = unknown), default the frame's own label columns.
        settings: default the configured settings (the pipeline's form ``train_model(dir, settings)``
            is accepted too).
        run_name: default ``<variant>-<features folder name>``. tags: MLflow run tags (a frame adds
            ``trigger=api``). work_dir: checkpoints, backup and run state; stable for a given day so a
            rerun after a kill resumes, removed after a successful run (default under ``data_dir``).

    Returns:
        :class:`TrainResult`: the MLflow ``run_id``, the logged ``model_uri`` (``runs:/<id>/ranker``),
        epochs run and the best validation loss.
    """
    if isinstance(labels, Settings):  # the pipeline's positional form: train_model(features_dir, settings)
        labels, settings = None, labels
    from recsys.defaults import settings_or_default

    settings = settings_or_default(settings)
    if not isinstance(features, str | Path):
        from recsys.features.partition import features_dir_from_frame

        features = features_dir_from_frame(features, labels, settings, settings.data_dir / "api" / "features")
        tags = {"trigger": "api", **(tags or {})}
    features_dir = Path(features)
    run_name = run_name or f"{settings.model.variant}-{features_dir.name}"
    tags = dict(tags or {})
    work_dir = Path(work_dir or settings.data_dir / "checkpoints" / features_dir.name)
    import mlflow

    from recsys.registry import log_ranker
    from recsys.tracking import configure

    experiment_id = configure(settings)
    ts, ms = settings.train, settings.model
    work_dir.mkdir(parents=True, exist_ok=True)
    from recsys.incremental import plan_training

    # full: the features as they are; incremental: the champion grown, the new rows re-encoded
    t_plan = time.perf_counter()
    plan = plan_training(features_dir, settings, work_dir)
    prepare_seconds = time.perf_counter() - t_plan
    tags.update(plan.tags)
    state = TrainState(work_dir)
    start = state.backed_up_epochs()
    resuming = start > 0 and state.run_id is not None and _run_exists(state.run_id)
    if not resuming:
        if state.run_id is not None and _run_exists(state.run_id):
            mlflow.MlflowClient().set_terminated(state.run_id, status="FAILED")  # cannot be resumed
        state.history = {}
        shutil.rmtree(work_dir / "backup", ignore_errors=True)
    n_train = pq.ParquetFile(plan.data_dir / "train.parquet").metadata.num_rows
    n_valid = pq.ParquetFile(plan.data_dir / "valid.parquet").metadata.num_rows
    batch_size, learning_rate = batch_and_learning_rate(n_train, ts)  # what fit_model runs with
    run_kw = (
        {"run_id": state.run_id}
        if resuming
        else {"experiment_id": experiment_id, "run_name": run_name, "tags": tags}
    )
    with mlflow.start_run(**run_kw) as run:
        state.run_id = run.info.run_id
        state.save()
        mlflow.set_tags(plan.tags)
        if resuming:
            mlflow.set_tag("resumed_from_epoch", str(start))
            log.info("resuming MLflow run %s at epoch %d", run.info.run_id, start)
        else:
            mlflow.log_params(
                {
                    "variant": ms.variant,
                    "n_experts": ms.n_experts,
                    "n_shared_experts": ms.n_shared_experts,
                    "embedding_dim": ms.embedding_dim,
                    "expert_units": ms.expert_units,
                    "shallow_units": json.dumps(list(ms.shallow_units)),
                    "tower_units": ms.tower_units,
                    "gate_dropout": ms.gate_dropout,
                    "bias_tower": ms.bias_tower,
                    "position_dropout": ms.position_dropout,
                    "loss_weights": json.dumps(task_spec.loss_weights(ms.loss_weights)),
                    "score_weights": json.dumps(task_spec.score_weights(ms.score_weights)),
                    "epochs": ts.epochs,
                    "batch_size": batch_size,  # the one trained with ("auto": chosen by the rows)
                    "batch_size_setting": ts.batch_size,
                    "learning_rate": learning_rate,  # the one trained with (an "auto" batch scales it)
                    "learning_rate_setting": ts.learning_rate,
                    "jit_compile": jit_compile(batch_size, ts),
                    "patience": patience(n_train, ts),  # the one trained with ("auto": by the rows)
                    "patience_setting": ts.patience,
                    "seed": settings.seed,
                    "train_rows": n_train,
                    "valid_rows": n_valid,
                    "train_mode": plan.mode,
                    **plan.params,
                }
            )
            from recsys.lineage import log_feature_datasets

            log_feature_datasets(features_dir)  # the run's inputs: source, digest, rows of each split
        # The serving transform (a pure function of the features) before the fit: reading the train and
        # validation rows for it then peaks before TensorFlow holds the model and its datasets, and the
        # fitted transform it was grown from is dropped (at 1M interactions: the train stage's peak RSS,
        # docs/scaling.md). Served after the validation days, so its state has seen them too.
        spec = plan.spec
        # the refresh replaces the users' evidence (the affinity tables: millions of (user, side) pairs at
        # 10M interactions a day): the fitted one is dropped before the refreshed one is built
        base = dataclasses.replace(plan.transform, affinity={}, affinity_prior={}, coengagement={})
        plan = dataclasses.replace(plan, transform=None)
        serving = serving_transform(features_dir, base, settings.features.chunk_rows)
        del base
        t_fit = time.perf_counter()
        fit = fit_model(
            plan.data_dir,
            settings,
            work_dir,
            state=state,
            extra_callbacks=extra_callbacks,
            model=plan.model,
            spec=spec,
        )
        model, hist = fit.model, fit.history
        fit_seconds = time.perf_counter() - t_fit
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _plot_curves(hist, tmp / "learning_curves.png")
            (tmp / "history.json").write_text(json.dumps(hist, indent=1))
            gates = _gate_utilization(model, plan.data_dir / "valid.parquet", spec)
            if gates:
                (tmp / "gate_utilization.json").write_text(json.dumps(gates, indent=2))
                for task, weights in gates.items():
                    for e, w in enumerate(weights):
                        mlflow.log_metric(f"gate_{task}_expert{e}", w)
                    # 1 = uniform over the experts, 0 = collapsed onto one expert (a polarized gate)
                    mlflow.log_metric(f"gate_{task}_entropy", _normalized_entropy(weights))
            mlflow.log_artifacts(str(tmp), artifact_path="training")
            model_uri = log_ranker(model, serving, settings, features_dir / "valid.parquet")
        epochs_run = len(hist.get("loss", []))
        mlflow.log_metrics(
            {
                "best_val_loss": fit.best_val_loss,
                "epochs_run": epochs_run,
                "best_epoch": -1 if fit.best_epoch is None else fit.best_epoch,
                "prepare_seconds": prepare_seconds,  # planning (incremental: champion load, re-encoding)
                "fit_seconds": fit_seconds,  # this call's fit (after a resume: the resumed epochs only)
            }
        )
        result = TrainResult(run.info.run_id, model_uri, epochs_run, fit.best_val_loss)
    shutil.rmtree(work_dir, ignore_errors=True)
    return result


def _run_exists(run_id: str) -> bool:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().get_run(run_id)
        return True
    except MlflowException:
        return False


def _normalized_entropy(weights) -> float:
    """Entropy of a gate's mean weights over log(n experts): 1 uniform, 0 all on one expert."""
    w = np.clip(np.asarray(weights, float), 1e-12, None)
    w = w / w.sum()
    return float(-(w * np.log(w)).sum() / np.log(len(w))) if len(w) > 1 else 0.0


def _plot_curves(hist: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(k for k in hist if k.endswith("loss") and not k.startswith("val_"))
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=False):
        ax.plot(hist[k], label="train")
        if f"val_{k}" in hist:
            ax.plot(hist[f"val_{k}"], label="valid")
        ax.set_title(k)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _gate_utilization(model, valid_path: Path, spec: FeatureSpec) -> dict[str, list[float]]:
    """Mean gate weight per expert per task on (a sample of) the validation set."""
    if not hasattr(model, "gate_weights"):
        return {}
    tasks = task_spec.of_model(model)
    cols = _columns(spec) + list(task_spec.names(tasks))
    rb = next(pq.ParquetFile(valid_path).iter_batches(batch_size=4096, columns=cols), None)
    if rb is None:
        return {}
    x, _ = batch_to_arrays(rb, spec, tasks)
    gates = model.gate_weights(x)
    return {t: [float(v) for v in np.asarray(g).mean(axis=0)] for t, g in (gates or {}).items()}


def should_train(
    ds: date, *, force: bool, has_champion: bool, last_trained: date | None, every_days: int
) -> dict:
    """The training schedule: train when forced, when there is no champion yet, or every ``every_days``
    days after ``last_trained`` (the latest earlier day a training ran). Returns ``{"train", "why"}``."""
    if force:
        return {"train": True, "why": "forced by trigger"}
    if not has_champion:
        return {"train": True, "why": "no champion yet"}
    due = last_trained is None or (ds - last_trained).days >= every_days
    return {"train": due, "why": f"last trained {last_trained}, every {every_days} day(s)"}


def train_day(settings: Settings, ds: date, features_dir: Path, work_dir: Path, trigger: str) -> dict:
    """Train on the features of ``ds`` into an MLflow run named after the variant and the day."""
    res = train_model(
        features_dir,
        settings,
        run_name=f"{settings.model.variant}-{ds}",
        work_dir=work_dir,
        tags={
            "ds": str(ds),
            "trigger": trigger,
            "variant": settings.model.variant,
            "window_days": str(settings.features.window_days),
        },
    )
    return {
        "run_id": res.run_id,
        "model_uri": res.model_uri,
        "epochs": res.epochs_run,
        "best_val_loss": res.best_val_loss,
    }

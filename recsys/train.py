"""Training: stream the feature files through tf.data, fit the multi-task model, record it all in MLflow.

Memory stays flat as data grows: examples are read from Parquet in chunks, shuffled within a chunk, and
batched. EarlyStopping restores the best weights by validation loss; ModelCheckpoint keeps the best model;
BackupAndRestore lets a killed training resume at the epoch after the last one it finished, and
``work_dir/state.json`` (:class:`TrainState`) makes that resume continue the same MLflow run, with the
epochs before the kill still counted for early stopping and for the best weights.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.config import Settings
from recsys.features.spec import LABELS, FeatureSpec
from recsys.features.transform import Transform

log = logging.getLogger(__name__)
CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    epochs_run: int  # epochs of the whole run, including those before a resume
    best_val_loss: float


def _columns(spec: FeatureSpec) -> list[str]:
    return [f"x_{n}" for n in spec.categorical] + ["x_title", "x_numeric", "x_position"]


def batch_to_arrays(table, spec: FeatureSpec) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A pyarrow table/record batch of encoded examples -> (inputs, labels) arrays."""
    x = {n: table.column(f"x_{n}").to_numpy().astype(np.int32) for n in spec.categorical}
    x["title"] = table.column("x_title").flatten().to_numpy().astype(np.int32).reshape(-1, spec.title_len)
    x["numeric"] = (
        table.column("x_numeric").flatten().to_numpy().astype(np.float32).reshape(-1, spec.n_numeric)
    )
    x["position"] = table.column("x_position").to_numpy().astype(np.int32)
    y = {t: table.column(t).to_numpy(zero_copy_only=False).astype(np.float32) for t in LABELS}
    return x, y


class ShuffleEpoch:
    """The epoch a training dataset is serving; :meth:`callback` keeps it in step with ``fit``."""

    def __init__(self) -> None:
        self.value = 0

    def callback(self):
        import keras

        holder = self

        class Cb(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                holder.value = int(epoch)

        return Cb()


def parquet_dataset(
    path: Path,
    spec: FeatureSpec,
    batch_size: int,
    *,
    seed: int | None = None,
    epoch: ShuffleEpoch | None = None,
):
    """A tf.data pipeline over an encoded feature file; shuffles within chunks when ``seed`` is given.

    The shuffle of epoch ``e`` is a pure function of ``(seed, e)``. With ``epoch`` (set by its callback at
    the start of each epoch) the generator knows which epoch it serves, so a resumed fit shuffles epoch
    ``k+1`` as an uninterrupted one would; without it, epochs are counted from 0 per dataset object.
    """
    import tensorflow as tf

    cols = _columns(spec) + list(LABELS)
    counter = [0]

    def gen():
        e = epoch.value if epoch is not None else counter[0]
        counter[0] += 1
        rng = np.random.default_rng(None if seed is None else [seed, e])
        for rb in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=cols):
            x, y = batch_to_arrays(rb, spec)
            order = rng.permutation(rb.num_rows) if seed is not None else np.arange(rb.num_rows)
            for s in range(0, rb.num_rows, batch_size):
                idx = order[s : s + batch_size]
                yield {k: v[idx] for k, v in x.items()}, {k: v[idx] for k, v in y.items()}

    sig_x = {n: tf.TensorSpec([None], tf.int32) for n in spec.categorical}
    sig_x["title"] = tf.TensorSpec([None, spec.title_len], tf.int32)
    sig_x["numeric"] = tf.TensorSpec([None, spec.n_numeric], tf.float32)
    sig_x["position"] = tf.TensorSpec([None], tf.int32)
    sig_y = {t: tf.TensorSpec([None], tf.float32) for t in LABELS}
    return tf.data.Dataset.from_generator(gen, output_signature=(sig_x, sig_y)).prefetch(2)


class TrainState:
    """What a killed training needs to resume *as one run*, kept in ``work_dir/state.json``.

    Keras' BackupAndRestore restores the weights, the optimizer and the epoch, but not the MLflow run,
    the per-epoch history, nor EarlyStopping's / ModelCheckpoint's "best so far". Without those a resumed
    fit opens a second MLflow run (the killed one stays RUNNING forever), forgets the epochs before the
    kill, and may keep a worse epoch than one it had already seen. This file carries them across the kill.
    """

    def __init__(self, work_dir: Path):
        self.path = work_dir / "state.json"
        self.backup_dir = work_dir / "backup"
        d = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.run_id: str | None = d.get("run_id")
        self.history: dict[int, dict[str, float]] = {int(k): v for k, v in d.get("history", {}).items()}

    def backed_up_epochs(self) -> int:
        """Epochs completed and backed up by BackupAndRestore (0: nothing to resume from)."""
        try:
            return int(json.loads((self.backup_dir / "training_metadata.json").read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return 0

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"run_id": self.run_id, "history": {str(k): v for k, v in sorted(self.history.items())}}
            )
        )
        tmp.replace(self.path)

    def best(self, monitor: str = "val_loss") -> tuple[int, float] | None:
        """(epoch, value) of the lowest ``monitor`` so far, the earliest on ties."""
        vals = [(e, h[monitor]) for e, h in self.history.items() if np.isfinite(h.get(monitor, np.nan))]
        return min(vals, key=lambda t: (t[1], t[0])) if vals else None

    def merged_history(self) -> dict[str, list[float]]:
        """Keras-style ``{metric: [per epoch]}`` over every epoch of the run, before and after a resume."""
        epochs = sorted(self.history)
        keys = sorted({k for e in epochs for k in self.history[e]})
        return {k: [self.history[e].get(k, float("nan")) for e in epochs] for k in keys}


def _epoch_logger(state: TrainState):
    """Keras callback: per-epoch, per-task metrics into the active MLflow run (if any) and ``state``.

    Names are Keras': ``loss``; ``{task}_loss`` for click, watch, like, share; ``{task}_auc`` for the binary
    tasks; the same with ``val_``. The MLflow step is the 0-based epoch, continuous across a resume.
    """
    import keras
    import mlflow

    class Cb(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            clean = {k: float(v) for k, v in (logs or {}).items() if np.isfinite(v)}
            if mlflow.active_run() is not None:
                mlflow.log_metrics(clean, step=epoch)
            state.history[int(epoch)] = clean
            state.save()

    return Cb()


def _resume_callback(state: TrainState, start: int, early_stopping, checkpoint):
    """Re-seed EarlyStopping/ModelCheckpoint with the best epoch seen before a kill (after they reset)."""
    import keras

    class Cb(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            best = state.best()
            if start == 0 or best is None:
                return
            best_epoch, best_val = best
            early_stopping.best = best_val
            early_stopping.best_epoch = best_epoch
            early_stopping.wait = start - 1 - best_epoch
            checkpoint.best = best_val
            log.info(
                "resuming at epoch %d; best so far: epoch %d, val_loss %.5f", start, best_epoch, best_val
            )

    return Cb()


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
) -> FitResult:
    """Build, compile and fit the model on ``features_dir`` with the resumable callbacks.

    It opens no MLflow run (the epoch logger writes into the active one, if any). ``work_dir`` holds the
    backup, the best checkpoint and the state; a call after a kill resumes from them. With the same
    settings and data the result is a pure function of ``settings.seed``.
    """
    import keras

    from recsys.model import build_multi_task_model, compile_multi_task_model

    work_dir.mkdir(parents=True, exist_ok=True)
    state = state or TrainState(work_dir)
    transform = Transform.load(features_dir / "transform.json")
    spec = transform.spec()
    keras.utils.set_random_seed(settings.seed)
    ts = settings.train
    shuffle_epoch = ShuffleEpoch()
    train_ds = parquet_dataset(
        features_dir / "train.parquet", spec, ts.batch_size, seed=settings.seed, epoch=shuffle_epoch
    )
    valid_ds = parquet_dataset(features_dir / "valid.parquet", spec, ts.batch_size)

    model = build_multi_task_model(spec, settings.model, seed=settings.seed)
    compile_multi_task_model(model, settings.model, ts.learning_rate)
    start = state.backed_up_epochs()
    state.history = {e: h for e, h in state.history.items() if e < start}
    best_path = work_dir / "best.keras"
    if start == 0:
        best_path.unlink(missing_ok=True)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=ts.patience, restore_best_weights=True
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
    transform = Transform.load(features_dir / "transform.json")
    spec = transform.spec()
    ts, ms = settings.train, settings.model
    work_dir.mkdir(parents=True, exist_ok=True)
    state = TrainState(work_dir)
    start = state.backed_up_epochs()
    resuming = start > 0 and state.run_id is not None and _run_exists(state.run_id)
    if not resuming:
        if state.run_id is not None and _run_exists(state.run_id):
            mlflow.MlflowClient().set_terminated(state.run_id, status="FAILED")  # cannot be resumed
        state.history = {}
        shutil.rmtree(work_dir / "backup", ignore_errors=True)
    n_train = pq.ParquetFile(features_dir / "train.parquet").metadata.num_rows
    n_valid = pq.ParquetFile(features_dir / "valid.parquet").metadata.num_rows
    run_kw = (
        {"run_id": state.run_id}
        if resuming
        else {"experiment_id": experiment_id, "run_name": run_name, "tags": tags}
    )
    with mlflow.start_run(**run_kw) as run:
        state.run_id = run.info.run_id
        state.save()
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
                    "loss_weights": json.dumps(ms.loss_weights),
                    "score_weights": json.dumps(ms.score_weights),
                    "epochs": ts.epochs,
                    "batch_size": ts.batch_size,
                    "learning_rate": ts.learning_rate,
                    "patience": ts.patience,
                    "seed": settings.seed,
                    "train_rows": n_train,
                    "valid_rows": n_valid,
                }
            )
            from recsys.lineage import log_feature_datasets

            log_feature_datasets(features_dir)  # the run's inputs: source, digest, rows of each split
        fit = fit_model(features_dir, settings, work_dir, state=state, extra_callbacks=extra_callbacks)
        model, hist = fit.model, fit.history
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _plot_curves(hist, tmp / "learning_curves.png")
            (tmp / "history.json").write_text(json.dumps(hist, indent=1))
            gates = _gate_utilization(model, features_dir / "valid.parquet", spec)
            if gates:
                (tmp / "gate_utilization.json").write_text(json.dumps(gates, indent=2))
                for task, weights in gates.items():
                    for e, w in enumerate(weights):
                        mlflow.log_metric(f"gate_{task}_expert{e}", w)
                    # 1 = uniform over the experts, 0 = collapsed onto one expert (a polarized gate)
                    mlflow.log_metric(f"gate_{task}_entropy", _normalized_entropy(weights))
            mlflow.log_artifacts(str(tmp), artifact_path="training")
            model_uri = log_ranker(model, transform, settings, features_dir / "valid.parquet")
        epochs_run = len(hist.get("loss", []))
        mlflow.log_metrics(
            {
                "best_val_loss": fit.best_val_loss,
                "epochs_run": epochs_run,
                "best_epoch": -1 if fit.best_epoch is None else fit.best_epoch,
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
    batches = pq.ParquetFile(valid_path).iter_batches(batch_size=4096, columns=_columns(spec) + list(LABELS))
    rb = next(batches, None)
    if rb is None:
        return {}
    x, _ = batch_to_arrays(rb, spec)
    gates = model.gate_weights(x)
    return {t: [float(v) for v in np.asarray(g).mean(axis=0)] for t, g in (gates or {}).items()}

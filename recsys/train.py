"""Training: stream the feature files through tf.data, fit the multi-task model, record it all in MLflow.

Memory stays flat as data grows: examples are read from Parquet in chunks, shuffled within a chunk, and
batched. EarlyStopping restores the best weights by validation loss; ModelCheckpoint keeps the best model;
BackupAndRestore lets a killed training resume at the epoch where it stopped.
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
    epochs_run: int
    best_val_loss: float


def _columns(spec: FeatureSpec) -> list[str]:
    return [f"x_{n}" for n in spec.categorical] + ["x_title", "x_numeric", "x_position"]


def batch_to_arrays(table, spec: FeatureSpec) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A pyarrow table/record batch of encoded examples -> (inputs, labels) arrays."""
    x = {n: table.column(f"x_{n}").to_numpy().astype(np.int32) for n in spec.categorical}
    x["title"] = table.column("x_title").flatten().to_numpy().astype(np.int32).reshape(-1, spec.title_len)
    x["numeric"] = table.column("x_numeric").flatten().to_numpy().astype(np.float32).reshape(-1, spec.n_numeric)
    x["position"] = table.column("x_position").to_numpy().astype(np.int32)
    y = {t: table.column(t).to_numpy(zero_copy_only=False).astype(np.float32) for t in LABELS}
    return x, y


def parquet_dataset(path: Path, spec: FeatureSpec, batch_size: int, *, seed: int | None = None):
    """A tf.data pipeline over an encoded feature file; shuffles within chunks when ``seed`` is given."""
    import tensorflow as tf

    cols = _columns(spec) + list(LABELS)
    epoch = [0]

    def gen():
        rng = np.random.default_rng(None if seed is None else [seed, epoch[0]])
        epoch[0] += 1
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


class _MlflowEpochLogger:
    """Keras callback: per-epoch, per-task metrics into the active MLflow run."""

    def __new__(cls):
        import keras
        import mlflow

        class Cb(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                clean = {k: float(v) for k, v in (logs or {}).items() if np.isfinite(v)}
                mlflow.log_metrics(clean, step=epoch)

        return Cb()


def train_model(features_dir: Path, settings: Settings, *, run_name: str, tags: dict[str, str],
                work_dir: Path) -> TrainResult:
    """Train on ``features_dir`` (train/valid parquet + transform.json) and log everything to MLflow.

    ``work_dir`` holds the checkpoints and the backup for resuming; it is stable for a given day so a
    rerun after a kill resumes, and it is removed after a successful run.
    """
    import keras
    import mlflow

    from recsys.model import build_multi_task_model, compile_multi_task_model
    from recsys.registry import log_ranker
    from recsys.tracking import configure

    experiment_id = configure(settings)
    transform = Transform.load(features_dir / "transform.json")
    spec = transform.spec()
    keras.utils.set_random_seed(settings.seed)
    ts = settings.train
    train_ds = parquet_dataset(features_dir / "train.parquet", spec, ts.batch_size, seed=settings.seed)
    valid_ds = parquet_dataset(features_dir / "valid.parquet", spec, ts.batch_size)

    model = build_multi_task_model(spec, settings.model, seed=settings.seed)
    compile_multi_task_model(model, settings.model, ts.learning_rate)
    work_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=ts.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(work_dir / "best.keras"), monitor="val_loss", save_best_only=True),
        _MlflowEpochLogger(),
    ]
    n_train = pq.ParquetFile(features_dir / "train.parquet").metadata.num_rows
    n_valid = pq.ParquetFile(features_dir / "valid.parquet").metadata.num_rows
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params({
            "variant": settings.model.variant, "n_experts": settings.model.n_experts,
            "embedding_dim": settings.model.embedding_dim, "expert_units": settings.model.expert_units,
            "shallow_units": json.dumps(list(settings.model.shallow_units)),
            "gate_dropout": settings.model.gate_dropout, "bias_tower": settings.model.bias_tower,
            "loss_weights": json.dumps(settings.model.loss_weights),
            "score_weights": json.dumps(settings.model.score_weights),
            "epochs": ts.epochs, "batch_size": ts.batch_size, "learning_rate": ts.learning_rate,
            "seed": settings.seed, "train_rows": n_train, "valid_rows": n_valid,
        })
        history = model.fit(train_ds, validation_data=valid_ds, epochs=ts.epochs, callbacks=callbacks, verbose=0)
        hist = history.history
        val = [v for v in hist.get("val_loss", []) if np.isfinite(v)]
        best = float(min(val)) if val else float("nan")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _plot_curves(hist, tmp / "learning_curves.png")
            gates = _gate_utilization(model, features_dir / "valid.parquet", spec)
            if gates:
                (tmp / "gate_utilization.json").write_text(json.dumps(gates, indent=2))
                for task, weights in gates.items():
                    for e, w in enumerate(weights):
                        mlflow.log_metric(f"gate_{task}_expert{e}", w)
            mlflow.log_artifacts(str(tmp), artifact_path="training")
            model_uri = log_ranker(model, transform, settings, features_dir / "valid.parquet")
        mlflow.log_metric("best_val_loss", best)
        result = TrainResult(run.info.run_id, model_uri, len(hist.get("loss", [])), best)
    shutil.rmtree(work_dir, ignore_errors=True)
    return result


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
    rb = next(pq.ParquetFile(valid_path).iter_batches(batch_size=4096, columns=_columns(spec) + list(LABELS)), None)
    if rb is None:
        return {}
    x, _ = batch_to_arrays(rb, spec)
    gates = model.gate_weights(x)
    return {t: [float(v) for v in np.asarray(g).mean(axis=0)] for t, g in (gates or {}).items()}

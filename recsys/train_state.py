"""Resumable training: the state a killed fit needs to continue as one run, and the callbacks that keep it.

Keras' BackupAndRestore restores weights, optimizer and epoch; :class:`TrainState` adds the MLflow run,
the per-epoch history and the best epoch so far, so a resumed fit neither opens a second run nor forgets
what it had already seen.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("recsys.train")


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
    """Keras callback: per-epoch, per-task metrics into the active MLflow run (if any), ``state`` and the
    log (one line per epoch, so the Airflow task log shows the training's progress).

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
            log.info(
                "epoch %d: loss %.4f, val_loss %.4f%s",
                epoch + 1,
                clean.get("loss", float("nan")),
                clean.get("val_loss", float("nan")),
                "".join(
                    f", {k} {v:.4f}" for k, v in clean.items() if k.startswith("val_") and k.endswith("_auc")
                ),
            )

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

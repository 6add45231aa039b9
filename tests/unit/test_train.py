"""Training: determinism from the seed, the per-epoch shuffle, and the resume bookkeeping (TrainState)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from tiny import TINY_MODEL, TINY_SIM

from recsys.train import TrainState, _normalized_entropy, fit_model, parquet_dataset


def build_tiny_features(settings, days: int = 2) -> Path:
    """A real features dir from the pipeline's own stages over ``days`` small simulated days."""
    from recsys import stages

    start = date(2026, 1, 1)
    for i in range(days):
        for st in (stages.land, stages.collect, stages.validate, stages.anonymize):
            st(start + timedelta(days=i), settings)
    last = start + timedelta(days=days - 1)
    stages.features(last, settings)
    return stages.features_dir(settings, last)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(settings, features dir), built once for the module with test keys in the environment."""
    from cryptography.fernet import Fernet

    from recsys.config import load_settings

    root = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", "test-pseudonym-key-0123456789")
        mp.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
        settings = load_settings(
            data_dir=root / "data",
            simulator=TINY_SIM,
            model=TINY_MODEL,
            train={"epochs": 2, "batch_size": 64, "patience": 5},
        )
        fdir = build_tiny_features(settings)
    return settings, fdir


def test_same_seed_same_data_gives_the_same_validation_loss(tiny, tmp_path):
    settings, fdir = tiny
    a = fit_model(fdir, settings, tmp_path / "a")
    b = fit_model(fdir, settings, tmp_path / "b")
    c = fit_model(fdir, settings.model_copy(update={"seed": settings.seed + 1}), tmp_path / "c")
    assert len(a.history["val_loss"]) == 2
    assert a.history["val_loss"] == b.history["val_loss"]  # bit-identical, not just close
    assert a.history["loss"] == b.history["loss"]
    assert a.history["val_loss"] != c.history["val_loss"]
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_the_shuffle_is_a_function_of_seed_and_epoch(tiny):
    from recsys.features.transform import Transform
    from recsys.train import ShuffleEpoch

    settings, fdir = tiny
    spec = Transform.load(fdir / "transform.json").spec()
    epoch = ShuffleEpoch()

    def first_users(e: int, seed: int = 7) -> np.ndarray:
        epoch.value = e
        ds = parquet_dataset(fdir / "train.parquet", spec, 32, seed=seed, epoch=epoch)
        return np.concatenate([x["user"].numpy() for x, _ in ds.take(3)])

    assert np.array_equal(first_users(3), first_users(3))
    assert not np.array_equal(first_users(3), first_users(4))
    assert not np.array_equal(first_users(3), first_users(3, seed=8))
    unshuffled = parquet_dataset(fdir / "train.parquet", spec, 32)
    rows = sum(len(y["click"]) for _, y in unshuffled)
    import pyarrow.parquet as pq

    assert rows == pq.ParquetFile(fdir / "train.parquet").metadata.num_rows


def test_train_state_round_trips_and_finds_the_best_epoch(tmp_path):
    st = TrainState(tmp_path)
    assert st.backed_up_epochs() == 0 and st.best() is None
    st.run_id = "abc"
    st.history = {
        0: {"loss": 1.0, "val_loss": 0.9},
        1: {"loss": 0.8, "val_loss": 0.7},
        2: {"loss": 0.7, "val_loss": 0.75},
    }
    st.save()
    again = TrainState(tmp_path)
    assert again.run_id == "abc" and again.best() == (1, 0.7)
    assert again.merged_history()["val_loss"] == [0.9, 0.7, 0.75]
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": 0}))
    assert again.backed_up_epochs() == 3


def test_resume_keeps_the_best_epoch_from_before_the_kill(tiny, tmp_path):
    """A resumed fit whose later epochs are worse ends with the pre-kill best weights, not the last ones."""
    import shutil

    settings, fdir = tiny
    work = tmp_path / "work"
    s1 = settings.model_copy(update={"train": settings.train.model_copy(update={"epochs": 1})})
    first = fit_model(fdir, s1, work, extra_callbacks=[_copy_backup_at_end(work, tmp_path / "kept")])
    best_weights = [w.copy() for w in first.model.get_weights()]
    # As if killed after epoch 0 was backed up (BackupAndRestore deletes its backup on a clean end).
    shutil.copytree(tmp_path / "kept", work / "backup")
    st = TrainState(work)
    st.history[0]["val_loss"] = -1.0  # epoch 0 was the best by far: the next epoch cannot beat it
    st.save()
    s2 = settings.model_copy(update={"train": settings.train.model_copy(update={"epochs": 2})})
    second = fit_model(fdir, s2, work)
    assert second.resumed_from == 1
    assert second.best_epoch == 0 and second.best_val_loss == -1.0
    assert len(second.history["val_loss"]) == 2  # both epochs, the one before the "kill" included
    for w, ref in zip(second.model.get_weights(), best_weights, strict=True):
        np.testing.assert_allclose(w, ref)


def _copy_backup_at_end(work: Path, dest: Path):
    """A callback that copies the backup before BackupAndRestore (later in the list) deletes it."""
    import shutil

    import keras

    class Cb(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            shutil.copytree(work / "backup", dest)

    return Cb()


def test_normalized_gate_entropy():
    assert _normalized_entropy([0.25] * 4) == pytest.approx(1.0)
    assert _normalized_entropy([1.0, 0.0, 0.0]) == pytest.approx(0.0, abs=1e-9)
    assert 0.0 < _normalized_entropy([0.7, 0.2, 0.1]) < 1.0

"""Training: determinism from the seed, the per-epoch shuffle, and the resume bookkeeping (TrainState)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from tiny import TINY_MODEL, TINY_SIM, features_of_days

from recsys.train import TrainState, _normalized_entropy, fit_model, parquet_dataset


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
        fdir = features_of_days(settings, date(2026, 1, 1))
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


# ------------------------------------------------------------------------------ the batch size by data size
def test_auto_batch_size_keeps_256_for_small_days_and_grows_for_large_ones():
    from recsys.config import TrainSettings
    from recsys.train import auto_batch_size, batch_and_learning_rate

    ts = TrainSettings()
    assert ts.batch_size == "auto"
    # the default: exactly today's batch and learning rate below auto_batch_min_rows (the 100k-interaction
    # day: 71,295 rows), 512 above (a larger batch lost click AUC on the 1M day)
    for rows in (0, 1, 5_000, 71_295, 249_999):
        assert batch_and_learning_rate(rows, ts) == (256, ts.learning_rate)
    for rows in (250_000, 700_266, 50_000_000):
        batch, lr = batch_and_learning_rate(rows, ts)
        assert batch == 512 and lr == pytest.approx(ts.learning_rate * 2**0.5)
    # with room to grow: still 256 below auto_batch_min_rows (the 100k-interaction day: 71,295 rows)...
    ts = TrainSettings(auto_batch_max=4096)
    for rows in (0, 1, 5_000, 71_295, 249_999):
        assert batch_and_learning_rate(rows, ts) == (256, ts.learning_rate)
    # ...from there the largest power of two <= auto_batch_max leaving >= auto_batch_min_steps steps
    assert auto_batch_size(250_000, ts) == 1024  # 244 steps; 2048 would give 122 < 160
    assert auto_batch_size(700_266, ts) == 4096  # the 1M-interaction day: 171 steps
    assert auto_batch_size(50_000_000, ts) == 4096  # capped
    batch, lr = batch_and_learning_rate(700_266, ts)
    assert batch == 4096 and lr == pytest.approx(ts.learning_rate * 4)  # sqrt(4096 / 256)
    assert auto_batch_size(700_266, ts.model_copy(update={"auto_batch_max": 1024})) == 1024
    assert auto_batch_size(700_266, ts.model_copy(update={"auto_batch_min_steps": 1000})) == 512


def test_xla_stays_as_keras_chooses_below_batch_4096_and_is_off_from_there():
    from recsys.config import TrainSettings
    from recsys.train import jit_compile

    ts = TrainSettings()
    assert jit_compile(256, ts) == "auto" and jit_compile(2048, ts) == "auto"
    assert jit_compile(4096, ts) is False and jit_compile(16384, ts) is False
    assert jit_compile(4096, TrainSettings(jit_compile=True)) is True
    assert jit_compile(256, TrainSettings(jit_compile=False)) is False


def test_an_explicit_batch_size_is_kept_with_its_learning_rate():
    from recsys.config import TrainSettings
    from recsys.train import batch_and_learning_rate

    for rows in (10, 700_266, 50_000_000):
        assert batch_and_learning_rate(rows, TrainSettings(batch_size=256)) == (256, 3e-3)
        assert batch_and_learning_rate(rows, TrainSettings(batch_size=64, learning_rate=1e-2)) == (64, 1e-2)


def test_auto_patience_keeps_3_for_small_days_and_1_for_large_ones(monkeypatch):
    from pydantic import ValidationError

    from recsys.config import TrainSettings, load_settings
    from recsys.train import patience

    ts = TrainSettings()
    assert ts.patience == "auto"
    for rows in (0, 1, 71_295, 249_999):  # every small day stops as before
        assert patience(rows, ts) == 3
    for rows in (250_000, 700_266, 7_000_000):  # the large days: their best epoch was the first
        assert patience(rows, ts) == 1
    # the threshold is the auto batch's, and both ends are settings
    assert patience(300_000, TrainSettings(auto_batch_min_rows=500_000)) == 3
    assert patience(700_266, TrainSettings(auto_patience_large=2)) == 2
    assert patience(10, TrainSettings(auto_patience_small=5)) == 5
    for rows in (10, 700_266):  # an explicit patience is kept whatever the data size
        assert patience(rows, TrainSettings(patience=4)) == 4
        assert patience(rows, TrainSettings(patience=0)) == 0
    for bad in (-1, "soon", 1.5):
        with pytest.raises(ValidationError):
            TrainSettings(patience=bad)
    monkeypatch.setenv("RECSYS_TRAIN__PATIENCE", "3")  # from the environment: an int, not a string
    assert load_settings().train.patience == 3


def test_batch_size_settings_validation(monkeypatch):
    from pydantic import ValidationError

    from recsys.config import TrainSettings, load_settings

    for bad in (0, -256, "big", 2.5):
        with pytest.raises(ValidationError):
            TrainSettings(batch_size=bad)
    for bad in ({"learning_rate": 0}, {"auto_batch_max": 128}, {"auto_batch_min_steps": 0}):
        with pytest.raises(ValidationError):
            TrainSettings(**bad)
    monkeypatch.setenv("RECSYS_TRAIN__BATCH_SIZE", "4096")  # from the environment: an int, not a string
    assert load_settings().train.batch_size == 4096
    monkeypatch.setenv("RECSYS_TRAIN__BATCH_SIZE", "auto")
    assert load_settings().train.batch_size == "auto"


def test_training_runs_and_records_the_chosen_batch_size_and_learning_rate(tiny, tmp_path):
    """An "auto" batch on the tiny day, with the thresholds lowered so it grows: the fit takes that many
    steps per epoch and the MLflow run records the batch and learning rate it trained with."""
    import math

    import keras
    import mlflow
    import pyarrow.parquet as pq

    from recsys.train import auto_batch_size, train_model

    settings, fdir = tiny
    ts = settings.train.model_copy(
        update={
            "batch_size": "auto",
            "epochs": 1,
            "auto_batch_min_rows": 1,
            "auto_batch_min_steps": 1,
            "auto_batch_max": 4096,
            "patience": "auto",
        }
    )
    s = settings.model_copy(update={"train": ts, "data_dir": tmp_path / "data"})
    rows = pq.ParquetFile(fdir / "train.parquet").metadata.num_rows
    batch = auto_batch_size(rows, ts)
    assert batch > 256 and rows // batch >= 1, rows  # the rule did grow it (else the test shows nothing)

    steps = []

    class CountSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    res = train_model(fdir, s, work_dir=tmp_path / "work", extra_callbacks=[CountSteps()])
    assert len(steps) == math.ceil(rows / batch)  # one chunk (< CHUNK_ROWS rows): ceil(rows / batch) steps
    params = mlflow.MlflowClient().get_run(res.run_id).data.params
    assert int(params["batch_size"]) == batch and params["batch_size_setting"] == "auto"
    assert float(params["learning_rate"]) == pytest.approx(ts.learning_rate * math.sqrt(batch / 256))
    assert float(params["learning_rate_setting"]) == ts.learning_rate
    assert params["jit_compile"] == ("False" if batch >= 4096 else "auto")
    # a "large" day (auto_batch_min_rows lowered): the large-day patience, and the setting it came from
    assert params["patience"] == str(ts.auto_patience_large) and params["patience_setting"] == "auto"

"""A training killed with SIGKILL mid-run resumes from its last backed-up epoch, in the same MLflow run.

The training runs in a subprocess (``recsys.train.train_model`` on a tiny features dir built by the
pipeline's own stages). Each epoch end writes a marker ``epoch-<e>-pid-<pid>``; the first attempt sleeps a
little per epoch so the kill lands mid-run. Once the backup says epoch ``k`` is done, the process is
killed, the same call is run again, and the markers and the MLflow run show it ran epochs ``k..`` only
(not from 0) and finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EPOCHS = 6
TINY_SIM = {"n_users": 60, "n_videos": 80, "n_categories": 5, "n_authors": 10}
KILL_AFTER = 2  # kill once this many epochs are backed up

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    import keras

    from recsys.config import load_settings
    from recsys.train import train_model

    root, fdir = Path(sys.argv[1]), Path(sys.argv[2])
    markers = root / "markers"
    markers.mkdir(exist_ok=True)
    pause = float(os.environ.get("EPOCH_PAUSE", "0"))

    class Marker(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            (markers / f"epoch-{epoch}-pid-{os.getpid()}").touch()
            time.sleep(pause)

    settings = load_settings(
        data_dir=root / "data",
        simulator={"n_users": 60, "n_videos": 80, "n_categories": 5, "n_authors": 10},
        model={"embedding_dim": 4, "shallow_units": [16], "n_experts": 2, "expert_units": 8,
               "tower_units": 4},
        train={"epochs": %(epochs)d, "batch_size": 64, "patience": 100},
        experiment="resume-test",
    )
    res = train_model(fdir, settings, run_name="resume", tags={}, work_dir=root / "work",
                      extra_callbacks=[Marker()])
    (root / "result.json").write_text(__import__("json").dumps(res.__dict__))
""") % {"epochs": EPOCHS}


def _backed_up(work: Path) -> int:
    try:
        return int(json.loads((work / "backup" / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _epochs_by_pid(markers: Path) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p in markers.glob("epoch-*-pid-*"):
        _, e, _, pid = p.name.split("-")
        out.setdefault(int(pid), []).append(int(e))
    return {pid: sorted(es) for pid, es in out.items()}


@pytest.fixture
def features(tmp_path, keys) -> Path:
    """A tiny real features dir: two small simulated days through the pipeline's own stages."""
    from datetime import date

    from tiny import features_of_days

    from recsys.config import load_settings

    settings = load_settings(data_dir=tmp_path / "data", simulator=TINY_SIM)
    return features_of_days(settings, date(2026, 1, 1))


def _run(root: Path, fdir: Path, pause: float) -> subprocess.Popen:
    env = {**os.environ, "EPOCH_PAUSE": str(pause), "TF_CPP_MIN_LOG_LEVEL": "2"}
    (root / "train_script.py").write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(root / "train_script.py"), str(root), str(fdir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(root / f"stderr-{pause}.log", "w"),
    )


def test_killed_training_resumes_from_the_last_backup(tmp_path, features):
    import mlflow

    from recsys.config import load_settings
    from recsys.tracking import configure

    work, markers = tmp_path / "work", tmp_path / "markers"
    first = _run(tmp_path, features, pause=3.0)
    deadline = time.monotonic() + 600
    while _backed_up(work) < KILL_AFTER:
        assert first.poll() is None, (tmp_path / "stderr-3.0.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the first attempt never backed up its epochs"
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    k = _backed_up(work)  # epochs 0..k-1 are done and backed up
    assert KILL_AFTER <= k < EPOCHS
    assert not (tmp_path / "result.json").exists()

    second = _run(tmp_path, features, pause=0.0)
    assert second.wait(timeout=600) == 0, (tmp_path / "stderr-0.0.log").read_text()[-3000:]

    by_pid = _epochs_by_pid(markers)
    assert by_pid[first.pid][:k] == list(range(k))  # the killed attempt did epochs 0..k-1 (maybe k too)
    assert by_pid[second.pid] == list(range(k, EPOCHS))  # the rerun started at epoch k, not 0, and finished
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["epochs_run"] == EPOCHS
    assert not work.exists()  # cleaned up after success

    # One MLflow run, finished, with one val_loss per epoch 0..EPOCHS-1 across the kill.
    settings = load_settings(data_dir=tmp_path / "data", experiment="resume-test")
    configure(settings)
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("resume-test").experiment_id])
    assert [r.info.run_id for r in runs] == [result["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_epoch"] == str(k)
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss"))
    assert steps[:k] == list(range(k)) and sorted(set(steps)) == list(range(EPOCHS))
    assert client.get_metric_history(run.info.run_id, "epochs_run")[-1].value == EPOCHS

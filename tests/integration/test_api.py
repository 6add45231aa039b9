"""docs/api.md's walk-through, run as written after a short pipeline run (the session's ``pipeline_run``).

The code block is read from the markdown and executed, so the page and the code cannot drift apart. Every
name it binds is recorded (a name bound twice, like ``recommendations``, keeps each value) and checked
for type and shape, and no frame that comes back may hold a raw user id.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2700),
]  # the session pipeline run counts in the first test


def walkthrough_code() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/api.md should hold exactly one python block: the walk-through"
    return blocks[0]


class Recorder(dict):
    """Locals of the exec'd block that remember every value bound to a name."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}

    def __setitem__(self, key, value):
        self.history.setdefault(key, []).append(value)
        super().__setitem__(key, value)


@pytest.fixture(scope="module")
def walk(pipeline_run):
    mp = pytest.MonkeyPatch()
    for k, v in pipeline_run.env.items():
        mp.setenv(k, v)
    mp.chdir(pipeline_run.root)
    try:
        ns = Recorder()
        exec(compile(walkthrough_code(), "docs/api.md", "exec"), {"__name__": "walkthrough"}, ns)
        yield ns, pipeline_run.settings()
    finally:
        mp.undo()


def test_readers_return_the_latest_clean_day(walk, pipeline_run):
    ns, settings = walk
    for name in ("interactions", "metadata", "context"):
        assert isinstance(ns[name], pd.DataFrame) and len(ns[name]) > 0, name
    assert "user_key" in ns["interactions"] and "user_id" not in ns["interactions"]
    day = pd.to_datetime(ns["interactions"]["ts"], utc=True).dt.date
    assert set(day) == {pipeline_run.days[-1]}


def test_features_embeddings_and_scaling(walk):
    ns, settings = walk
    f, n = ns["features"], len(ns["interactions"])
    assert {"title", "category", "watch_time", "click", "watch"} <= set(f.columns) and len(f) == n
    dim = settings.model.embedding_dim
    assert ns["text_embeddings"].shape == (n, dim) and ns["text_embeddings"].dtype == np.float32
    assert np.isfinite(ns["text_embeddings"]).all() and ns["text_embeddings"].std() > 0
    cat = ns["categorical_embeddings"]
    assert list(cat) == ["category"] and cat["category"].shape == (n, dim)
    # one embedding per category value: rows with the same category share it
    by_cat = pd.DataFrame(cat["category"]).groupby(f["category"].to_numpy()).nunique()
    assert (by_cat == 1).all().all()
    num = ns["numerical_features"]
    assert num.shape == (n, 1)
    np.testing.assert_allclose(num[:, 0], np.log1p(f["watch_time"].to_numpy(float)), rtol=1e-6)


def test_model_building_blocks(walk):
    import keras

    ns, settings = walk
    n, ms = len(ns["features"]), settings.model
    width = ns["text_embeddings"].shape[1] + ns["numerical_features"].shape[1]
    assert ns.history["input_shape"] == [width, ms.shallow_units[-1]]
    assert ns["shallow_tower_model"].output_shape == (None, ms.shallow_units[-1])
    model = ns["multi_task_model"]
    assert model.optimizer is not None  # compiled
    out = model(np.zeros((2, ms.shallow_units[-1]), np.float32))
    assert set(out) == {"click", "watch", "like", "share"}
    assert all(tuple(v.shape) == (2, 1) for v in out.values())
    inputs, gates = (keras.ops.convert_to_numpy(ns[k]) for k in ("inputs", "gating_weights"))
    assert inputs.shape == (n, ms.shallow_units[-1])
    assert gates.shape == (n, ms.n_experts)
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, rtol=1e-5)
    moe = keras.ops.convert_to_numpy(ns["moe_output"])
    expert_out = keras.ops.convert_to_numpy(ns["experts"](inputs))
    assert moe.shape == (n, ms.expert_units)
    np.testing.assert_allclose(moe, np.einsum("beu,be->bu", expert_out, gates), rtol=1e-4, atol=1e-6)


def test_train_model_is_an_mlflow_run(walk):
    import mlflow

    from recsys.tracking import configure
    from recsys.train import TrainResult

    ns, settings = walk
    res = ns["model"]
    assert isinstance(res, TrainResult) and res.epochs_run >= 1 and np.isfinite(res.best_val_loss)
    configure(settings)
    run = mlflow.get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trigger"] == "api"
    assert res.model_uri.startswith("models:/") or res.model_uri.startswith("runs:/")


def test_serving_pseudonymizes_raw_ids(walk):
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.serving.publish import FALLBACK_KEY

    ns, settings = walk
    one, many = ns.history["recommendations"]
    assert list(one.columns) == ["video_id", "score", "rank"]
    assert sorted(one["video_id"]) == [101, 102, 103, 104] and list(one["rank"]) == [1, 2, 3, 4]
    assert one["score"].is_monotonic_decreasing
    key = load_pseudonym_key(settings)
    keys = {pseudonym(str(i), key) for i in range(1, 101)}
    assert {"user_key", "rank", "video_id", "score", "model_version"} <= set(many.columns)
    assert set(many["user_key"]) <= keys | {FALLBACK_KEY}
    assert len(set(many["user_key"]) & keys) > 0


def test_monitoring_logs_pseudonyms_only(walk):
    from recsys.monitoring.online import RetrainDecision
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym

    ns, settings = walk
    logs = ns["logs"]
    assert isinstance(logs, pd.DataFrame) and len(logs) == 1
    assert logs["user_key"].iloc[0] == pseudonym("1", load_pseudonym_key(settings))
    stored = list((settings.data_dir / "monitoring" / "interactions").glob("ds=*/log.jsonl"))
    assert len(stored) == 1 and '"user_id"' not in stored[0].read_text()
    m = ns["metrics"]
    assert m["impressions"] == 1 and m["exploration_impressions"] == 1 and m["ctr_exploration"] == 1.0
    assert m["ctr"] is None and m["ds"] == str(logs["ts"].iloc[0].date())
    assert isinstance(ns["retrain"], RetrainDecision) and ns["retrain"].retrain is False


def test_privacy_anonymize_and_secure_storage(walk):
    from recsys.privacy.crypto import MAGIC
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.privacy.storage import SecuredData

    ns, settings = walk
    anon = ns["anonymized_data"]
    key = load_pseudonym_key(settings)
    assert list(anon.columns) == ["user_key", "video_id", "watch_seconds"]
    assert list(anon["user_key"]) == [pseudonym(str(i), key) for i in (1, 2, 3)]
    sec = ns["secured_data"]
    assert isinstance(sec, SecuredData) and sec.rows == 3 and sec.path.parent == settings.data_dir / "secure"
    blob = sec.path.read_bytes()
    assert blob.startswith(MAGIC) and b"PAR1" not in blob and pseudonym("1", key).encode() not in blob
    pd.testing.assert_frame_equal(ns["restored"], anon)


def test_no_raw_user_id_in_any_returned_frame(walk):
    from recsys.sim import world as sim

    ns, settings = walk
    raw = set(sim.build_world(settings.simulator, settings.seed).users["user_id"].astype(str))
    passed = {str(i) for i in range(1, 101)}
    frames = [
        (name, v)
        for name, values in ns.history.items()
        if name != "dataframe"  # the walk-through's own raw input
        for v in values
        if isinstance(v, pd.DataFrame)
    ]
    assert len(frames) >= 9
    for name, frame in frames:
        assert "user_id" not in frame.columns, name
        for col in frame.columns:
            values = set(frame[col].dropna().astype(str))
            assert not values & raw, f"{name}.{col} holds raw simulator user ids"
            if "user" in col:
                assert not values & passed, f"{name}.{col} holds a raw id passed to the API"

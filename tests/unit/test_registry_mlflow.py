"""The registry against a real (SQLite) MLflow store: the challenger alias, the pyfunc's typed predict,
and the training datasets as run inputs."""

from __future__ import annotations

import logging
import warnings

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # logs Keras models to MLflow


@pytest.fixture
def logged(settings, tmp_path):
    """Two model versions logged from a seeded synthetic ranker (runs of their own)."""
    import mlflow

    from recsys.features.build import EXAMPLE_COLUMNS
    from recsys.registry import log_ranker
    from recsys.serving.synthetic import make_ranker, make_world
    from recsys.tracking import configure

    world = make_world(n_users=20, n_videos=30, n_examples=200)
    ranker = make_ranker(world, seed=0)
    example = tmp_path / "valid.parquet"
    frame = world.examples.assign(event_id="e", rec_version=None, position=0)
    frame[[c for c in EXAMPLE_COLUMNS]].to_parquet(example, index=False)
    configure(settings)
    uris, messages = [], []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("mlflow").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                with mlflow.start_run():
                    uris.append(log_ranker(ranker.model, ranker.transform, settings, example))
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    messages += [str(w.message) for w in caught]
    return uris, messages


def test_pyfunc_predict_is_type_hinted(logged, tmp_path):
    import mlflow

    uris, messages = logged
    assert not [m for m in messages if "type hint" in m.lower()], messages
    model = mlflow.pyfunc.load_model(uris[0])
    rows = pd.read_parquet(tmp_path / "valid.parquet").drop(columns=["event_id", "rec_version", "position"])
    for col in ("ts", "upload_ts"):
        rows[col] = pd.to_datetime(rows[col], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = model.predict(rows.head(5))
    assert isinstance(out, pd.DataFrame) and len(out) == 5
    assert {"click", "watch", "like", "share", "score"} <= set(out.columns)


def test_gated_but_not_promoted_version_is_the_challenger(logged, settings):
    from recsys.registry import CHALLENGER, champion_version, register

    uris, _ = logged
    first = register(settings, uris[0], promote=True, tags={"ds": "2026-01-01"})
    assert first["champion"] == first["version"] and first["challenger"] is None
    second = register(settings, uris[1], promote=False, tags={"ds": "2026-01-02"})
    assert second["champion"] == first["version"]  # not promoted: the champion stays
    assert second["challenger"] == second["version"] == champion_version(settings, CHALLENGER)


def test_logging_shares_the_transform_in_memory_and_the_logged_model_predicts_the_same(
    settings, tmp_path, monkeypatch
):
    """MLflow loads a logged pyfunc twice in process (signature inference, the serving example's check):
    neither parses transform.json again (at 10M interactions a day each copy is gigabytes), the serving
    example still checks out, and the model loaded afterwards (parsed from the file) predicts what the
    in-memory ranker does."""
    import mlflow
    import numpy as np

    from recsys.features.build import EXAMPLE_COLUMNS
    from recsys.features.transform import Transform
    from recsys.registry import log_ranker
    from recsys.serving.synthetic import make_ranker, make_world
    from recsys.tracking import configure

    world = make_world(n_users=20, n_videos=30, n_examples=200)
    ranker = make_ranker(world, seed=0)
    example = tmp_path / "valid.parquet"
    frame = world.examples.assign(event_id="e", rec_version=None, position=0)
    frame[list(EXAMPLE_COLUMNS)].to_parquet(example, index=False)
    configure(settings)
    parsed = []
    load = Transform.load.__func__
    monkeypatch.setattr(
        Transform, "load", classmethod(lambda cls, path: parsed.append(path) or load(cls, path))
    )
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("mlflow").addHandler(handler)
    try:
        with mlflow.start_run():
            uri = log_ranker(ranker.model, ranker.transform, settings, example)
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    assert parsed == []
    assert not [m for m in messages if "validate serving input" in m], messages
    model = mlflow.pyfunc.load_model(uri)
    assert len(parsed) == 1
    rows = pd.read_parquet(example).drop(columns=["event_id", "rec_version", "position"])
    for col in ("ts", "upload_ts"):
        rows[col] = pd.to_datetime(rows[col], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    got = model.predict(rows.head(20))
    want = ranker.predict(rows.head(20))
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=1e-6)

"""Retrieval in the real MLflow registry (SQLite in a temporary folder): its own model and aliases, and
its pairing with the ranker, so that no rollback serves a ranker with an index it did not go out with."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_retrieval import AT, toy  # noqa: E402

from recsys.retrieval.settings import RetrievalSettings  # noqa: E402


@pytest.fixture(scope="module")
def bundles():
    """Two retrieval bundles of different seeds (1 epoch each: the registry is under test, not quality)."""
    from recsys.features.transform import Transform
    from recsys.retrieval.train import fit_retrieval

    ex, videos = toy()
    s = RetrievalSettings(epochs=1, history_len=5)
    return [fit_retrieval(ex, videos, Transform.fit(ex), s, seed=i, index_at=AT)[0] for i in (1, 2)]


def _register_retrieval(settings, bundle, promote=True) -> str:
    import mlflow

    from recsys.retrieval.registry import log_retrieval, register_retrieval
    from recsys.tracking import configure

    configure(settings)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run():
        uri = log_retrieval(bundle, settings)
    return register_retrieval(settings, uri, promote=promote, tags={})["version"]


def _register_ranker(settings, tmp_path: Path, promote=True) -> str:
    """A real (untrained) ranker logged and registered the way the register stage does, with the pair tag."""
    import mlflow

    from recsys.registry import log_ranker, register
    from recsys.retrieval.registry import pairing_tags
    from recsys.serving.synthetic import make_ranker, make_world
    from recsys.tracking import configure

    world = make_world(n_users=20, n_videos=30, n_examples=200)
    ex = world.examples.assign(event_id="e", position=1, rec_version="v")
    ex.to_parquet(tmp_path / "ex.parquet")
    configure(settings)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run():
        uri = log_ranker(
            make_ranker(world).model, make_ranker(world).transform, settings, tmp_path / "ex.parquet"
        )
    return register(settings, uri, promote=promote, tags=pairing_tags(settings))["version"]


def test_pairs_follow_the_ranker_and_roll_back_together(settings, bundles, tmp_path):
    from recsys.retrieval.registry import (
        load_retrieval,
        retrieval_model_name,
        retrieval_version,
        rollback_pair,
        serving_pair,
    )

    legacy = _register_ranker(settings, tmp_path)  # before any retrieval model: served with rule pools
    assert serving_pair(settings) == (legacy, None)

    r1 = _register_retrieval(settings, bundles[0])
    k1 = _register_ranker(settings, tmp_path)
    r2 = _register_retrieval(settings, bundles[1])
    # a new retrieval champion alone does not change what is served: the ranker was not registered with it
    assert serving_pair(settings) == (k1, r1)
    k2 = _register_ranker(settings, tmp_path)
    assert serving_pair(settings) == (k2, r2)
    assert retrieval_model_name(settings) == f"{settings.model_name}-retrieval"

    out = rollback_pair(settings)
    assert serving_pair(settings) == (k1, r1) == tuple(out["serving"])
    assert retrieval_version(settings) == r1 and retrieval_version(settings, "previous") == r2

    out = rollback_pair(settings)  # and forward again: the pair swaps back as a unit
    assert serving_pair(settings) == (k2, r2)

    back = load_retrieval(settings, r1)
    assert back.version == r1
    np.testing.assert_allclose(back.index.embeddings, bundles[0].index.embeddings, atol=1e-6)


def test_rolling_back_to_a_ranker_without_retrieval_serves_rule_pools(settings, bundles, tmp_path):
    from recsys.retrieval.registry import retrieval_version, rollback_pair, serving_pair

    legacy = _register_ranker(settings, tmp_path)
    r1 = _register_retrieval(settings, bundles[0])
    k1 = _register_ranker(settings, tmp_path)
    assert serving_pair(settings) == (k1, r1)
    rollback_pair(settings)
    assert serving_pair(settings) == (legacy, None)
    assert retrieval_version(settings) is None  # no retrieval champion paired with the legacy ranker
    assert retrieval_version(settings, "previous") == r1


def test_two_tower_pool_of_the_served_pair_and_its_fallbacks(settings, bundles, tmp_path):
    from recsys.retrieval.pipeline import two_tower_pool

    ex, videos = toy()
    users = pd.DataFrame({"user_key": ex["user_key"].unique(), "device": "ios"})
    hist = ex.assign(clicked=1)
    s = settings.model_copy(update={"retrieval": RetrievalSettings(k=5, history_len=5)})
    assert two_tower_pool(s, None, users["user_key"], hist, videos, users, AT) is None
    legacy = _register_ranker(s, tmp_path)
    assert two_tower_pool(s, legacy, users["user_key"], hist, videos, users, AT) is None
    _register_retrieval(s, bundles[0])
    k1 = _register_ranker(s, tmp_path)
    pool = two_tower_pool(s, k1, list(users["user_key"]) + ["cold"], hist, videos, users, AT)
    assert "cold" not in set(pool.user_keys) and len(pool.user_keys) == len(users)
    off = s.model_copy(update={"retrieval": RetrievalSettings(enabled=False)})
    assert two_tower_pool(off, k1, users["user_key"], hist, videos, users, AT) is None


def _hexed_bundles(n: int):
    """The toy log with pseudonym-shaped (hex) user keys, the key of its user u005, and ``n`` bundles
    (seeds 1..n) trained on it."""
    import hashlib

    from recsys.features.transform import Transform
    from recsys.retrieval.train import fit_retrieval

    ex, videos = toy()
    hexed = {k: hashlib.sha256(k.encode()).hexdigest()[:32] for k in ex["user_key"].unique()}
    ex["user_key"] = ex["user_key"].map(hexed)
    # with a user-id embedding (not the default): the repair must zero the user's row of it; the
    # default, id-less user tower is repaired in tests/integration/test_erasure_e2e.py
    s = RetrievalSettings(epochs=1, history_len=5, user_id=True)
    bundles = [
        fit_retrieval(ex, videos, Transform.fit(ex), s, seed=i, index_at=AT)[0] for i in range(1, n + 1)
    ]
    return ex, videos, hexed["u005"], bundles


def _queries(bundle, keys, clicks, videos, users) -> np.ndarray:
    from recsys.retrieval.train import with_video_columns

    x, has = bundle.features.serving_queries(keys, with_video_columns(clicks, videos), users, AT)
    assert has.all()
    return np.asarray(bundle.model.query(x))


def test_erasure_repairs_the_served_retrieval_model_keeps_its_index_and_the_pairing(settings, tmp_path):
    """Issue 20 for the two-tower model: the user leaves its vocabulary and user tower, the repaired
    version is what the champion ranker is served with, the old one is gone, and the item index and every
    other user's query are unchanged (the erased user's query is a never-seen user's)."""
    from recsys.privacy.model_repair import model_files_holding, repair_models
    from recsys.retrieval.registry import load_retrieval, retrieval_model_name, serving_pair

    ex, videos, erased, [bundle] = _hexed_bundles(1)
    unseen = "f" * 32
    r = _register_retrieval(settings, bundle)
    k = _register_ranker(settings, tmp_path)  # another world's ranker: it holds no one of these users
    assert serving_pair(settings) == (k, r)

    users = pd.DataFrame({"user_key": [*ex["user_key"].unique(), unseen], "device": "ios"})
    clicks = pd.concat([ex, ex[ex["user_key"] == erased].assign(user_key=unseen)])
    others = [u for u in ex["user_key"].unique() if u != erased]
    before = (
        _queries(bundle, others, clicks, videos, users),
        _queries(bundle, [erased], clicks, videos, users),
    )

    report = repair_models(settings, {erased}, "req-retrieval")
    name = retrieval_model_name(settings)
    [row] = [x for x in report["repaired"] if x["model"] == name]
    assert row["version"] == r and row["embedding_rows_zeroed"] == 1 and row["item_index"] == "unchanged"
    assert serving_pair(settings) == (k, row["new_version"])  # the ranker's pair tag followed the repair
    assert report["pairing"] == [
        {"model": settings.model_name, "ranker_version": k, "retrieval_version": row["new_version"], "was": r}
    ]
    assert {"model": name, "version": r} in report["deleted"]
    assert model_files_holding(settings, {erased}) == []

    fixed = load_retrieval(settings, row["new_version"])
    assert erased not in fixed.features.transform.vocabs["user"]
    np.testing.assert_array_equal(fixed.index.embeddings, bundle.index.embeddings)
    np.testing.assert_allclose(_queries(fixed, others, clicks, videos, users), before[0], rtol=0, atol=1e-6)
    mine = _queries(fixed, [erased], clicks, videos, users)
    np.testing.assert_allclose(mine, _queries(fixed, [unseen], clicks, videos, users), rtol=0, atol=1e-7)
    assert np.abs(mine - before[1]).max() > 1e-4


def test_erasure_repairs_a_served_retrieval_version_without_aliases(settings, tmp_path):
    """Retrieval is promoted on its own gate: two promotions later, the retrieval version the champion
    ranker is served with has no alias left. The erasure repairs it too (and the aliased ones), the ranker
    names the repair, and nothing of the user is left in any artifact."""
    import mlflow

    from recsys.privacy.model_repair import model_files_holding, repair_models
    from recsys.retrieval.registry import (
        load_retrieval,
        retrieval_model_name,
        retrieval_version,
        serving_pair,
    )

    _, _, erased, (b1, b2) = _hexed_bundles(2)
    r1 = _register_retrieval(settings, b1)
    k1 = _register_ranker(settings, tmp_path)
    r2, r3 = _register_retrieval(settings, b2), _register_retrieval(settings, b2)
    name = retrieval_model_name(settings)
    assert serving_pair(settings) == (k1, r1) and (retrieval_version(settings, "previous"), r3) == (r2, r3)
    assert not mlflow.MlflowClient().get_model_version(name, r1).aliases

    report = repair_models(settings, {erased}, "req-served")
    new = {x["version"]: x["new_version"] for x in report["repaired"] if x["model"] == name}
    assert set(new) == {r1, r2, r3}
    assert serving_pair(settings) == (k1, new[r1])
    assert (retrieval_version(settings), retrieval_version(settings, "previous")) == (new[r3], new[r2])
    assert {d["version"] for d in report["deleted"] if d["model"] == name} == {r1, r2, r3}
    assert erased not in load_retrieval(settings, new[r1]).features.transform.vocabs["user"]
    assert model_files_holding(settings, {erased}) == []
    # a second erasure of the same key finds nothing left to repair and keeps the pairing
    again = repair_models(settings, {erased}, "req-served-2")
    assert again["repaired"] == [] and again["pairing"] == [] and serving_pair(settings) == (k1, new[r1])


def test_the_registered_pyfunc_returns_the_vectors_the_index_holds(settings, tmp_path):
    """A data scientist loading the registered retrieval model from MLflow gets, for a video of the index,
    exactly its row (popularity prior included) and, for a video the index does not have, the item
    tower's vector of the same length (no prior: it had no training clicks)."""
    import mlflow

    from recsys.features.transform import Transform
    from recsys.retrieval.registry import retrieval_model_name
    from recsys.retrieval.train import fit_retrieval

    ex, videos = toy()
    s = RetrievalSettings(epochs=1, history_len=5, popularity_prior=2.0)
    bundle, _ = fit_retrieval(ex, videos, Transform.fit(ex), s, seed=1, index_at=AT)
    assert bundle.prior == 2.0 and bundle.model.item_bias
    version = _register_retrieval(settings, bundle)
    model = mlflow.pyfunc.load_model(f"models:/{retrieval_model_name(settings)}/{version}")
    late = videos.iloc[:2].assign(video_id=[9001, 9002], upload_ts=AT + pd.Timedelta(days=1))
    rows = pd.concat([videos.iloc[:5], late], ignore_index=True)
    got = np.stack(model.predict(rows)["embedding"].to_numpy())
    pos = pd.Index(bundle.index.video_ids).get_indexer(rows["video_id"].iloc[:5])
    np.testing.assert_allclose(got[:5], bundle.index.embeddings[pos], rtol=0, atol=1e-6)
    assert got.shape == (7, bundle.index.dim) and np.isfinite(got[5:]).all()

"""The two-tower retrieval model: inputs, serialization, learning, the index and the recall gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.retrieval.features import last_n
from recsys.retrieval.index import ItemIndex, choose_backend
from recsys.retrieval.settings import RetrievalSettings

AT = pd.Timestamp("2026-01-10T00:00", tz="UTC")
N_CATS = 3


def toy(n_users: int = 30, n_videos: int = 60, clicks_per_user: int = 12, seed: int = 0):
    """Users who each click only videos of one category (user i: category i % 3)."""
    rng = np.random.default_rng(seed)
    vids = np.arange(1, n_videos + 1)
    videos = pd.DataFrame(
        {
            "video_id": vids,
            "author_id": 100 + vids % 7,
            "category": [f"c{v % N_CATS}" for v in vids],
            "tags": [f"c{v % N_CATS}|t{v % 5}" for v in vids],
            "title": [f"word{v % N_CATS} other{v % 4}" for v in vids],
            "duration_seconds": 60.0,
            "upload_ts": AT - pd.to_timedelta(vids % 20 + 1, unit="D"),
            "visible": True,
        }
    )
    rows = []
    for u in range(n_users):
        mine = vids[vids % N_CATS == u % N_CATS]
        for j, v in enumerate(rng.choice(mine, clicks_per_user)):
            rows.append((f"e{u}-{j}", f"u{u:03d}", int(v), AT - pd.Timedelta(hours=100 - j)))
    ex = pd.DataFrame(rows, columns=["event_id", "user_key", "video_id", "ts"])
    ex = ex.merge(videos.drop(columns=["visible", "tags"]), on="video_id")
    ex["device"], ex["region"], ex["age_band"], ex["activity"] = "ios", "EU", "25-34", "mid"
    ex["click"] = 1.0
    return ex.sort_values(["ts", "event_id"]).reset_index(drop=True), videos


@pytest.fixture(scope="module")
def trained():
    from recsys.features.transform import Transform
    from recsys.retrieval.train import fit_retrieval

    ex, videos = toy()
    s = RetrievalSettings(epochs=30, batch_size=64, history_len=5, learning_rate=1e-2, temperature=0.05)
    bundle, hist = fit_retrieval(ex, videos, Transform.fit(ex), s, seed=3, index_at=AT)
    return ex, videos, bundle, hist, s


def test_last_n_takes_the_history_before_each_row_newest_first():
    codes = np.array([5, 6, 7, 8, 9])
    group = np.array([0, 0, 0, 1, 1])
    before = last_n(codes, group, 2, include_self=False)
    assert before.tolist() == [[0, 0], [5, 0], [6, 5], [0, 0], [8, 0]]
    upto = last_n(codes, group, 2, include_self=True)
    assert upto.tolist() == [[5, 0], [6, 5], [7, 6], [8, 0], [9, 8]]


def test_model_config_and_keras_file_round_trip(tmp_path):
    import keras

    from recsys.retrieval.model import TwoTowerModel

    m = TwoTowerModel(10, 20, 5, 4, 3, 6, 12, history_len=3, tags_len=2, title_len=4, units=[8], seed=1)
    x = m.dummy_inputs(4)
    x["video"] = np.array([1, 2, 3, 19], np.int32)
    x["hist_video"] = np.array([[1, 2, 0]] * 4, np.int32)
    out = m(x)
    clone = TwoTowerModel.from_config(m.get_config())
    assert clone.get_config() == m.get_config()
    m.save(tmp_path / "m.keras")
    back = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert isinstance(back, TwoTowerModel)
    for k in ("query", "candidate"):
        np.testing.assert_allclose(np.asarray(back(x)[k]), np.asarray(out[k]), atol=1e-6)
        norms = np.linalg.norm(np.asarray(out[k]), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_training_lowers_the_loss_and_learns_each_users_category(trained):
    from recsys.retrieval.train import retrieve

    ex, videos, bundle, hist, s = trained
    assert hist["loss"][-1] < 0.8 * hist["loss"][0]
    users = pd.DataFrame({"user_key": ex["user_key"].unique(), "device": "ios"})
    got = retrieve(bundle, users["user_key"], ex, videos, users, AT, k=10)
    cat_of = dict(zip(videos["video_id"], videos["category"], strict=True))
    share = []
    for u, ids in zip(got.user_keys, got.video_ids, strict=True):
        want = f"c{int(u[1:]) % N_CATS}"
        share.append(np.mean([cat_of[int(v)] == want for v in ids[:10]]))
    assert np.mean(share) > 0.8  # chance is 1/3


def test_a_user_without_history_gets_no_two_tower_pool(trained):
    from recsys.retrieval.train import retrieve

    ex, videos, bundle, *_ = trained
    users = pd.DataFrame({"user_key": ["u000", "stranger"], "device": "ios"})
    got = retrieve(bundle, users["user_key"], ex, videos, users, AT, k=5)
    assert got.user_keys.tolist() == ["u000"]
    none = retrieve(bundle, ["stranger"], ex, videos, users, AT, k=5)
    assert none is None


def test_retrieval_in_chunks_of_users_gives_the_same_pool(trained):
    from recsys.retrieval.train import retrieve

    ex, videos, bundle, *_ = trained
    users = pd.DataFrame({"user_key": [*ex["user_key"].unique()[::-1], "stranger"], "device": "ios"})
    whole = retrieve(bundle, users["user_key"], ex, videos, users, AT, k=8)
    for chunk in (1, 7):
        got = retrieve(bundle, users["user_key"], ex, videos, users, AT, k=8, chunk_users=chunk)
        assert got.user_keys.tolist() == whole.user_keys.tolist()
        np.testing.assert_array_equal(got.video_ids, whole.video_ids)
    assert "stranger" not in whole.user_keys.tolist()


def test_bundle_save_load_gives_the_same_pool(trained, tmp_path):
    from recsys.retrieval.train import RetrievalBundle, retrieve

    ex, videos, bundle, _, s = trained
    back = RetrievalBundle.load(bundle.save(tmp_path / "b"), s)
    users = pd.DataFrame({"user_key": ["u001", "u002"], "device": "ios"})
    a = retrieve(bundle, users["user_key"], ex, videos, users, AT, k=8)
    b = retrieve(back, users["user_key"], ex, videos, users, AT, k=8)
    assert a.video_ids.tolist() == b.video_ids.tolist()


def test_index_excludes_videos_uploaded_after_it_was_built(trained):
    from recsys.retrieval.train import export_index

    ex, videos, bundle, _, s = trained
    early = export_index(bundle.model, bundle.features, videos, AT - pd.Timedelta(days=10), s)
    uploaded = pd.to_datetime(videos["upload_ts"], utc=True)
    assert set(early.video_ids) == set(videos.loc[uploaded < AT - pd.Timedelta(days=10), "video_id"])
    assert len(early) < len(bundle.index) == len(videos)


# ------------------------------------------------------------------------------------------ index
def random_index(n=300, d=16, seed=0, backend="exact"):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return ItemIndex(np.arange(1000, 1000 + n), emb, backend=backend), rng


def test_exact_search_is_the_full_sort():
    index, rng = random_index()
    q = rng.normal(size=(50, 16)).astype(np.float32)
    ids, scores = index.search(q, 20)
    full = q @ index.embeddings.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :20] + 1000
    assert ids.tolist() == want.tolist()
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :20], rtol=1e-5)


def test_faiss_and_exact_agree_on_a_small_catalog():
    exact, rng = random_index()
    hnsw = ItemIndex(exact.video_ids, exact.embeddings, backend="faiss", ef_search=256)
    q = rng.normal(size=(100, 16)).astype(np.float32)
    a, sa = exact.search(q, 10)
    b, sb = hnsw.search(q, 10)
    assert a.tolist() == b.tolist()
    np.testing.assert_allclose(sa, sb, rtol=1e-4, atol=1e-5)


def test_faiss_and_exact_agree_when_item_vectors_differ_in_length():
    """The index of a model with an item bias and a popularity prior: [embedding / T, bias + prior x
    log(1 + clicks)], norms from about 10 to 50. An HNSW graph searched by inner product loses most of its
    recall on such vectors (a review measured top-200 overlap 0.48 at prior 4); in L2 over the augmented
    vectors it matches the exact search."""
    rng = np.random.default_rng(5)
    n, d = 3000, 16
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    clicks = rng.zipf(1.5, n).clip(max=10_000)
    last = (rng.normal(0, 1, n) + 4.0 * np.log1p(clicks)).astype(np.float32)[:, None]
    vectors = np.hstack([emb / 0.1, last])
    exact = ItemIndex(np.arange(n), vectors, backend="exact")
    hnsw = ItemIndex(np.arange(n), vectors, backend="faiss", ef_search=400)
    q = rng.normal(size=(200, d)).astype(np.float32)
    q = np.hstack([q / np.linalg.norm(q, axis=1, keepdims=True), np.ones((200, 1), np.float32)])
    a, sa = exact.search(q, 100)
    b, sb = hnsw.search(q, 100)
    overlap = np.mean([len(set(x) & set(y)) / 100 for x, y in zip(a, b, strict=True)])
    assert overlap > 0.97
    np.testing.assert_allclose(sb, np.take_along_axis(q @ vectors.T, b, axis=1), rtol=1e-4, atol=1e-3)


def test_small_and_empty_indexes_pad_and_never_raise():
    index, rng = random_index(n=3)
    ids, scores = index.search(rng.normal(size=(2, 16)), 5)
    assert (ids[:, 3:] == -1).all() and (ids[:, :3] >= 1000).all() and np.isinf(scores[:, 3:]).all()
    empty = ItemIndex(np.zeros(0, np.int64), np.zeros((0, 16), np.float32))
    assert (empty.search(rng.normal(size=(2, 16)), 4)[0] == -1).all()
    faiss_empty = ItemIndex(np.zeros(0, np.int64), np.zeros((0, 16), np.float32), backend="faiss")
    assert (faiss_empty.search(rng.normal(size=(2, 16)), 4)[0] == -1).all()


def test_index_file_round_trip_and_backend_choice(tmp_path):
    index, _ = random_index(n=10)
    index.built_at = AT.isoformat()
    back = ItemIndex.load(index.save(tmp_path / "i.npz"))
    assert back.video_ids.tolist() == index.video_ids.tolist() and back.built_at == index.built_at
    np.testing.assert_array_equal(back.embeddings, index.embeddings)
    assert choose_backend(100, 100) == "exact" and choose_backend(101, 100) == "faiss"
    with pytest.raises(ValueError, match="backend"):
        ItemIndex(index.video_ids, index.embeddings, backend="annoy")


# ------------------------------------------------------------------------------------------ gate
def test_recall_counts_held_out_engagements_in_the_lists():
    from recsys.retrieval.train import held_out_engagements, recall_at_k
    from recsys.serving.candidates import CandidateLists

    c = CandidateLists(["a", "b"], np.array([0, 2, 3]), np.array([1, 2, 3]))
    history = pd.DataFrame({"user_key": ["a"], "video_id": [9]})
    test = pd.DataFrame({"user_key": ["a", "a", "b", "b", "a"], "video_id": [1, 5, 3, 3, 9]})
    held = held_out_engagements(history, test)
    assert sorted(map(tuple, held.to_numpy().tolist())) == [("a", 1), ("a", 5), ("b", 3)]
    assert recall_at_k(c, held) == pytest.approx(2 / 3)


def test_gate_blocks_a_recall_regression():
    from recsys.retrieval.train import gate

    s = RetrievalSettings(max_recall_regression=0.01)
    assert gate(0.30, None, s)["passed"]
    assert gate(0.295, 0.30, s)["passed"]
    assert not gate(0.28, 0.30, s)["passed"]
    assert not gate(float("nan"), 0.3, s)["passed"]


def test_an_empty_index_gives_no_pool_and_the_rule_pools_serve(trained):
    from dataclasses import replace

    from recsys.retrieval.train import retrieve
    from recsys.serving.candidates import generate_candidates

    ex, videos, bundle, *_ = trained
    empty = replace(
        bundle, index=ItemIndex(np.zeros(0, np.int64), np.zeros((0, bundle.index.dim), np.float32))
    )
    users = pd.DataFrame({"user_key": ["u000", "u001"], "device": "ios"})
    pool = retrieve(empty, users["user_key"], ex, videos, users, AT, k=5)
    assert pool is None
    hist = ex.assign(clicked=1, session_key=ex["user_key"])
    c = generate_candidates(hist, videos, ["u000", "u001"], AT.date(), 10, retrieved=pool)
    assert all(len(v) == 10 for v in c.values())


def test_the_index_space_inner_product_is_the_training_logit_bias_included():
    """With an item bias the index holds [embedding / temperature, bias] and queries are [query, 1]: the
    search ranks by exactly the logit the softmax was trained on (not by the cosine alone)."""
    from keras import ops

    from recsys.retrieval.model import TwoTowerModel

    m = TwoTowerModel(10, 20, 5, 4, 3, 6, 12, history_len=3, tags_len=2, title_len=4, units=[8], seed=1)
    m2 = TwoTowerModel.from_config({**m.get_config(), "item_bias": True})
    x = m2.dummy_inputs(5)
    x["video"] = np.array([1, 2, 3, 4, 19], np.int32)
    x["hist_video"] = np.array([[1, 2, 0]] * 5, np.int32)
    x["age"] = np.linspace(-1, 1, 5).reshape(-1, 1).astype(np.float32)
    m2(x)  # builds the weights
    m2.bias_layer.set_weights([np.full((m2.bias_layer.kernel.shape[0], 1), 0.1, np.float32), np.ones(1)])
    out = m2(x)
    bias = np.asarray(out["bias"]).reshape(-1)
    assert np.ptp(bias) > 0  # a different prior per item
    logits = np.asarray(ops.matmul(out["query"], ops.transpose(out["candidate"]))) / m2.temperature + bias
    q, c = np.asarray(m2.query_vectors(x)), np.asarray(m2.candidate_vectors(x))
    assert q.shape[1] == c.shape[1] == m2.output_dim + 1
    np.testing.assert_allclose(q @ c.T, logits, rtol=1e-5, atol=1e-5)
    legacy = TwoTowerModel.from_config({k: v for k, v in m.get_config().items() if k != "item_bias"})
    assert not legacy.item_bias  # a model saved before the bias existed loads as it was trained


def test_the_popularity_prior_adds_to_the_bias_column_and_needs_one(trained):
    from recsys.retrieval.train import with_prior

    ex, videos, bundle, hist, s = trained
    assert bundle.prior == 0.0 and hist["prior_recall"] == {}  # "auto" without validation rows: no prior
    clicks = ex["video_id"].astype("int64").value_counts()
    prior = with_prior(bundle.index, bundle.model, clicks, 2.0)
    want = 2.0 * np.log1p(pd.Series(bundle.index.video_ids).map(clicks).fillna(0).to_numpy(float))
    np.testing.assert_allclose(prior.embeddings[:, -1] - bundle.index.embeddings[:, -1], want, rtol=1e-5)
    np.testing.assert_array_equal(prior.embeddings[:, :-1], bundle.index.embeddings[:, :-1])
    model = bundle.model
    model.item_bias = False
    try:
        with pytest.raises(ValueError, match="needs retrieval.item_bias"):
            with_prior(bundle.index, model, clicks, 2.0)
    finally:
        model.item_bias = True


def _popular_elsewhere(ex: pd.DataFrame, videos: pd.DataFrame, n_fans: int = 40):
    """The toy log plus ``n_fans`` one-off users who all click video 2 (category c2), and validation rows
    where every toy user clicks video 2: popular, and outside the category of two users in three."""
    fans = ex[ex["video_id"] == 2].iloc[[0] * n_fans].copy()
    fans["user_key"] = [f"fan{i:03d}" for i in range(n_fans)]
    fans["event_id"] = [f"f{i}" for i in range(n_fans)]
    fans["ts"] = AT - pd.Timedelta(hours=200)
    train = pd.concat([ex, fans], ignore_index=True).sort_values(["ts", "event_id"]).reset_index(drop=True)
    valid = ex.drop_duplicates("user_key").copy()
    valid = valid.drop(columns=[c for c in videos.columns if c in valid.columns and c != "video_id"])
    valid = valid.assign(video_id=2, event_id=lambda d: "v" + d["user_key"], ts=AT + pd.Timedelta(hours=1))
    valid = valid.merge(videos.drop(columns=["visible", "tags"]), on="video_id")
    seen = set(ex.loc[ex["video_id"] == 2, "user_key"])
    return train, valid[~valid["user_key"].isin(seen)].reset_index(drop=True)


def test_the_auto_prior_is_the_one_with_the_best_validation_recall():
    from recsys.features.transform import Transform
    from recsys.retrieval.train import fit_retrieval

    ex, videos = toy()
    train, valid = _popular_elsewhere(ex, videos)
    s = RetrievalSettings(
        epochs=30, batch_size=64, history_len=5, learning_rate=1e-2, temperature=0.05, eval_k=3
    )
    bundle, hist = fit_retrieval(train, videos, Transform.fit(train), s, seed=3, index_at=AT, valid=valid)
    recall = hist["prior_recall"]
    assert set(recall) == {str(p) for p in s.prior_grid}
    assert recall["4.0"] > recall["0.0"]  # the popular video is recalled only with the prior
    assert bundle.prior == min(float(p) for p in recall if recall[p] == max(recall.values()))  # ties: smaller
    assert bundle.prior > 0
    fixed, h = fit_retrieval(
        train,
        videos,
        Transform.fit(train),
        s.model_copy(update={"popularity_prior": 0.0}),
        seed=3,
        index_at=AT,
        valid=valid,
    )
    assert fixed.prior == 0.0 and h["prior_recall"] == {}

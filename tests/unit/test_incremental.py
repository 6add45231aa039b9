"""Incremental training's building blocks: the transform grown without reindexing, the warm-started model.

A real features folder from the pipeline's stages over three tiny simulated days; the "champion" is a
transform fitted on the training rows before the split's last day and a seeded model over its spec, and
the last day's training rows are the new ones.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from tiny import TINY_MODEL, TINY_SIM, features_of_days

from recsys.features.extend import IncompatibleTransform, grown_vocab, merged_stats
from recsys.features.spec import CATEGORICAL, FeatureSpec


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(settings, training split, mask of its new rows, champion transform, champion model, the champion's
    rows)."""
    from cryptography.fernet import Fernet

    from recsys.config import load_settings
    from recsys.features.transform import Transform
    from recsys.incremental import new_rows, read_examples
    from recsys.model import build_multi_task_model

    root = tmp_path_factory.mktemp("incremental")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", "test-pseudonym-key-0123456789")
        mp.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
        settings = load_settings(data_dir=root / "data", simulator=TINY_SIM, model=TINY_MODEL)
        fdir = features_of_days(settings, date(2026, 1, 1), 3)
    train = read_examples(fdir / "train.parquet")
    new = new_rows(train, 1)
    assert 0 < new.sum() < len(train)
    # the tiny catalog is all seen by day 2: five of the new rows' videos count as uploaded on the last day
    fresh = train.loc[new, "video_id"].drop_duplicates().iloc[:5]
    before = train[~new & ~train["video_id"].isin(fresh).to_numpy()]
    champion = Transform.fit(before, title_vocab_size=settings.features.title_vocab_size)
    model = build_multi_task_model(champion.spec(), settings.model, seed=11)
    return settings, train, new, champion, model, before


def grow(world):
    from recsys.features.extend import extend_transform
    from recsys.model.warmstart import grown_spec, warm_started_model

    settings, train, new, champion, model, before = world
    spec = model.feature_spec
    sizes = {n: spec.vocab_sizes[n] for n in champion.vocabs}
    grown = extend_transform(champion, train, new, sizes, spec.title_vocab_size)
    added = {n: sum(1 for i in grown.vocabs[n].values() if i >= sizes[n]) for n in sizes}
    title_added = sum(1 for i in grown.title_vocab.values() if i >= spec.title_vocab_size)
    rebuilt = warm_started_model(model, grown_spec(spec, added, title_added), settings.model, settings.seed)
    return grown, added, rebuilt


def test_vocabularies_grow_without_reindexing_and_the_rebuilt_model_is_the_champion_on_old_ids(world):
    settings, train, new, champion, model, before = world
    grown, added, rebuilt = grow(world)
    new_users = set(train.loc[new, "user_key"].astype(str)) - set(champion.vocabs["user"])
    new_videos = set(train.loc[new, "video_id"].astype(str)) - set(champion.vocabs["video"])
    assert new_users and new_videos, "the check needs ids that first appear in the new rows"
    for name, vocab in champion.vocabs.items():
        assert {k: grown.vocabs[name][k] for k in vocab} == vocab, name  # every old id keeps its index
        size = model.feature_spec.vocab_sizes[name]
        fresh = sorted(i for k, i in grown.vocabs[name].items() if k not in vocab)
        assert fresh == list(range(size, size + len(fresh))), name  # after the old ones, no gap, no reuse
        assert added[name] == len(fresh) and rebuilt.feature_spec.vocab_sizes[name] == size + len(fresh)
    assert {grown.vocabs["user"][u] for u in new_users} <= set(
        range(model.feature_spec.vocab_sizes["user"], 10**6)
    )
    assert {k: grown.title_vocab[k] for k in champion.title_vocab} == champion.title_vocab

    # before any training step: old rows copied, new rows seeded (fresh, not zeros), every other weight as is
    old_w = {w.path: w.numpy() for w in model.weights}
    for w in rebuilt.weights:
        a, b = old_w[w.path], w.numpy()
        if a.shape == b.shape:
            np.testing.assert_array_equal(a, b, err_msg=w.path)
        elif "/embedding_" in w.path:
            np.testing.assert_array_equal(b[: len(a)], a, err_msg=w.path)
            assert np.abs(b[len(a) :]).max() > 0, w.path
    again = grow(world)[2]
    for a, b in zip(rebuilt.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)  # seeded: reproducible

    # rows with old ids only: the same indices under both transforms, and the same predictions
    rows = before.iloc[:200]
    x_old, x_new = champion.apply(rows), grown.apply(rows)
    for name in (*CATEGORICAL, "title"):
        np.testing.assert_array_equal(x_old[name], x_new[name], err_msg=name)
    p_old = model.predict(x_old, verbose=0)
    p_new = rebuilt.predict(x_old, verbose=0)  # normalization unchanged: the champion's inputs
    for task in p_old:
        np.testing.assert_allclose(p_new[task], p_old[task], atol=1e-6, rtol=0, err_msg=task)
    # and rows with new users / videos get their own rows, not the unknown bucket
    fresh_rows = train[new & ~train["user_key"].astype(str).isin(champion.vocabs["user"]).to_numpy()]
    assert (grown.apply(fresh_rows)["user"] >= model.feature_spec.vocab_sizes["user"]).all()
    assert (champion.apply(fresh_rows)["user"] == 0).all()


def test_normalization_statistics_are_merged_by_counts_and_evidence_is_refitted(world):
    from recsys.features.extend import stats_count

    settings, train, new, champion, _, _ = world
    grown = grow(world)[0]
    raw = grown._raw_numeric(train, ordered=True)[new]
    n_old = stats_count(champion)
    assert n_old == pytest.approx(champion.numeric_count)  # the rows it was fitted on
    assert grown.numeric_count == pytest.approx(n_old + new.sum())
    for i, name in enumerate(grown.numeric):
        m = (n_old * champion.numeric_mean[name] + len(raw) * raw[:, i].mean()) / (n_old + len(raw))
        assert grown.numeric_mean[name] == pytest.approx(m, rel=1e-9, abs=1e-12), name
    # the users' evidence and the count inputs are those of the whole current training split
    assert set(grown.user_impressions) == set(train["user_key"].astype(str))
    assert set(grown.affinity["user_category_affinity"]) == set(train["user_key"].dropna().astype(str))


def test_merged_statistics_equal_those_of_all_rows():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (500, 2)), rng.normal(-3.0, 0.5, (120, 2))
    mean = {"x": float(a[:, 0].mean()), "y": float(a[:, 1].mean())}
    std = {"x": float(a[:, 0].std()), "y": float(a[:, 1].std())}
    m, s = merged_stats(mean, std, len(a), b, ["x", "y"])
    both = np.concatenate([a, b])
    assert [m["x"], m["y"]] == pytest.approx(both.mean(axis=0).tolist(), rel=1e-12)
    assert [s["x"], s["y"]] == pytest.approx(both.std(axis=0).tolist(), rel=1e-12)


def test_grown_vocab_keeps_indices_and_respects_min_count_and_table_size():
    vocab = {"a": 1, "c": 3}  # "b" erased: index 2 is a gap, the table has 5 rows
    grown = grown_vocab(vocab, pd.Series(["d", "a", "e", "d", None, "f", "f"]), size=5, min_count=2)
    assert grown == {"a": 1, "c": 3, "d": 5, "f": 6}  # counted in the new rows; min_count 2 drops e
    with pytest.raises(IncompatibleTransform):
        grown_vocab(vocab, pd.Series(["x"]), size=3)


def test_the_bias_table_keeps_its_cells_when_devices_grow_and_other_architectures_are_refused():
    from recsys.config import ModelSettings
    from recsys.model import build_multi_task_model
    from recsys.model.warmstart import IncompatibleModel, grown_spec, warm_started_model

    spec = FeatureSpec(vocab_sizes={n: 4 for n in CATEGORICAL}, title_vocab_size=6, title_len=3, n_numeric=7)
    ms = ModelSettings(**TINY_MODEL)
    old = build_multi_task_model(spec, ms, seed=1)
    table = np.arange(spec.n_positions * 4, dtype="float32").reshape(-1, 1)
    old.bias_tower.table.assign(table)
    grown = warm_started_model(old, grown_spec(spec, {"device": 2, "user": 3}), ms, seed=2)
    cells = grown.bias_tower.table.numpy().reshape(spec.n_positions, 6)
    np.testing.assert_array_equal(cells[:, :4], table.reshape(spec.n_positions, 4))
    assert not cells[:, 4:].any()
    with pytest.raises(IncompatibleModel, match="embedding_dim"):
        warm_started_model(old, spec, ms.model_copy(update={"embedding_dim": 8}), seed=2)


def test_a_drift_retrain_is_a_full_training_whatever_the_configured_mode(settings):
    from recsys.monitoring.retrain import retrain_settings

    inc = settings.model_copy(update={"train": settings.train.model_copy(update={"mode": "incremental"})})
    out = retrain_settings({"window_days": 2}, inc)
    assert out.train.mode == "full" and out.features.window_days == 2
    assert inc.train.mode == "incremental"  # the configured settings are left as they are


def test_the_gap_to_the_champion_is_read_from_the_partition_and_the_champions_day():
    """An incremental run trains on the last ``incremental_days`` only: a champion older than that (a
    refused gate, a skipped training) would leave days untrained, so plan_training falls back to full."""
    from recsys.incremental import days_between

    assert days_between("ds=2026-01-06", "2026-01-05") == 1
    assert days_between("ds=2026-01-06", "2026-01-03") == 3
    assert days_between("ds=2026-01-06-1a2b3c", "2026-01-05") == 1  # the seed API's partitions
    assert days_between("features", "2026-01-05") is None
    assert days_between("ds=2026-01-06", None) is None
    assert days_between("ds=not-a-day", "2026-01-05") is None

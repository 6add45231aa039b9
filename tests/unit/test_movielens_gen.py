"""The generated MovieLens-format history: the real importer reads it, it is large, deterministic, and
its ratings follow the hidden utility (so a recommender has something to learn)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from recsys.data import movielens
from recsys.sim.movielens_gen import generate_movielens


def _digest(folder) -> str:
    return hashlib.sha256(
        b"".join((folder / n).read_bytes() for n in ("u.data", "u.item", "u.user"))
    ).hexdigest()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ml") / "gen"
    return folder, generate_movielens(folder, seed=3)


def test_layout_parses_as_ml100k_with_months_of_positive_only_ratings(history):
    folder, out = history
    assert movielens.detect_format(folder) == "ml-100k"
    ml = movielens.load(folder)
    r = ml.ratings
    assert len(r) == out.ratings >= 50_000
    assert set(r["rating"].unique()) <= {1, 2, 3, 4, 5}
    assert not r.duplicated(["user_id", "item"]).any()  # one rating per user and movie, as MovieLens
    assert (r["day"].max() - r["day"].min()).days >= 180
    assert r.groupby("user_id").size().min() >= 20
    assert set(r["item"]) <= set(ml.videos["video_id"])
    assert set(r["user_id"].astype(str)) <= set(ml.users["user_id"])
    events = movielens.events_for_day(ml, movielens.days(folder)[-1])
    assert (events["clicked"] == 1).all()  # positives only: no non-engaged impressions


def test_same_seed_same_files_other_seed_other_files(history, tmp_path):
    folder, _ = history
    generate_movielens(tmp_path / "again", seed=3)
    assert _digest(tmp_path / "again") == _digest(folder)
    generate_movielens(tmp_path / "other", seed=4)
    assert _digest(tmp_path / "other") != _digest(folder)


def test_ratings_follow_true_affinity(history):
    """Higher ratings go with higher hidden affinity (the world behind the files is the simulator's)."""
    from recsys.config import SimulatorSettings
    from recsys.sim.movielens_gen import _affinity
    from recsys.sim.world import build_world

    folder, _ = history
    r = movielens.load(folder).ratings.sample(5000, random_state=0)
    world = build_world(
        SimulatorSettings(n_users=943, n_videos=1682, n_categories=12, n_authors=120), 3, _start()
    )
    aff = _affinity(world, np.arange(943), 1682, _start())
    a = aff[r["user_id"].to_numpy(int) - 1, r["item"].to_numpy(int) - 1]
    means = [a[r["rating"].to_numpy() == k].mean() for k in (1, 2, 3, 4, 5)]
    assert np.all(np.diff(means) > 0), means


def test_too_small_a_history_is_refused(tmp_path):
    with pytest.raises(ValueError, match="min_ratings"):
        generate_movielens(tmp_path / "small", seed=0, n_users=30, n_items=100, days=20)


def _start():
    from datetime import date

    return date(1997, 9, 20)


def test_choice_logits_are_the_truth_the_ratings_were_drawn_with(history):
    """What a user rated sits high among the movies by the generator's own logits (the oracle the quality
    bench measures against); another seed's logits know nothing of this history."""
    from recsys.sim.movielens_gen import choice_logits

    folder, _ = history
    r = movielens.load(folder).ratings
    u, i = r["user_id"].astype(int).to_numpy() - 1, r["item"].astype(int).to_numpy() - 1

    def mean_percentile(logits: np.ndarray) -> float:  # of each rating's movie within its user's row
        ranks = logits.argsort(axis=1).argsort(axis=1) / (logits.shape[1] - 1)
        return float(ranks[u, i].mean())

    assert mean_percentile(choice_logits(3)) > 0.85
    assert 0.4 < mean_percentile(choice_logits(4)) < 0.6  # chance: 0.5 (measured 0.94 and 0.50)

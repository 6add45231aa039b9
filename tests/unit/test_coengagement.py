"""recsys.features.coengagement: the item-kNN score as a ranker input, checked against a brute-force
count, with the user left out on training rows, and forgotten by erasure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features.coengagement import CoEngagement


def engagements(seed: int = 0, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_key": [f"u{i}" for i in rng.integers(0, 200, n)],
            "video_id": rng.integers(1, 80, n),
            "ts": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 1e6, n), unit="s"),
        }
    )


def brute_force(e: pd.DataFrame, table: CoEngagement, user: str, video: str, loo: bool) -> float:
    """sum over the user's other videos w among the video's neighbours of co(v, w) / sqrt(n_v n_w),
    without the user's own engagements when ``loo`` and the user engaged with the video."""
    seen = e.drop_duplicates(["user_key", "video_id"])
    hist = {u: set(g["video_id"].astype(str)) for u, g in seen.groupby("user_key")}
    n = seen.groupby(seen["video_id"].astype(str)).size()
    own = int(loo and video in hist.get(user, set()))
    code = {v: i for i, v in enumerate(table.videos)}
    if user not in hist or video not in code:
        return 0.0
    near = {table.videos[w] for w in table.neighbours[code[video]]}
    total = 0.0
    for w in hist[user] - {video}:
        if w in near:
            co = sum(1 for h in hist.values() if video in h and w in h)
            total += (co - own) / np.sqrt(n[w])
    return float(np.log1p(max(total / np.sqrt(max(n[video] - own, 1)), 0.0)))


def test_scores_match_a_brute_force_count_with_and_without_the_user():
    e = engagements()
    table = CoEngagement.fit(e, neighbours=30)
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in rng.integers(0, 200, 40)] + e["user_key"][:30].tolist() + ["stranger"]
    videos = [str(v) for v in rng.integers(1, 80, 40)] + e["video_id"][:30].astype(str).tolist() + ["1"]
    for loo in (False, True):
        got = table.raw(np.array(users, dtype=object), np.array(videos, dtype=object), loo=loo)
        want = [brute_force(e, table, u, v, loo) for u, v in zip(users, videos, strict=True)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert (got > 0).mean() > 0.5 and got[-1] == 0.0  # mostly informative; an unknown user gets 0
    # leaving the user out changes exactly the rows whose user engaged with the video
    plain = table.raw(np.array(users, dtype=object), np.array(videos, dtype=object), loo=False)
    loo = table.raw(np.array(users, dtype=object), np.array(videos, dtype=object), loo=True)
    assert (loo[40:70] < plain[40:70]).all() and (loo[:40] <= plain[:40]).all()


def test_round_trips_through_json_and_keeps_each_users_latest_history():
    import json

    e = engagements(seed=2)
    table = CoEngagement.fit(e, history=5)
    back = CoEngagement.from_dict(json.loads(json.dumps(table.to_dict())))
    keys = np.array(e["user_key"][:50], dtype=object), np.array(e["video_id"][:50], dtype=object)
    np.testing.assert_array_equal(back.raw(*keys, loo=True), table.raw(*keys, loo=True))
    assert max(len(h) for h in table.history.values()) == 5
    u = e["user_key"].iloc[0]
    latest = e[e["user_key"] == u].sort_values("ts").drop_duplicates("video_id", keep="last").tail(5)
    assert [table.videos[c] for c in table.history[u]] == latest["video_id"].astype(str).tolist()


def test_erasure_forgets_the_users_history():
    from recsys.privacy.model_repair import forget_users

    t = {"coengagement": CoEngagement.fit(engagements()).to_dict()}
    scrubbed, _ = forget_users(t, {"u3"})
    assert "u3" in t["coengagement"]["history"] and "u3" not in scrubbed["coengagement"]["history"]
    assert len(scrubbed["coengagement"]["history"]) == len(t["coengagement"]["history"]) - 1


def test_the_serving_pair_path_gives_the_row_path_values_on_a_world_with_co_engagement():
    from recsys.features.transform import Transform
    from recsys.serving.rank import PAIR_SIDES
    from recsys.serving.synthetic import make_world

    world = make_world(n_users=60, n_videos=40, n_examples=4000, seed=0)
    t = Transform.fit(world.examples, coengagement=True)
    users = np.asarray(world.examples["user_key"].unique()[:12], dtype=object)
    videos = world.videos.drop_duplicates("video_id").head(25)
    from recsys.features.pairs import pair_affinity

    lookup = pair_affinity(t, users, {c: videos[c].to_numpy(object) for c in PAIR_SIDES})
    ui, vi = np.repeat(np.arange(len(users)), len(videos)), np.tile(np.arange(len(videos)), len(users))
    fast = lookup(ui, vi)["user_video_coengagement"]
    vids = videos["video_id"].astype("int64").to_numpy()[vi]  # serving frames hold int64 ids
    row = t.normalize("user_video_coengagement", t.coengagement_table().raw(users[ui], vids, loo=False))
    np.testing.assert_array_equal(fast, row)
    assert np.unique(fast).size > 10  # informative, not a constant
    # a transform saved without the input writes no coengagement key (older code can still load it)
    assert "coengagement" not in Transform.fit(world.examples).to_dict()


def test_the_serving_state_is_refreshed_with_the_validation_rows_and_the_models_inputs_keep_their_meaning(
    tmp_path,
):
    from recsys.features.partition import serving_transform, write_split
    from recsys.features.transform import Transform
    from recsys.serving.synthetic import make_world

    world = make_world(n_users=60, n_videos=40, n_examples=4000, seed=0)
    rows = world.examples.sort_values("ts").reset_index(drop=True)
    train, valid, test = rows.iloc[:3000], rows.iloc[3000:3800], rows.iloc[3800:]
    t = Transform.fit(train, coengagement=True)
    write_split(tmp_path, train, valid, test, t)
    served = serving_transform(tmp_path)
    # what gives the inputs their meaning is the training split's: vocabularies, normalization, and the
    # count inputs (their scale; the counts the logQ correction subtracts)
    for attr in ("vocabs", "title_vocab", "numeric", "numeric_mean", "numeric_std"):
        assert getattr(served, attr) == getattr(t, attr), attr
    for attr in ("video_clicks", "user_impressions"):
        assert getattr(served, attr) == getattr(t, attr), attr
    # the users' evidence is exactly what a fit on train + valid computes, and nothing of the test rows
    full = Transform.fit(rows.iloc[:3800], coengagement=True)
    for attr in ("affinity", "affinity_prior", "coengagement"):
        assert getattr(served, attr) == getattr(full, attr), attr
        assert getattr(served, attr) != getattr(t, attr), attr  # the validation rows changed it
    # so a validation-day engagement now moves the user's inputs at serving, and the saved form keeps it
    served.save(tmp_path / "served.json")
    again = Transform.load(tmp_path / "served.json")
    x_before, x_after = t.apply(test)["numeric"], again.apply(test)["numeric"]
    assert not np.array_equal(x_before, x_after)
    np.testing.assert_array_equal(x_after, served.apply(test)["numeric"])

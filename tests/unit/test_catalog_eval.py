"""Catalog ranking evaluation: hand-checked metrics, the exclusion of what a user saw, the fallback for
users a scorer does not know, the gate's ranking check, and the baselines on a tiny history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.catalog_baselines import fit_catalog_baselines
from recsys.catalog_eval import (
    Holdout,
    Scorer,
    evaluate_scorer,
    list_metrics,
    make_holdout,
    ranking_check,
    top_lists,
)


def test_list_metrics_by_hand():
    lists = np.array([[5, 1, 2] + [-1] * 47, [3, 4, 9] + [-1] * 47])
    truth = [np.array([1, 7]), np.array([3])]
    m = list_metrics(lists, truth, catalog_size=10)
    assert m["recall_10"] == pytest.approx((0.5 + 1.0) / 2)
    # user 1: hit at rank 2 of 2 relevant; user 2: hit at rank 1
    ndcg1 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert m["ndcg_10"] == pytest.approx((ndcg1 + 1.0) / 2)
    assert m["map_10"] == pytest.approx(((1 / 2) / 2 + 1.0) / 2)
    assert m["coverage_10"] == pytest.approx(6 / 10)


def test_top_lists_remove_seen_and_break_ties_by_id():
    catalog = np.array([10, 20, 30, 40])
    scores = np.array([[1.0, 5.0, 5.0, 0.0]])
    out = top_lists(scores, catalog, [np.array([20])], 3)
    assert out.tolist() == [[30, 10, 40]]


def _rows(user, video, day, click=1.0):
    return {
        "user_key": user,
        "video_id": video,
        "ts": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=day),
        "click": click,
    }


def _videos(ids):
    return pd.DataFrame({"video_id": ids, "visible": True, "upload_ts": pd.Timestamp("2025-01-01", tz="UTC")})


def test_holdout_excludes_sampled_negatives_and_keeps_history():
    train = pd.DataFrame([_rows("a", 1, 0), _rows("a", 2, 1), _rows("b", 1, 1)])
    test = pd.DataFrame([_rows("a", 3, 5), _rows("c", 2, 5), {**_rows("b", 4, 5, 0.0)}])
    test["sampled"] = [False, False, True]
    h = make_holdout(train, test, _videos([1, 2, 3, 4]))
    assert h.users == ["a", "c"]  # b's only held-out row is a sampled negative
    assert [t.tolist() for t in h.truth] == [[3], [2]]
    assert [s.tolist() for s in h.seen] == [[1, 2], []]


def test_unknown_users_get_the_fallback_and_count_against_model_share():
    catalog = np.array([1, 2, 3])
    h = Holdout(["a", "z"], [np.array([3]), np.array([3])], [np.array([]), np.array([])], catalog)
    perfect = Scorer(
        "p", lambda u, c: np.tile([0.0, 0.0, 1.0], (len(u), 1)), lambda k: np.array([x == "a" for x in k])
    )
    worst = Scorer("w", lambda u, c: np.tile([1.0, 0.5, 0.0], (len(u), 1)), lambda k: np.ones(len(k), bool))
    m = evaluate_scorer(perfect, h, worst)
    assert m["model_share"] == 0.5
    # a gets 3 first (NDCG 1); z gets the fallback's list with 3 last (rank 3)
    assert m["ndcg_10"] == pytest.approx((1.0 + 1 / np.log2(4)) / 2)


def test_ranking_check_needs_the_margin_over_the_best_baseline():
    base = {"popularity": {"recall_10": 0.10}, "als": {"recall_10": 0.20}}
    assert ranking_check({"recall_10": 0.211}, base, 0.05)["passed"]
    failed = ranking_check({"recall_10": 0.205}, base, 0.05)
    assert not failed["passed"] and failed["threshold"] == pytest.approx(0.21)
    assert "als" in failed["detail"]


def test_baselines_on_a_tiny_history():
    """Two taste groups: {1,2,3} and {4,5,6}. A user of group one who engaged with 1 and 2 should get 3
    from the personal baselines, and the most engaged video from popularity."""
    rows = []
    for u in range(6):
        for v in (1, 2, 3):
            rows.append(_rows(f"g1-{u}", v, u % 3))
    for u in range(9):
        for v in (4, 5, 6):
            rows.append(_rows(f"g2-{u}", v, 8))
    rows += [_rows("me", 1, 0), _rows("me", 2, 0)]
    train = pd.DataFrame(rows)
    b = fit_catalog_baselines(train, seed=0, recent_days=1)
    catalog = np.array([1, 2, 3, 4, 5, 6])
    seen = [np.array([1, 2])]
    assert top_lists(b["item_knn"].score(["me"], catalog), catalog, seen, 1).tolist() == [[3]]
    assert top_lists(b["als"].score(["me"], catalog), catalog, seen, 1).tolist() == [[3]]
    assert top_lists(b["popularity"].score(["me"], catalog), catalog, [np.array([])], 1).tolist() == [[4]]
    assert not b["als"].serves(["stranger"])[0] and b["popularity"].serves(["stranger"])[0]


def test_gate_without_logged_exposures_is_decided_by_the_ranking_check():
    from recsys.config import EvaluateSettings
    from recsys.evaluate import gate

    cfg = EvaluateSettings()
    base = {"als": {"recall_10": 0.20}}
    cand = {"sampled_click_auc": 0.99, "recall_10": 0.25}  # no logged click AUC: the floor cannot apply
    ok = gate(cand, None, {}, cfg, ranking_check(cand, base, cfg.ranking_margin), logged_exposures=False)
    assert ok.blessed and [c["check"] for c in ok.checks] == ["ranking_over_best_baseline"]
    low = {"sampled_click_auc": 0.99, "recall_10": 0.205}
    no = gate(low, None, {}, cfg, ranking_check(low, base, cfg.ranking_margin), logged_exposures=False)
    assert not no.blessed and "ranking_over_best_baseline failed" in no.reasons[0]
    # with logged exposures the AUC floor still applies, next to the ranking check
    both = gate({"click_auc": 0.5, "recall_10": 0.25}, None, {}, cfg, ranking_check(cand, base, 0.05))
    advisory = gate({"click_auc": 0.9}, None, {}, cfg, ranking_check(low, base, 0.05))
    assert advisory.blessed and advisory.checks[0]["advisory"] and not advisory.checks[0]["passed"]
    strict = cfg.model_copy(update={"ranking_check_blocks_with_logged_exposures": True})
    assert not gate({"click_auc": 0.9}, None, {}, strict, ranking_check(low, base, 0.05)).blessed
    assert not both.blessed and {c["check"] for c in both.checks} >= {
        "floor_click_auc",
        "ranking_over_best_baseline",
    }


def test_the_pipelines_ranking_check_ranks_at_most_ranking_users_held_out_users():
    """The evaluate stage bounds its catalog ranking cost: a fixed sample of ``ranking_users`` users (every
    k-th by key), the same whatever the scorers; 0 keeps them all."""
    from recsys.catalog_eval import pipeline_ranking

    rng = np.random.default_rng(0)
    keys = [f"{i:04x}" for i in range(60)]
    train = pd.DataFrame([_rows(u, int(v), 0) for u in keys for v in rng.integers(1, 30, 3)])
    test = pd.DataFrame([_rows(u, int(rng.integers(1, 30)), 5) for u in keys])
    videos = _videos(list(range(1, 30)))
    full = pipeline_ranking({}, train, test, videos, 0.05)
    capped = pipeline_ranking({}, train, test, videos, 0.05, max_users=20)
    assert full["users"] == make_holdout(train, test, videos).n_users > 20
    assert capped["users"] == 20
    assert capped["figures"]["baseline_popularity"]["users"] == 20.0
    again = pipeline_ranking({}, train, test, videos, 0.05, max_users=20)
    assert again["figures"] == capped["figures"]  # a fixed sample, not a random one


def test_catalog_ranking_figures_do_not_depend_on_the_scoring_chunk(monkeypatch):
    """The model is scored over the catalog a chunk of users at a time (a budget of pairs, which bounds
    the evaluation's memory): one user per chunk, the default and every user at once give the same
    figures, for the model and every baseline."""
    import recsys.catalog_eval as ce
    from recsys.serving.synthetic import make_ranker, make_world

    world = make_world(n_users=40, n_videos=60, n_examples=1500, seed=11)
    ranker = make_ranker(world, seed=12)
    ex = world.examples.assign(ts=pd.to_datetime(world.examples["ts"], utc=True))
    cut = ex["ts"].max().normalize()
    history, test = ex[ex["ts"] < cut], ex[ex["ts"] >= cut]
    videos = world.videos
    runs, chunks = [], []
    scorer_lists = ce.scorer_lists

    def counted(*args, **kw):  # how many chunks the model was scored in
        chunk = (args[3] if len(args) > 3 else kw.get("chunk")) or ce.chunk_users(len(args[1].catalog))
        chunks[-1] += -(-len(args[1].users) // chunk)
        return scorer_lists(*args, **kw)

    monkeypatch.setattr(ce, "scorer_lists", counted)
    for pairs in (1, 7 * 60, 10**9):  # one user a chunk, seven users a chunk (a 60-video catalog), all
        monkeypatch.setattr(ce, "PAIRS_PER_CHUNK", pairs)
        chunks.append(0)
        runs.append(ce.pipeline_ranking({"candidate": ranker}, history, test, videos, 0.05, max_users=25))
    assert chunks[0] > chunks[1] > chunks[2] > 0  # the chunking really differed
    assert runs[0]["users"] > 1 and set(runs[0]["figures"]) > {"candidate", "baseline_popularity"}
    assert runs[0]["figures"]["candidate"]["model_share"] > 0
    assert runs[0] == runs[1] == runs[2]


def test_latest_user_attributes_equal_the_whole_frame_concatenation():
    """The users' latest attributes from the needed columns only equal those of the whole history and
    test frames concatenated (what the catalog ranking used to build), extra columns, ties (the last row
    at the latest time wins) and a column missing from one side included; the rows of some users alone
    give those users' same attributes (the evaluate stage keeps only the ranked users' rows)."""
    from recsys.catalog_eval import USER_ATTRIBUTES, latest_user_attributes

    rng = np.random.default_rng(5)
    n = 400
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 50, n), unit="h")
    history = pd.DataFrame(
        {
            "user_key": rng.choice([f"u{i}" for i in range(30)], n),
            "ts": ts,
            "device": rng.choice(["ios", "web"], n),
            "region": rng.choice(["EU", "US"], n),
            "activity": rng.integers(0, 3, n),
            "click": rng.integers(0, 2, n),
        }
    )
    test = history.sample(120, random_state=1).assign(
        ts=lambda d: d["ts"] + pd.Timedelta(days=3), age_band="25-34", title="t", position=3
    )
    test.loc[test.index[:40], "ts"] = test["ts"].iloc[0]  # ties in ts
    rows = pd.concat([history, test], ignore_index=True)
    old = rows.sort_values("ts", kind="stable").drop_duplicates("user_key", keep="last")
    old = old[[c for c in USER_ATTRIBUTES if c in rows]]
    latest = latest_user_attributes(history, test)
    pd.testing.assert_frame_equal(latest, old)
    some = {f"u{i}" for i in range(0, 30, 4)}
    mine = latest_user_attributes(history[history["user_key"].isin(some)], test[test["user_key"].isin(some)])
    expected = latest[latest["user_key"].isin(some)].sort_values("user_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine.sort_values("user_key").reset_index(drop=True), expected)


@pytest.mark.parametrize("max_users", [0, 7])
def test_holdout_video_sets_equal_a_groupby_per_user(max_users):
    rng = np.random.default_rng(max_users)
    users = [f"u{i:02d}" for i in range(40)]

    def rows(n, days):
        return pd.DataFrame(
            [
                _rows(
                    str(rng.choice(users)),
                    int(rng.integers(1, 30)),
                    int(rng.choice(days)),
                    float(rng.random() < 0.6),
                )
                for _ in range(n)
            ]
        ).astype({"video_id": "Int64"})

    train, test = rows(600, [0, 1, 2]), rows(300, [5])
    h = make_holdout(train, test, _videos(list(range(1, 30))), max_users=max_users)

    def by_user(frame):
        pos = frame[frame["click"] > 0]
        return pos.groupby(pos["user_key"].astype(str))["video_id"].agg(
            lambda s: np.unique(s.astype("int64"))
        )

    truth, seen = by_user(test), by_user(train)
    expected = sorted(truth.index)
    if max_users:
        expected = expected[:: int(np.ceil(len(expected) / max_users))]
    assert h.users == expected and (len(expected) <= 7 if max_users else len(expected) > 30)
    assert [t.tolist() for t in h.truth] == [truth[u].tolist() for u in expected]
    assert [s.tolist() for s in h.seen] == [seen.get(u, np.zeros(0, np.int64)).tolist() for u in expected]
    assert all(s.dtype == np.int64 for s in h.truth + h.seen)


def test_the_model_scorer_equals_scoring_the_pair_frame():
    """The catalog's model scorer encodes each side once (every user of its attribute table, the catalog)
    and gathers each chunk's pairs from those tables: the scores equal the serving path's on the chunk's
    scoring frame, for users of the table, for a user it lacks, and after the catalog changes."""
    from recsys.catalog_eval import model_scorer
    from recsys.serving.rank import predict_scores, scoring_frame
    from recsys.serving.synthetic import make_ranker, make_world

    world = make_world(n_users=40, n_videos=60, n_examples=1500, seed=11)
    ranker = make_ranker(world, seed=12)
    at = pd.Timestamp("2026-01-06", tz="UTC")
    keys = world.users["user_key"].astype(str).tolist()
    table = world.users[world.users["user_key"].astype(str).isin(keys[:30])]
    scorer = model_scorer(ranker, table, world.videos, at)
    catalog = np.sort(world.videos["video_id"].astype("int64").to_numpy())

    def by_frame(who, cat):
        frame = scoring_frame(who, dict.fromkeys(who, cat.tolist()), table, world.videos, at)
        return predict_scores(ranker, frame).reshape(len(who), len(cat))

    for who, cat in (
        (keys[3:9], catalog),
        (keys[20:30][::-1], catalog),
        ([keys[35], keys[1]], catalog),  # keys[35] is not in the attribute table: no attributes
        (keys[:4], catalog[::3]),  # another catalog
    ):
        got = scorer.score(who, cat)
        assert got.shape == (len(who), len(cat))
        np.testing.assert_array_equal(got, by_frame(who, cat))
    assert scorer.score([], catalog).shape == (0, len(catalog))

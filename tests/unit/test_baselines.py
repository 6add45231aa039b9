from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.baselines import CoVisitation, GlobalPopularity, RecentCategoryPopularity, fit_baselines


def history():
    ts = pd.to_datetime(["2026-01-01T10:00Z"] * 6 + ["2026-01-02T10:00Z"] * 4, utc=True)
    return pd.DataFrame(
        {
            "user_key": ["a", "a", "b", "b", "c", "c", "a", "b", "c", "c"],
            "video_id": [1, 2, 1, 3, 2, 3, 4, 4, 5, 1],
            "category": ["m", "m", "m", "n", "m", "n", "n", "n", "m", "m"],
            "ts": ts,
            "click": [1, 1, 1, 1, 1, 1, 0, 1, 1, 0.0],
        }
    )


def test_global_popularity_is_the_smoothed_click_rate():
    h = history()
    b = GlobalPopularity(smoothing=10).fit(h)
    prior = h["click"].mean()  # 0.8
    rows = pd.DataFrame({"user_key": ["x", "x"], "video_id": [1, 99], "category": ["m", "m"]})
    # video 1: clicks 2 of 3 impressions
    np.testing.assert_allclose(b.score(rows), [(2 + 10 * prior) / (3 + 10), prior])
    assert b.predict_tasks(rows)["click"].tolist() == b.score(rows).tolist()


def test_covisitation_counts_co_clicks_with_the_users_earlier_clicks():
    h = history()
    b = CoVisitation(tie_break=0.0).fit(h)
    # clicks: a {1, 2}, b {1, 3, 4}, c {2, 3, 5}
    # co-click counts: C[1,2]=1 (a), C[1,3]=C[1,4]=C[3,4]=1 (b), C[2,3]=C[2,5]=C[3,5]=1 (c)
    rows = pd.DataFrame(
        {"user_key": ["a", "a", "a", "b", "zz"], "video_id": [3, 4, 5, 2, 1], "category": ["n"] * 5}
    )
    # a&3: C[1,3] + C[2,3] = 2; a&4: C[1,4] = 1; a&5: C[2,5] = 1; b&2: C[1,2] + C[3,2] = 2; cold user: 0
    np.testing.assert_allclose(b.score(rows), [2, 1, 1, 2, 0])
    with_pop = CoVisitation().fit(h).score(rows)
    assert with_pop[4] > 0 and np.argsort(-with_pop)[:2].tolist() in ([0, 3], [3, 0])


def test_recent_category_popularity_prefers_the_users_categories_and_recent_clicks():
    h = history()
    b = RecentCategoryPopularity(days=1).fit(h)
    # on the last day video 4 (category n) got 1 click, video 5 (m) 1 click, video 1 none
    rows = pd.DataFrame(
        {
            "user_key": ["b", "b", "c", "c", "c"],
            "video_id": [4, 5, 4, 5, 1],
            "category": ["n", "m", "n", "m", "m"],
        }
    )
    s = b.score(rows)
    assert s[0] > s[1]  # b clicked mostly category n
    assert s[3] > s[2]  # c clicked mostly category m
    assert s[3] > s[4]  # within m, the recently clicked video first
    assert set(fit_baselines(h)) == {"popularity", "recent_category", "covisitation"}


def test_baselines_do_not_need_labels_of_the_rows_they_score():
    h = history()
    rows = h.drop(columns=["click"]).assign(user_key="a")
    for b in fit_baselines(h).values():
        s = b.score(rows)
        assert s.shape == (len(rows),) and np.isfinite(s).all()
        p = b.predict_tasks(rows)
        assert ((p["click"] >= 0) & (p["click"] <= 1)).all() and np.isnan(p["watch"]).all()


def test_popularity_scores_kept_for_the_old_api():
    from recsys.evaluate import popularity_scores

    h = history()
    assert popularity_scores(h, h)["click"] == pytest.approx(GlobalPopularity().fit(h).score(h))


def test_covisitation_pair_lookups_equal_the_sparse_product_definition():
    """``co_counts`` looks C up pair by pair; it must equal ``(X[u] * C[v]).sum()`` row by row."""
    rng = np.random.default_rng(4)
    n = 3000
    h = pd.DataFrame(
        {
            "user_key": rng.choice([f"u{i}" for i in range(120)], n),
            "video_id": rng.integers(1, 200, n),
            "category": "m",
            "ts": pd.Timestamp("2026-01-01", tz="UTC"),
            "click": (rng.random(n) < 0.3).astype(float),
        }
    )
    b = CoVisitation().fit(h)
    rows = pd.DataFrame(
        {"user_key": rng.choice([f"u{i}" for i in range(130)], 2000), "video_id": rng.integers(1, 210, 2000)}
    )
    u = rows["user_key"].map(b._users)
    v = rows["video_id"].astype(str).map(b._videos)
    ok = (u.notna() & v.notna()).to_numpy()
    ref = np.zeros(len(rows))
    ui, vi = u[ok].astype(int).to_numpy(), v[ok].astype(int).to_numpy()
    ref[ok] = np.asarray(b._x[ui].multiply(b._c[vi]).sum(axis=1)).reshape(-1)
    assert ok.sum() > 1000 and (ref > 0).sum() > 100
    np.testing.assert_array_equal(b.co_counts(rows), ref)

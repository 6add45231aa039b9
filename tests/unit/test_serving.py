"""Serving: candidate generation, the diversity rule, and reading lists (fallback for unknown users)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.serving.candidates import generate_candidates
from recsys.serving.rank import top_n

DS = date(2026, 1, 10)


def catalog(n=40, invisible=(), fresh=()):
    ids = np.arange(1, n + 1)
    upload = [pd.Timestamp(DS, tz="UTC") if v in fresh else pd.Timestamp("2025-06-01", tz="UTC") for v in ids]
    return pd.DataFrame(
        {
            "video_id": ids,
            "visible": [v not in invisible for v in ids],
            "category": [f"c{v % 4}" for v in ids],
            "author_id": ids % 7,
            "upload_ts": upload,
        }
    )


def events(rows):
    """rows: (user, session, video, clicked)"""
    df = pd.DataFrame(rows, columns=["user_key", "session_key", "video_id", "clicked"])
    df["ts"] = pd.Timestamp(DS, tz="UTC") + pd.Timedelta(hours=1)
    return df


def busy_history():
    rows = []
    for u in range(10):  # video 1..10 popular, in shared sessions
        for v in range(1, 11):
            rows.append((f"x{u}", f"s{u}", v, 1))
    rows += [("alice", "sa", 1, 1), ("alice", "sa", 2, 1), ("alice", "sa", 3, 0)]
    return events(rows)


def test_watched_videos_are_removed():
    c = generate_candidates(busy_history(), catalog(), ["alice"], DS, n_candidates=30)["alice"]
    assert 1 not in c and 2 not in c
    assert 3 in c  # seen but not clicked: still a candidate
    assert len(c) == len(set(c))


def test_invisible_videos_are_removed():
    c = generate_candidates(
        busy_history(), catalog(invisible={3, 4, 5}, fresh={5}), ["alice", "nobody"], DS, n_candidates=40
    )
    for lst in c.values():
        assert not {3, 4, 5} & set(lst)


def test_size_cap():
    c = generate_candidates(busy_history(), catalog(), ["alice", "x1", "new"], DS, n_candidates=7)
    assert all(len(v) == 7 for v in c.values())


def test_cold_user_gets_popular_and_fresh():
    vids = catalog(fresh={33, 34})
    c = generate_candidates(busy_history(), vids, ["cold"], DS, n_candidates=12)["cold"]
    popular = set(range(1, 11))  # clicked by many
    assert {33, 34} <= set(c)
    assert popular <= set(c)
    assert set(c) <= popular | {33, 34} | set(vids["video_id"])  # nothing invisible, no duplicates
    assert len(c) == 12 == len(set(c))


def test_affinity_pools_lead_for_a_known_user():
    c = generate_candidates(busy_history(), catalog(), ["alice"], DS, n_candidates=5)["alice"]
    covisited = set(range(3, 11))  # clicked in the same sessions as 1 and 2
    assert set(c) <= covisited


# ------------------------------------------------------------------------------------------ diversity
def frame_for(n_videos, authors, cats, user="u"):
    return pd.DataFrame(
        {"user_key": user, "video_id": np.arange(1, n_videos + 1), "author_id": authors, "category": cats}
    )


def test_top_n_caps_authors_and_categories():
    f = frame_for(
        12, [1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], ["a", "a", "b", "b", "a", "a", "a", "c", "c", "d", "d", "e"]
    )
    scores = np.linspace(1, 0, 12)
    out = top_n(f, scores, n=6, max_per_author=2, max_per_category=2)
    got = f.set_index("video_id").loc[out["video_id"]]
    assert out["rank"].tolist() == list(range(1, 7))
    assert got["author_id"].value_counts().max() <= 2
    assert got["category"].value_counts().max() <= 2
    # greedy in score order: 1, 2 (author 1, category a); 3, 4 author 1 full; 5, 6, 7 category a full
    assert out["video_id"].tolist() == [1, 2, 8, 9, 10, 11]


def test_top_n_author_only_matches_the_old_rule():
    rng = np.random.default_rng(0)
    f = pd.concat(
        [frame_for(50, rng.integers(0, 6, 50), "x", user=u) for u in ("b", "a", "c")], ignore_index=True
    )
    scores = rng.random(len(f))
    out = top_n(f, scores, n=10, max_per_author=3)
    df = f.assign(score=scores).sort_values(["user_key", "score", "video_id"], ascending=[True, False, True])
    df = df[df.groupby(["user_key", "author_id"]).cumcount() < 3].groupby("user_key").head(10)
    assert out["video_id"].tolist() == df["video_id"].tolist()
    assert out["user_key"].tolist() == df["user_key"].tolist()


def test_top_n_short_list_when_candidates_run_out():
    f = frame_for(5, [1, 1, 1, 1, 2], ["a", "b", "c", "d", "e"])
    out = top_n(f, np.arange(5.0)[::-1], n=10, max_per_author=2, max_per_category=None)
    assert out["video_id"].tolist() == [1, 2, 5]


# ------------------------------------------------------------------------------------------ reading
def test_get_recommendations_falls_back_for_unknown_users(settings):
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.serving import get_recommendations
    from recsys.serving.publish import FALLBACK_KEY, engine_for, publish

    key = pseudonym("alice", load_pseudonym_key(settings))
    recs = pd.DataFrame(
        [(key, r, 10 + r, 1.0 / r) for r in range(1, 6)]
        + [(FALLBACK_KEY, r, 90 + r, 0.5 / r) for r in range(1, 6)],
        columns=["user_key", "rank", "video_id", "score"],
    )
    publish(
        engine_for(settings.resolved_db_url),
        recs,
        ds="2026-01-10",
        model_version="7",
        active_users={key},
        top_n=5,
    )
    mine = get_recommendations("alice", 3, settings=settings)
    assert mine["video_id"].tolist() == [11, 12, 13] and set(mine["user_key"]) == {key}
    assert "alice" not in set(mine["user_key"])  # the table holds pseudonyms only
    other = get_recommendations("never-seen", 4, settings=settings)
    assert other["video_id"].tolist() == [91, 92, 93, 94]
    assert set(other["user_key"]) == {FALLBACK_KEY}


def test_get_recommendations_before_any_publish_is_empty(settings):
    from recsys.serving import get_recommendations

    assert get_recommendations("alice", 3, settings=settings).empty


@pytest.mark.parametrize("cap", [None, 1])
def test_max_per_category_setting(cap):
    from recsys.config import ServingSettings

    assert ServingSettings(max_per_category=cap).max_per_category == cap
    assert ServingSettings().max_per_category == 4


def test_champion_is_loaded_once_and_reloaded_when_the_alias_moves(settings, monkeypatch):
    import recsys.registry as registry
    import recsys.scale as scale
    import recsys.serving as serving

    alias = {"v": "1"}
    loads = []
    monkeypatch.setattr(registry, "champion_version", lambda s, alias_name="champion": alias["v"])
    monkeypatch.setattr(
        scale.RankerRef, "load", lambda self: loads.append(self.version) or f"ranker-{self.version}"
    )
    monkeypatch.setattr(serving, "_CHAMPIONS", {})
    monkeypatch.setattr(scale, "_RANKERS", {})
    assert serving._champion(settings) == "ranker-1" == serving._champion(settings)
    monkeypatch.setattr(serving, "CHAMPION_TTL_SECONDS", 0.0)
    assert serving._champion(settings) == "ranker-1"  # same version: the loaded one is reused
    alias["v"] = "2"
    assert serving._champion(settings) == "ranker-2"
    assert loads == ["1", "2"]


def test_fresh_pool_is_newest_first():
    vids = catalog(n=60)
    hours = pd.to_timedelta(vids["video_id"] % 3, unit="h")
    vids["upload_ts"] = pd.Timestamp(DS, tz="UTC") - hours  # all fresh
    c = generate_candidates(events([("x", "s", 1, 1)]), vids, ["cold"], DS, n_candidates=30)["cold"]
    newest = list(range(3, 61, 3))  # uploaded at midnight of DS: the 20 newest
    assert c[:20] == newest

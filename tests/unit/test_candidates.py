"""The candidate union: two-tower pool + rule pools, deduplicated, seen/invisible removed, fallbacks."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.serving.candidates import CandidateLists, Retrieved, generate_candidates

DS = date(2026, 1, 10)


def catalog(n=40, invisible=(), fresh=()):
    ids = np.arange(1, n + 1)
    old = pd.Timestamp("2025-06-01", tz="UTC")
    return pd.DataFrame(
        {
            "video_id": ids,
            "visible": [v not in invisible for v in ids],
            "category": [f"c{v % 4}" for v in ids],
            "author_id": ids % 7,
            "upload_ts": [pd.Timestamp(DS, tz="UTC") if v in fresh else old for v in ids],
        }
    )


def history():
    rows = [(f"x{u}", f"s{u}", v, 1) for u in range(10) for v in range(1, 11)]
    rows += [("alice", "sa", 1, 1), ("alice", "sa", 2, 1), ("alice", "sa", 3, 0)]
    df = pd.DataFrame(rows, columns=["user_key", "session_key", "video_id", "clicked"])
    df["ts"] = pd.Timestamp(DS, tz="UTC") + pd.Timedelta(hours=1)
    return df


def test_two_tower_pool_leads_and_is_deduplicated_and_filtered():
    r = Retrieved(np.array(["alice"], dtype=object), np.array([[30, 1, 31, 30, 4, -1, 999]]))
    c = generate_candidates(history(), catalog(invisible={4}), ["alice"], DS, n_candidates=15, retrieved=r)
    lst = c["alice"]
    assert lst[:2] == [30, 31]  # 1 was clicked, 30 repeated, 4 invisible, -1 padding, 999 unknown
    assert len(lst) == 15 == len(set(lst)) and not {1, 2, 4, 999} & set(lst)
    assert set(range(3, 11)) & set(lst)  # the co-visited videos follow


def test_union_keeps_places_for_fresh_uploads():
    """A video uploaded after the index was built is unknown to the two-tower pool; the fresh pool brings
    it in even when the two-tower pool alone could fill the list."""
    r = Retrieved(np.array(["alice"], dtype=object), np.array([list(range(11, 31))]))
    c = generate_candidates(
        history(), catalog(n=45, fresh={44, 45}), ["alice"], DS, n_candidates=10, retrieved=r, fresh_quota=2
    )
    assert c["alice"][:8] == list(range(11, 19)) and c["alice"][8:] == [44, 45]


def test_user_without_history_or_retrieval_gets_the_fallback_pools():
    r = Retrieved(np.array(["alice"], dtype=object), np.array([[30, 31]]))
    c = generate_candidates(
        history(), catalog(fresh={33}), ["cold", "alice"], DS, n_candidates=8, retrieved=r
    )
    assert c["cold"][0] == 33 and set(c["cold"][1:]) <= set(range(1, 11))  # fresh, then popular
    assert c["alice"][:2] == [30, 31]


@pytest.mark.parametrize(
    "retrieved",
    [
        None,
        Retrieved(np.zeros(0, dtype=object), np.zeros((0, 0), np.int64)),  # an empty index
        Retrieved(np.array(["alice"], dtype=object), np.full((1, 5), -1)),  # nothing found
    ],
)
def test_empty_retrieval_falls_back_to_the_rule_pools(retrieved):
    rules = generate_candidates(history(), catalog(), ["alice", "cold"], DS, n_candidates=12)
    c = generate_candidates(history(), catalog(), ["alice", "cold"], DS, n_candidates=12, retrieved=retrieved)
    assert dict(c) == dict(rules) and all(len(v) == 12 for v in c.values())


def test_single_pools_and_unknown_pool():
    only_pop = generate_candidates(history(), catalog(), ["alice"], DS, n_candidates=5, pools=("popular",))
    assert only_pop["alice"] == [3, 4, 5, 6, 7]  # the most clicked, minus alice's clicks 1 and 2
    only_cat = generate_candidates(history(), catalog(), ["alice"], DS, n_candidates=50, pools=("category",))
    assert {v % 4 for v in only_cat["alice"]} <= {1, 2}  # alice clicked 1 and 2: categories c1, c2
    with pytest.raises(ValueError, match="unknown candidate pools"):
        generate_candidates(history(), catalog(), ["alice"], DS, pools=("magic",))


def test_chunking_does_not_change_the_lists():
    users = ["alice", "cold"] + [f"x{u}" for u in range(10)]
    r = Retrieved(np.array(users[::2], dtype=object), np.tile(np.arange(20, 40), (6, 1)))
    a = generate_candidates(history(), catalog(), users, DS, n_candidates=20, retrieved=r, chunk_users=1)
    b = generate_candidates(history(), catalog(), users, DS, n_candidates=20, retrieved=r, chunk_users=1000)
    assert dict(a) == dict(b) and list(a) == users


def test_candidate_lists_is_a_mapping():
    c = CandidateLists(["a", "b"], np.array([0, 2, 2]), np.array([5, 6]))
    assert c["a"] == [5, 6] and c["b"] == [] and c.get("z", []) == [] and len(c) == 2
    assert c.sizes().tolist() == [2, 0]


def test_covisitation_counts_sessions_and_ranks_by_count_then_id():
    from recsys.serving.candidates import covisitation

    h = pd.DataFrame(
        {
            "session_key": ["a", "a", "a", "b", "b", "c", "c", "c"],
            "video_id": [1, 2, 3, 1, 3, 2, 2, 9],
            "clicked": [1, 1, 1, 1, 1, 1, 1, 0],
        }
    )
    got = covisitation(h, per_video=2)
    rows = list(zip(got["video_id"], got["rank"], got["other"], strict=True))
    # 1: with 3 twice, with 2 once; 2: with 1 and 3 once (a repeated click and an unclicked 9 don't count)
    assert rows == [(1, 0, 3), (1, 1, 2), (2, 0, 1), (2, 1, 3), (3, 0, 1), (3, 1, 2)]


def test_covisitation_counts_are_the_same_whatever_the_block_of_session_pairs():
    from recsys.serving.candidates import _session_pair_counts

    rng = np.random.default_rng(3)
    s_code = np.sort(rng.integers(0, 400, 3000))
    v_code = rng.integers(0, 60, 3000).astype(np.int32)
    whole = _session_pair_counts(s_code, v_code, 60, max_pairs=10**9)
    assert whole[1].sum() > 0
    for block in (1, 7, 500):  # a block of one session at a time, and sessions split across blocks
        got = _session_pair_counts(s_code, v_code, 60, max_pairs=block)
        np.testing.assert_array_equal(got[0], whole[0])
        np.testing.assert_array_equal(got[1], whole[1])


def test_covisitation_of_sessions_with_one_clicked_video_each_is_empty():
    from recsys.serving.candidates import covisitation

    h = pd.DataFrame({"session_key": ["a", "b", "b"], "video_id": [1, 2, 2], "clicked": [1, 1, 1]})
    got = covisitation(h)
    assert got.empty and list(got.columns) == ["video_id", "rank", "other"]

"""Issue 15: the chunked features fit keeps the affinity (user, side) counts in arrays
(:mod:`recsys.features.pair_counts`) into an :class:`~recsys.features.affinity_table.AffinityTable`; it
must read as the nested dicts of the whole path, and the JSON written from it be the bytes
``json.dumps(sort_keys=True)`` gives for those dicts."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from recsys.features.affinity_table import AffinityTable
from recsys.features.pair_counts import PairCounts

USERS = np.array([f"u{i:03d}" for i in range(40)] + ["ü-ser", 'q"uote', "Zed", "a\\b"], dtype=object)
SIDES = np.array(["50040", "9", "café", "music", "Music", "x y"], dtype=object)


def rows(rng, n):
    return (
        USERS[rng.integers(0, len(USERS), n)],
        SIDES[rng.integers(0, len(SIDES), n)],
        rng.integers(0, 2, n).astype(float),
    )


def dicts(users, sides, clicks) -> dict:
    """What the whole path's FitStats.fit_affinity builds (groupby sum/size, one dict per user)."""
    frame = pd.DataFrame({"user": users, "side": sides, "click": clicks})
    agg = frame.groupby(["user", "side"])["click"].agg(["sum", "size"])
    out: dict = {}
    for (u, s), c, n in zip(agg.index, agg["sum"], agg["size"], strict=True):
        out.setdefault(u, {})[s] = [float(c), float(n)]
    return out


@pytest.mark.parametrize("chunk", [1, 13, 5000])
def test_pairs_added_in_chunks_are_the_whole_path_dicts_and_json(chunk):
    rng = np.random.default_rng(21)
    users, sides, clicks = rows(rng, 3000)
    counts = PairCounts()
    for a in range(0, len(users), chunk):
        counts.add(users[a : a + chunk], sides[a : a + chunk], clicks[a : a + chunk])
    table = counts.table()
    want = dicts(users, sides, clicks)
    assert {u: table[u] for u in table} == want and list(table) == sorted(want)
    f = io.StringIO()
    table.write_json(f.write)
    assert f.getvalue() == json.dumps(AffinityTable.from_nested(want).to_json_value(), sort_keys=True)
    nested = io.StringIO()
    table.write_nested_json(nested.write)
    assert nested.getvalue() == json.dumps(want, sort_keys=True)


def test_positions_find_every_known_pair_and_only_those():
    rng = np.random.default_rng(4)
    users, sides, clicks = rows(rng, 500)
    counts = PairCounts()
    counts.add(users, sides, clicks)
    table = counts.table()
    want = dicts(users, sides, clicks)
    q_users = np.concatenate([users[:200], np.array(["nobody", "u001", "u002"], dtype=object)])
    q_sides = np.concatenate([sides[:200], np.array(["9", "unknown", "9"], dtype=object)])
    pos = table.positions(q_users, q_sides)
    for u, s, p in zip(q_users, q_sides, pos, strict=True):
        if s in want.get(u, {}):
            assert [table.clicks[p], table.imps[p]] == want[u][s]
        else:
            assert p == -1
    assert (pos[:200] >= 0).all()


def test_an_empty_table_writes_an_empty_object():
    table = PairCounts().table()
    f = io.StringIO()
    table.write_nested_json(f.write)
    assert f.getvalue() == "{}" and len(table) == 0
    f = io.StringIO()
    table.write_json(f.write)
    assert AffinityTable.from_json_value(json.loads(f.getvalue())) == {}
    assert (table.positions(np.array(["u"], dtype=object), np.array(["s"], dtype=object)) == -1).all()

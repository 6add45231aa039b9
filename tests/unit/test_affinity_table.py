"""The affinity tables held as arrays (recsys.features.affinity_table): the same mapping, the same JSON
to the byte as the nested dicts they replace, and a transform's save/load round trip unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.features.affinity_table import AffinityTable, object_hook


def nested_table(seed: int, n_users: int = 60) -> dict:
    """user -> side -> [clicks, impressions], with keys that need escaping and unsorted insertion."""
    rng = np.random.default_rng(seed)
    sides = ["news", "música", 'say "hi"', "back\\slash", "日本", "", "Zed", "a\nb"]
    out = {}
    for u in rng.permutation(n_users):
        user = f"u{u}" if u % 7 else f"ü-{u}"
        chosen = rng.choice(len(sides), size=int(rng.integers(1, len(sides))), replace=False)
        out[user] = {
            sides[i]: [float(rng.integers(0, 5)), float(rng.integers(5, 40)) + 0.5 * (u % 3)] for i in chosen
        }
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_the_arrays_read_and_write_as_the_nested_dict(seed):
    nested = nested_table(seed)
    table = AffinityTable.from_nested(nested)
    assert len(table) == len(nested) and set(table) == set(nested)
    assert all(table[u] == nested[u] for u in nested)
    assert table == nested and table == AffinityTable.from_nested(dict(reversed(list(nested.items()))))
    parts: list[str] = []
    table.write_json(parts.append)
    assert "".join(parts) == json.dumps(nested, sort_keys=True)
    other = {u: dict(per) for u, per in nested.items()}
    first = sorted(other)[0]
    other[first] = {s: [c + 1, n] for s, (c, n) in other[first].items()}
    assert table != other


def test_non_finite_counts_are_spelled_as_json_spells_them():
    nested = {"u": {"a": [float("nan"), 1.0], "b": [float("inf"), float("-inf")]}}
    parts: list[str] = []
    AffinityTable.from_nested(nested).write_json(parts.append)
    assert "".join(parts) == json.dumps(nested, sort_keys=True)


def test_json_loads_builds_the_tables_without_the_nested_dicts():
    doc = {
        "affinity": {
            "user_author_affinity": nested_table(2),
            "user_category_affinity": nested_table(3),
            "empty": {},
        },
        "history": {"u1": [3, 4], "u2": [5]},  # ints, not [clicks, impressions]: left as they are
        "prior": {"news": 0.25},
    }
    loaded = json.loads(json.dumps(doc, sort_keys=True), object_pairs_hook=object_hook())
    for name in ("user_author_affinity", "user_category_affinity"):
        assert isinstance(loaded["affinity"][name], AffinityTable)
        assert loaded["affinity"][name] == doc["affinity"][name]
    assert loaded["affinity"]["empty"] == {}
    assert loaded["history"] == doc["history"] and loaded["prior"] == doc["prior"]


def test_a_fitted_transform_saves_loads_and_saves_the_same_bytes(tmp_path):
    from recsys.features.transform import Transform
    from recsys.serving.synthetic import make_world

    world = make_world(n_users=40, n_videos=30, n_examples=600)
    t = Transform.fit(world.examples)
    assert all(isinstance(v, AffinityTable) and len(v) for v in t.affinity.values())
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    t.save(first)
    assert first.read_bytes() == json.dumps(t.to_dict(), sort_keys=True).encode()
    loaded = Transform.load(first)
    assert loaded == t
    loaded.save(second)
    assert second.read_bytes() == first.read_bytes()

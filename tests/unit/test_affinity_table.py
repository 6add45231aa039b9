"""The affinity tables held as arrays (recsys.features.affinity_table): the same mapping as the nested
dicts they replace; saved as arrays (a malformed saved table is a clear error), while a transform saved in
the nested form still loads; a transform's save/load round trip unchanged; erasure in both forms."""

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
    table.write_nested_json(parts.append)
    assert "".join(parts) == json.dumps(nested, sort_keys=True)
    parts = []
    table.write_json(parts.append)
    text = "".join(parts)
    assert text == json.dumps(table.to_json_value(), sort_keys=True)
    assert AffinityTable.from_json_value(json.loads(text)) == nested
    assert json.loads(text, object_pairs_hook=object_hook()) == nested
    other = {u: dict(per) for u, per in nested.items()}
    first = sorted(other)[0]
    other[first] = {s: [c + 1, n] for s, (c, n) in other[first].items()}
    assert table != other


def test_non_finite_counts_are_spelled_as_json_spells_them():
    nested = {"u": {"a": [float("nan"), 1.0], "b": [float("inf"), float("-inf")]}}
    parts: list[str] = []
    table = AffinityTable.from_nested(nested)
    table.write_nested_json(parts.append)
    assert "".join(parts) == json.dumps(nested, sort_keys=True)
    parts = []
    table.write_json(parts.append)  # binary: NaN and the infinities kept as they are
    back = AffinityTable.from_json_value(json.loads("".join(parts)))
    assert (
        np.array_equal(back.clicks, table.clicks, equal_nan=True)
        and back.imps.tolist() == table.imps.tolist()
    )


def test_json_loads_builds_the_tables_of_a_transform_saved_in_the_nested_form():
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


def test_a_malformed_saved_table_is_a_clear_error():
    good = AffinityTable.from_nested(nested_table(4)).to_json_value()
    AffinityTable.from_json_value(good)  # the untouched one loads
    broken = {
        "a newer format": {**good, "arrays": "affinity/9"},
        "a field missing": {k: v for k, v in good.items() if k != "imps"},
        "not base64": {**good, "clicks": "@@@"},
        "a truncated array": {**good, "clicks": good["clicks"][:-8]},
        "a user too many": {**good, "users": [*good["users"], "extra"]},
        "a side code out of range": {**good, "sides": good["sides"][:1]},
    }
    for what, value in broken.items():
        with pytest.raises(ValueError, match="affinity table"):
            AffinityTable.from_json_value(value)
            pytest.fail(f"{what}: loaded")
        with pytest.raises(ValueError, match="affinity table"):
            json.loads(json.dumps({"affinity": {"t": value}}), object_pairs_hook=object_hook())


def test_erasure_forgets_users_in_the_array_and_the_nested_form():
    """``forget_users`` of a saved transform's JSON: the user's pairs leave the table whichever form it
    was saved in, the other users' pairs stay, and the key is nowhere in the JSON text."""
    from recsys.privacy.model_repair import forget_users

    nested = nested_table(5)
    gone = sorted(nested)[3]
    want = {u: per for u, per in nested.items() if u != gone}
    for saved in (AffinityTable.from_nested(nested).to_json_value(), json.loads(json.dumps(nested))):
        scrubbed, _ = forget_users({"affinity": {"user_author_affinity": saved}}, {gone, "never-seen"})
        table = scrubbed["affinity"]["user_author_affinity"]
        assert AffinityTable.from_nested(table) == want
        assert json.dumps(gone)[1:-1] not in json.dumps(scrubbed)
    untouched, _ = forget_users({"affinity": {"t": AffinityTable.from_nested(nested).to_json_value()}}, {"x"})
    assert AffinityTable.from_nested(untouched["affinity"]["t"]) == nested


def test_a_transform_saved_in_the_nested_form_loads_as_the_same_transform(tmp_path):
    from recsys.features.transform import Transform
    from recsys.serving.synthetic import make_world

    t = Transform.fit(make_world(n_users=30, n_videos=20, n_examples=400).examples)
    old = t.to_dict()
    old["affinity"] = {name: {u: table[u] for u in table} for name, table in t.affinity.items()}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old, sort_keys=True))
    assert Transform.load(path) == t and Transform(**json.loads(path.read_text())) == t

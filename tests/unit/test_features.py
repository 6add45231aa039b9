from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.features.build import build_examples, encode, split_by_time
from recsys.features.spec import NUMERIC
from recsys.features.transform import Transform


def tiny_examples():
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(6)],
            "user_key": ["a", "a", "b", "b", "c", "z"],
            "session_key": ["s1"] * 6,
            "device": ["ios", "ios", "web", "web", "tv", "ios"],
            "region": ["EU-DE"] * 6,
            "ts": pd.to_datetime(
                [
                    "2026-01-01T10:00Z",
                    "2026-01-01T11:00Z",
                    "2026-01-01T12:00Z",
                    "2026-01-02T09:00Z",
                    "2026-01-03T08:00Z",
                    "2026-01-03T09:00Z",
                ],
                utc=True,
            ),
            "video_id": pd.array([1, 2, 1, 3, 2, 99], dtype="Int64"),
            "position": pd.array([1, 2, 1, 3, None, 1], dtype="Int64"),
            "rec_version": [None] * 6,
            "clicked": [1, 0, 1, 0, 1, 0],
            "watch_seconds": [30.0, 0, 10.0, 0, 5.0, 0],
            "liked": [1, 0, 0, 0, 1, 0],
            "shared": [0, 0, 0, 0, 0, 0],
        }
    )
    videos = pd.DataFrame(
        {
            "video_id": pd.array([1, 2, 3, 99], dtype="Int64"),
            "author_id": pd.array([7, 7, 8, 9], dtype="Int64"),
            "category": ["music", "music", "news", "new"],
            "tags": ["music"] * 4,
            "duration_seconds": [60.0, 120.0, 30.0, 10.0],
            "title": ["live guitar song", "remix beat", "breaking news", "brand new thing"],
            "upload_ts": pd.to_datetime(["2025-12-01T00:00Z"] * 4, utc=True),
            "visible": [True] * 4,
        }
    )
    users = pd.DataFrame(
        {
            "user_key": ["a", "b", "c", "z"],
            "age_band": ["18-24"] * 4,
            "gender": ["f"] * 4,
            "region": ["EU-DE"] * 4,
            "device": ["ios"] * 4,
            "activity": ["high", "mid", "low", "low"],
        }
    )
    return build_examples(events, videos, users)


def test_labels_masked_unless_clicked():
    ex = tiny_examples()
    assert ex["click"].tolist() == [1, 0, 1, 0, 1, 0]
    assert np.isnan(ex.loc[ex["click"] == 0, ["watch", "like", "share"]].to_numpy()).all()
    assert ex.loc[0, "watch"] == np.float32(np.log1p(30.0))


def test_time_split_and_no_future_leakage():
    ex = tiny_examples()
    train, valid, test = split_by_time(ex, date(2026, 1, 3), valid_fraction=0.25)
    assert pd.to_datetime(test["ts"]).min() >= pd.Timestamp("2026-01-03", tz="UTC")
    assert pd.to_datetime(train["ts"]).max() <= pd.to_datetime(valid["ts"]).min()
    assert pd.to_datetime(valid["ts"]).max() < pd.Timestamp("2026-01-03", tz="UTC")
    t = Transform.fit(train)
    # user "z" and video 99 only appear on the test day: they must not be in any vocabulary
    assert "z" not in t.vocabs["user"] and "99" not in t.vocabs["video"]
    assert "brand" not in t.title_vocab
    x = t.apply(test)
    assert x["user"][test["user_key"].eq("z").to_numpy()].tolist() == [0]


def test_first_day_splits_the_day_by_time():
    ex = tiny_examples()
    day1 = ex[pd.to_datetime(ex["ts"]) < pd.Timestamp("2026-01-02", tz="UTC")]
    train, valid, test = split_by_time(day1, date(2026, 1, 1))
    assert len(train) + len(valid) + len(test) == len(day1)
    assert pd.to_datetime(train["ts"]).max() <= pd.to_datetime(test["ts"]).min()


def test_same_row_same_tensors_on_training_and_serving_path(tmp_path):
    ex = tiny_examples()
    t = Transform.fit(ex)
    enc = encode(ex, t)
    t.save(tmp_path / "transform.json")
    served = Transform.load(tmp_path / "transform.json").apply(
        ex.drop(columns=["click", "watch", "like", "share"])
    )
    for name, arr in served.items():
        stored = np.stack(enc[f"x_{name}"].to_numpy()) if arr.ndim == 2 else enc[f"x_{name}"].to_numpy()
        np.testing.assert_array_equal(stored, arr, err_msg=name)
    assert t.spec().vocab_sizes["user"] == len(t.vocabs["user"]) + 1


def test_numeric_normalized_on_train_statistics():
    ex = tiny_examples()
    t = Transform.fit(ex, coengagement=True)
    # normalized with the statistics of what the model trains on: the ordered training rows
    x = t.apply(ex, ordered=True)["numeric"]
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
    assert t.numeric == list(NUMERIC) and x.shape[1] == len(NUMERIC) == t.spec().n_numeric


def _affinity_frame(rows):
    """Examples of one category 'music' (author 7) and 'news' (author 8): (user, category, click)."""
    n = len(rows)
    return pd.DataFrame(
        {
            "user_key": [r[0] for r in rows],
            "video_id": [1 if r[1] == "music" else 3 for r in rows],
            "author_id": [7 if r[1] == "music" else 8 for r in rows],
            "category": [r[1] for r in rows],
            "device": ["ios"] * n,
            "region": ["EU-DE"] * n,
            "age_band": ["18-24"] * n,
            "activity": ["high"] * n,
            "ts": pd.date_range("2026-01-01", periods=n, freq="min", tz="UTC"),
            "title": ["song"] * n,
            "duration_seconds": [60.0] * n,
            "upload_ts": pd.Timestamp("2025-12-01", tz="UTC"),
            "position": [1] * n,
            "click": np.array([r[2] for r in rows], dtype=np.float32),
        }
    )


def test_affinity_is_the_smoothed_lift_of_the_users_rate_over_the_category_rate():
    rows = [("a", "music", 1)] * 4 + [("a", "news", 0)] * 4 + [("b", "music", 0)] * 4 + [("b", "news", 1)] * 4
    t = Transform.fit(_affinity_frame(rows))
    m = t.affinity_strength
    assert t.affinity["user_category_affinity"]["a"] == {"music": [4.0, 4.0], "news": [0.0, 4.0]}
    prior = t.affinity_prior["user_category_affinity"]["music"]
    assert prior == pytest.approx((4 + m * 0.5) / (8 + m))
    probe = _affinity_frame([("a", "music", 0), ("b", "music", 0), ("nobody", "music", 0)])
    raw = t._raw_numeric(probe)[:, NUMERIC.index("user_category_affinity")]
    rate = (4 + m * prior) / (4 + m)

    def logit(p):
        return np.log(p / (1 - p))

    assert raw[0] == pytest.approx(logit(rate) - logit(prior))
    assert raw[1] == pytest.approx(logit(m * prior / (4 + m)) - logit(prior))
    assert raw[0] > 0 > raw[1] and raw[2] == 0.0  # likes music, avoids it, no evidence


def test_training_rows_see_only_earlier_impressions_never_their_own_label():
    rows = [("a", "music", 1), ("a", "music", 0), ("a", "music", 1), ("a", "news", 1)]
    ex = _affinity_frame(rows)
    t = Transform.fit(ex)
    j = NUMERIC.index("user_category_affinity")
    ordered = t._raw_numeric(ex, ordered=True)[:, j]
    # the first music row and the only news row have no earlier evidence, whatever their label
    assert ordered[0] == 0.0 and ordered[3] == 0.0
    # flipping a row's own label changes nothing in that row, only in the rows after it
    flipped = ex.copy()
    flipped.loc[1, "click"] = 1.0
    again = t._raw_numeric(flipped, ordered=True)[:, j]
    assert again[1] == ordered[1] and again[2] > ordered[2]
    # served (or on test days), every training impression counts
    served = t._raw_numeric(ex)[:, j]
    assert served[0] == served[1] == served[2] != ordered[0]


def test_pair_path_gives_the_row_path_affinities_bit_for_bit():
    ex = tiny_examples()
    t = Transform.fit(ex, coengagement=True)
    users = np.array(["a", "b", "c", "z", "never-seen"], dtype=object)
    videos = pd.DataFrame(
        {"category": ["music", "news", "new", None], "author_id": [7, 8, 9, None], "video_id": [1, 2, 3, 4]}
    )
    from recsys.features.pairs import pair_affinity

    lookup = pair_affinity(t, users, {c: videos[c].to_numpy(object) for c in videos.columns})
    ui, vi = np.repeat(np.arange(len(users)), len(videos)), np.tile(np.arange(len(videos)), len(users))
    rows = pd.DataFrame(
        {
            "user_key": users[ui],
            "category": videos["category"].to_numpy(object)[vi],
            "author_id": videos["author_id"].to_numpy(object)[vi],
            "video_id": videos["video_id"].to_numpy(object)[vi],
        }
    )
    fast = lookup(ui, vi)
    for name in ("user_category_affinity", "user_author_affinity"):
        row_path = t.normalize(name, t._affinity_raw(rows, name, ordered=False))
        np.testing.assert_array_equal(fast[name], row_path, err_msg=name)
    co = t.coengagement_table().raw(rows["user_key"], rows["video_id"], loo=False)
    np.testing.assert_array_equal(fast["user_video_coengagement"], t.normalize("user_video_coengagement", co))
    assert np.unique(fast["user_category_affinity"]).size > 1  # not all "no evidence"


def test_a_transform_saved_before_affinities_still_applies(tmp_path):
    ex = tiny_examples()
    old = Transform.fit(ex).to_dict()
    for key in ("affinity", "affinity_prior", "affinity_strength", "numeric"):
        old.pop(key)
    old["version"] = 1
    old["numeric_mean"] = {k: v for k, v in old["numeric_mean"].items() if "affinity" not in k}
    (tmp_path / "transform.json").write_text(json.dumps(old))
    t = Transform.load(tmp_path / "transform.json")
    assert t.apply(ex)["numeric"].shape == (len(ex), 4) and t.spec().n_numeric == 4


def test_video_popularity_on_training_rows_never_counts_the_rows_own_click():
    """Issue 18: the training value of video_popularity is leave-one-out (no own click)."""
    rows = [("a", "music", 1), ("b", "music", 1), ("c", "music", 0), ("d", "music", 1)]
    ex = _affinity_frame(rows)
    ex["video_id"] = 7  # one video with 3 clicks: each row sees the clicks of the others
    t = Transform.fit(ex)
    j = NUMERIC.index("video_popularity")
    loo = t._raw_numeric(ex, ordered=True)[:, j]
    assert loo == pytest.approx(np.log1p([2, 2, 3, 2]))
    flipped = ex.copy()
    flipped.loc[2, "click"] = 1.0  # a row's own label does not move its own value
    again = t._raw_numeric(flipped, ordered=True)[:, j]
    assert again[2] == loo[2] and (again[[0, 1, 3]] > loo[[0, 1, 3]]).all()
    served = t._raw_numeric(ex)[:, j]  # serving (and test days): every training click
    assert served == pytest.approx(np.log1p([3, 3, 3, 3]))


def test_the_coengagement_input_is_for_positive_only_sources_unless_configured():
    from recsys.features.coengagement import use_coengagement

    ex = tiny_examples()
    assert "user_video_coengagement" not in Transform.fit(ex).numeric  # logged exposures: not by default
    with_it = Transform.fit(ex, coengagement=True)
    assert with_it.numeric[-1] == "user_video_coengagement" and with_it.spec().n_numeric == len(NUMERIC)
    assert [use_coengagement("auto", p) for p in (True, False)] == [True, False]
    assert use_coengagement("on", False) and not use_coengagement("off", True)


@pytest.mark.parametrize(
    "col",
    [
        pd.Series(["b", "a", None, "b", "a", "b"], dtype="string[pyarrow]"),
        pd.Series(["x", None, float("nan"), "x"], dtype=object),
        pd.Series([1, 1.0, "1", True, None, 2], dtype=object),  # per-row: 1 and 1.0 spell differently
        pd.Series([3, 1, 3, 3], dtype="int64"),
        pd.Series(pd.to_datetime(["2026-01-01", None, "2026-01-01"])),  # NaT has a spelling
    ],
)
def test_vocabulary_counts_per_distinct_value_equal_the_per_row_counts(col):
    from collections import Counter

    from recsys.features.keys import _key, _key_counts

    assert _key_counts(col) == Counter(_key(v) for v in col)


def test_fit_counts_title_words_once_per_row_they_occur_in():
    examples = tiny_examples()
    t = Transform.fit(examples)
    from collections import Counter

    from recsys.features.keys import tokenize

    words = Counter(w for title in examples["title"] for w in tokenize(title))
    top = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
    assert t.title_vocab == {w: i + 2 for i, (w, _) in enumerate(top)}

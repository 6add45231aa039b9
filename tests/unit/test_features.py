from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from recsys.features.build import build_examples, encode, split_by_time
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
    t = Transform.fit(ex)
    x = t.apply(ex)["numeric"]
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)

"""Real datasets into landing: KuaiRand (the shared real sample and feature tables) and MovieLens
(tiny made-up files in the ml-100k, ml-1m and ml-latest formats)."""

from __future__ import annotations

import json
import logging
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from services import requires

from recsys.config import Settings
from recsys.data import importers, kuairand, movielens
from recsys.data.lake import Lake
from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS, conform
from recsys.data.sources import landing_file

KUAIRAND = Path(os.environ.get("RECSYS_TEST_KUAIRAND_DIR", "/work/shared/data/kuairand"))
FIXTURES = Path(__file__).parents[1] / "fixtures" / "movielens"
needs_kuairand = requires(
    (KUAIRAND / "log_sample_200.csv").exists(), f"the shared KuaiRand sample is not at {KUAIRAND}"
)


def settings_for(source: str, path: Path, tmp_path: Path) -> Settings:
    return Settings(source=source, source_path=path, data_dir=tmp_path / "data")


def read_landing(tmp_path: Path, dataset: str, ds: date) -> list[dict]:
    """The landing file, parsed one line at a time (as the collect stage does)."""
    text = landing_file(Lake(tmp_path / "data"), dataset, ds).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def landed(tmp_path: Path, ds: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(
        conform(pd.DataFrame(read_landing(tmp_path, d, ds), columns=list(s)), s, name=d)
        for d, s in (("events", RAW_EVENTS), ("videos", VIDEOS), ("users", RAW_USERS))
    )


# KuaiRand ----------------------------------------------------------------------------------------------
@needs_kuairand
def test_kuairand_sample_lands_in_the_raw_schemas(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(kuairand.DAY_ENV, raising=False)
    settings = settings_for("kuairand", KUAIRAND, tmp_path)
    with caplog.at_level(logging.WARNING):
        days = importers.available_days(settings)
    assert days == [kuairand.DEFAULT_DAY]  # the sample has no time columns
    ds = days[0]
    summary = importers.land(ds, settings)

    raw = pd.read_csv(KUAIRAND / "log_sample_200.csv")
    video_table = pd.read_csv(KUAIRAND / "video_features_basic_pure.csv")
    user_table = pd.read_csv(KUAIRAND / "user_features_pure.csv")
    events, videos, users = landed(tmp_path, ds)
    assert summary["events_rows"] == len(events) == len(raw) == 200
    assert len(videos) == summary["videos_rows"] == len(video_table)
    assert len(users) == summary["users_rows"] == len(user_table)

    # labels and ids, row for row (events are in file order: the sample is spread over the day)
    assert events["event_id"].is_unique
    assert events["user_id"].tolist() == raw["user_id"].astype(str).tolist()
    assert events["video_id"].tolist() == raw["video_id"].tolist()
    assert events["clicked"].tolist() == raw["is_click"].tolist()
    np.testing.assert_allclose(events["watch_seconds"].astype(float), raw["play_time_ms"] / 1000)
    assert events["liked"].isna().all() and events["shared"].isna().all()  # not in the sample
    assert events[["email", "ip", "device", "position", "rec_version"]].isna().all().all()
    assert (events["ts"].dt.date == ds).all() and events["ts"].is_monotonic_increasing
    # one session per user on an untimed day
    assert (events.groupby("user_id")["session_id"].nunique() == 1).all()
    assert events["session_id"].nunique() == raw["user_id"].nunique()

    v = videos.set_index("video_id")
    table = video_table.set_index("video_id")
    np.testing.assert_allclose(
        v["duration_seconds"].dropna().astype(float),
        table.loc[v["duration_seconds"].dropna().index, "video_duration"] / 1000,
    )
    assert v["visible"].all()  # visible_status == 0 throughout the Pure candidate pool
    first = table["tag"].dropna().index[5]
    assert v.loc[first, "tags"] == table.loc[first, "tag"].replace(",", "|")
    assert v.loc[first, "category"] == table.loc[first, "tag"].split(",")[0]
    assert v.loc[table["tag"].isna()].eq("unknown")["category"].all()
    assert set(events["video_id"]) <= set(videos["video_id"])
    assert set(events["user_id"]) <= set(users["user_id"])
    degree = dict(zip(user_table["user_id"].astype(str), user_table["user_active_degree"], strict=True))
    assert (users["activity"] == users["user_id"].map(degree).replace("UNKNOWN", "unknown")).all()
    assert users["email"].isna().all() and (users["age_band"] == "unknown").all()


@needs_kuairand
def test_kuairand_untimed_log_goes_to_the_configured_day(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(kuairand.DAY_ENV, "2022-05-01")
    settings = settings_for("kuairand", KUAIRAND / "log_sample_200.csv", tmp_path)
    with caplog.at_level(logging.WARNING, logger="recsys.data.kuairand"):
        assert importers.available_days(settings) == [date(2022, 5, 1)]
        assert importers.land(date(2022, 5, 1), settings)["events_rows"] == 200
    assert importers.land(date(2022, 5, 2), settings)["events_rows"] == 0  # never duplicated to other days
    assert read_landing(tmp_path, "events", date(2022, 5, 2)) == []


@needs_kuairand
def test_kuairand_landing_passes_validation(tmp_path, monkeypatch):
    from recsys.data.validate import read_landing_jsonl, validate_events, validate_users, validate_videos

    monkeypatch.delenv(kuairand.DAY_ENV, raising=False)
    ds = kuairand.DEFAULT_DAY
    importers.land(ds, settings_for("kuairand", KUAIRAND, tmp_path))
    _, videos, users = landed(tmp_path, ds)
    rows, malformed = read_landing_jsonl(landing_file(Lake(tmp_path / "data"), "events", ds))
    result = validate_events(
        rows,
        ds,
        videos["video_id"].tolist(),
        [],
        n_malformed=len(malformed),
        durations=dict(zip(videos["video_id"], videos["duration_seconds"], strict=True)),
    )
    assert result.report["quarantined"] == 0 and len(result.accepted) == 200
    validate_videos(videos)
    validate_users(users)
    # collect's strict format rules (recsys.data.formats) hold for every value of the real tables, e.g. the
    # activity band '2_14_day_new' (a leading digit)
    from recsys.data import formats

    for table in (users, videos, events_of(tmp_path, ds)):
        for col in set(table.columns) & set(formats.FORMATS):
            bad = table[col][~formats.format_ok(col, table[col])]
            assert bad.empty, f"{col}: {bad.unique()[:5]}"


def events_of(tmp_path: Path, ds: date) -> pd.DataFrame:
    return landed(tmp_path, ds)[0]


def write_official_log(folder: Path) -> pd.DataFrame:
    """A tiny log in the official KuaiRand schema (with time columns), two days, no feature tables."""
    t0 = pd.Timestamp("2022-04-22T23:50:00Z")
    offsets_min = [0, 5, 50, 0, 15, 20]  # user 7: a 45-minute gap starts a new session
    users = [7, 7, 7, 9, 9, 9]
    ts = [
        t0 + pd.Timedelta(minutes=m, hours=0 if u == 7 else 1)
        for u, m in zip(users, offsets_min, strict=True)
    ]
    ms = [int(t.value // 10**6) for t in ts]
    log = pd.DataFrame(
        {
            "user_id": users,
            "video_id": [1, 2, 3, 1, 4, 2],
            "date": [int((t + pd.Timedelta(hours=8)).strftime("%Y%m%d")) for t in ts],
            "hourmin": [int((t + pd.Timedelta(hours=8)).strftime("%H%M")) for t in ts],
            "time_ms": ms,
            "is_click": [1, 0, 1, 1, 0, 1],
            "is_like": [1, 0, 0, 0, 0, 1],
            "is_follow": 0,
            "is_comment": 0,
            "is_forward": [0, 0, 1, 0, 0, 0],
            "is_hate": 0,
            "long_view": 0,
            "play_time_ms": [12000, 800, 30500, 5000, 0, 9000],
            "duration_ms": [20000, 15000, 60000, 20000, 0, 15000],
            "profile_stay_time": 0,
            "comment_stay_time": 0,
            "is_profile_enter": 0,
            "is_rand": 0,
            "tab": 1,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    log.to_csv(folder / "log_standard_4_22_to_5_08_test.csv", index=False)
    return log


def test_kuairand_official_log_uses_its_timestamps(tmp_path):
    log = write_official_log(tmp_path / "kr")
    settings = settings_for("kuairand", tmp_path / "kr", tmp_path)
    assert importers.available_days(settings) == [date(2022, 4, 22), date(2022, 4, 23)]
    for ds in (date(2022, 4, 22), date(2022, 4, 23)):
        importers.land(ds, settings)
    first, _, _ = landed(tmp_path, date(2022, 4, 22))
    second, videos, users = landed(tmp_path, date(2022, 4, 23))
    both = pd.concat([first, second]).set_index("event_id")
    assert len(both) == len(log) and both.index.is_unique
    by_row = both.loc[[f"kr-log_standard_4_22_to_5_08_test-{i}" for i in range(len(log))]]
    assert by_row["ts"].tolist() == pd.to_datetime(log["time_ms"], unit="ms", utc=True).tolist()
    assert by_row["clicked"].tolist() == log["is_click"].tolist()
    assert by_row["liked"].tolist() == log["is_like"].tolist()
    assert by_row["shared"].tolist() == log["is_forward"].tolist()
    # sessions: a gap of 30 minutes or more starts a new one (user 7: 0, 5, then 50 minutes)
    user7 = by_row[by_row["user_id"] == "7"]["session_id"].tolist()
    assert user7[0] == user7[1] != user7[2]
    assert (by_row[by_row["user_id"] == "9"]["session_id"].nunique()) == 1
    # without feature tables: ids from the log, durations from duration_ms (0 = unknown)
    assert sorted(videos["video_id"]) == [1, 2, 3, 4]
    assert videos.set_index("video_id")["duration_seconds"].astype(float).to_dict() == pytest.approx(
        {1: 20.0, 2: 15.0, 3: 60.0, 4: float("nan")}, nan_ok=True
    )
    assert sorted(users["user_id"]) == ["7", "9"] and (users["activity"] == "unknown").all()


def test_kuairand_date_and_hourmin_are_beijing_time(tmp_path):
    log = write_official_log(tmp_path / "kr").drop(columns=["time_ms"])
    log.to_csv(tmp_path / "kr" / "log_standard_4_22_to_5_08_test.csv", index=False)
    days = importers.available_days(settings_for("kuairand", tmp_path / "kr", tmp_path))
    assert days == [date(2022, 4, 22), date(2022, 4, 23)]
    frame = kuairand.read_log(tmp_path / "kr")
    expected = (
        pd.to_datetime(log["date"].astype(str) + log["hourmin"].astype(str).str.zfill(4), format="%Y%m%d%H%M")
        - pd.Timedelta(hours=8)
    ).dt.tz_localize("UTC")
    assert frame["ts"].tolist() == expected.tolist()


# MovieLens ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, n_ratings, n_movies, n_users", [("ml-100k", 9, 5, 4), ("ml-1m", 6, 4, 3)])
def test_movielens_lands_every_day(tmp_path, fmt, n_ratings, n_movies, n_users):
    path = FIXTURES / fmt
    assert movielens.detect_format(path) == fmt
    settings = settings_for("movielens", path, tmp_path)
    days = importers.available_days(settings)
    assert len(days) == 3
    ratings = movielens.load(path).ratings
    frames = []
    for ds in days:
        summary = importers.land(ds, settings)
        events, videos, users = landed(tmp_path, ds)
        assert summary["events_rows"] == len(events) > 0
        assert (events["ts"].dt.date == ds).all()
        assert len(videos) == n_movies and len(users) == n_users
        frames.append(events)
    events = pd.concat(frames, ignore_index=True)
    assert len(events) == n_ratings and events["event_id"].is_unique
    rating = events.merge(
        ratings.assign(user_id=ratings["user_id"].astype(str)),
        left_on=["user_id", "video_id"],
        right_on=["user_id", "item"],
    )["rating"]
    assert len(rating) == n_ratings
    assert (events["clicked"] == 1).all()
    np.testing.assert_allclose(events["watch_seconds"].astype(float), rating / 5 * movielens.MOVIE_SECONDS)
    assert events["liked"].tolist() == (rating >= 4).astype(int).tolist()
    assert events["shared"].isna().all() and events["position"].isna().all()
    assert events[["email", "ip", "device"]].isna().all().all()


def test_movielens_100k_metadata():
    ml = movielens.load(FIXTURES / "ml-100k")
    v = ml.videos.set_index("video_id")
    assert v.loc[1, "category"] == "Animation" and v.loc[1, "tags"] == "Animation|Children's|Comedy"
    assert v.loc[3, "title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert v.loc[4, "category"] == "unknown" and pd.isna(v.loc[4, "upload_ts"])
    assert v.loc[1, "upload_ts"] == pd.Timestamp("1995-01-01", tz="UTC")
    assert v.loc[5, "upload_ts"] == pd.Timestamp("1994-01-01", tz="UTC")  # no release date: the title's year
    u = ml.users.set_index("user_id")
    assert u.loc["1", ["age_band", "gender", "region"]].tolist() == ["18-24", "m", "NA-US-857"]
    assert u.loc["3", ["age_band", "region"]].tolist() == ["<13", "unknown"]  # Canadian postcode
    assert u["device"].isna().all() and (u["activity"] == "unknown").all()


def test_movielens_sessions_and_days_are_utc():
    ml = movielens.load(FIXTURES / "ml-100k")
    day1 = movielens.events_for_day(ml, date(1997, 9, 22))
    user1 = day1[day1["user_id"] == "1"].sort_values("ts")["session_id"].tolist()
    assert user1[0] == user1[1] != user1[2]  # 20:00, 20:10, then 22:30
    # 23:59:59 and 00:00:01 are different days
    assert "ml-3-5" in set(movielens.events_for_day(ml, date(1997, 9, 23))["event_id"])
    assert "ml-3-2" in set(movielens.events_for_day(ml, date(1997, 9, 24))["event_id"])


def test_movielens_1m_metadata():
    ml = movielens.load(FIXTURES / "ml-1m")
    v = ml.videos.set_index("video_id")
    assert v.loc[661, "category"] == "Animation" and v.loc[661, "tags"] == "Animation|Children's|Musical"
    assert v.loc[2000, "title"] == "Amélie (2001)"
    u = ml.users.set_index("user_id")
    assert u["age_band"].to_dict() == {"1": "<18", "2": "56+", "3": "25-34"}
    assert u.loc["3", "region"] == "NA-US-551"  # ZIP+4


def test_movielens_latest_csv_format(tmp_path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.5,964982703\n2,20,2.0,964982224\n"
    )
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n20,Nothing (2003),(no genres listed)\n'
    )
    settings = settings_for("movielens", folder, tmp_path)
    (ds,) = importers.available_days(settings)
    importers.land(ds, settings)
    events, videos, users = landed(tmp_path, ds)
    assert events.set_index("video_id")["liked"].to_dict() == {10: 1, 20: 0}
    assert videos.set_index("video_id")["category"].to_dict() == {10: "Action", 20: "unknown"}
    assert videos.set_index("video_id").loc[10, "title"] == "Heat, The (1995)"
    assert sorted(users["user_id"]) == ["1", "2"] and (users["age_band"] == "unknown").all()


# Landing and configuration ------------------------------------------------------------------------------
def test_land_is_idempotent_and_replaces_a_sealed_copy(tmp_path):
    settings = settings_for("movielens", FIXTURES / "ml-1m", tmp_path)
    ds = date(2001, 1, 1)
    importers.land(ds, settings)
    path = landing_file(Lake(tmp_path / "data"), "events", ds)
    first = path.read_bytes()
    sealed = path.with_name(path.name + ".enc")
    path.rename(sealed)  # as the collect stage leaves it
    importers.land(ds, settings)
    assert path.read_bytes() == first and not sealed.exists()
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary files left


def test_missing_or_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="RECSYS_SOURCE_PATH"):
        importers.available_days(Settings(source="movielens", data_dir=tmp_path))
    with pytest.raises(FileNotFoundError):
        importers.available_days(settings_for("movielens", tmp_path / "nowhere", tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="MovieLens"):
        importers.land(date(2001, 1, 1), settings_for("movielens", tmp_path / "empty", tmp_path))
    with pytest.raises(FileNotFoundError, match="log_"):
        importers.land(date(2022, 4, 8), settings_for("kuairand", tmp_path / "empty", tmp_path))
    with pytest.raises(ValueError, match="importer source"):
        importers.available_days(Settings(source="simulator", data_dir=tmp_path))


def test_postgres_location_from_env_or_source_path(monkeypatch):
    monkeypatch.setenv(importers.URL_ENV, "postgresql+psycopg2://u@h:5432/db#raw.events,raw.vids")
    assert importers.postgres_location() == (
        "postgresql+psycopg2://u@h:5432/db",
        "raw.events",
        "raw.vids",
        "raw.events_users",
    )
    monkeypatch.delenv(importers.URL_ENV)
    settings = Settings(source="postgres", source_path="postgresql://u@h/db#ev")  # a Path folds the '//'
    assert importers.postgres_location(settings) == ("postgresql://u@h/db", "ev", "ev_videos", "ev_users")
    with pytest.raises(ValueError, match=importers.URL_ENV):
        importers.postgres_location(Settings(source="postgres", source_path="postgresql://u@h/db"))


def test_sessionize_splits_on_gaps():
    user = pd.Series(["a", "b", "a", "a", "b"])
    ts = pd.to_datetime(
        pd.Series(
            [
                "2024-01-01T00:00",
                "2024-01-01T00:00",
                "2024-01-01T00:29:59",
                "2024-01-01T00:59:59",
                "2024-01-01T02:00",
            ]
        ),
        utc=True,
        format="ISO8601",
    )
    ids = importers.sessionize(user, ts, "x").tolist()
    assert ids[0] == ids[2] == "x-a-1704067200" and ids[3] == "x-a-1704070799"
    assert ids[1] != ids[4]
    assert importers.sessionize(user.iloc[:0], ts.iloc[:0], "x").empty

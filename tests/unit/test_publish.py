from __future__ import annotations

import pandas as pd
import pytest
from publish_checks import lists, many_publishes, reader_sees_consistent_lists

from recsys.serving.publish import (
    FALLBACK_KEY,
    PublishCheckError,
    engine_for,
    prune,
    publish,
    read_for_ds,
    read_live,
    rollback,
)


@pytest.fixture
def eng(tmp_path):
    return engine_for(f"sqlite:///{tmp_path / 'recs.db'}")


def test_publish_then_read_live(eng):
    info = publish(
        eng, lists(["a", "b"]), ds="2026-01-01", model_version="1", active_users={"a", "b"}, top_n=3
    )
    live = read_live(eng)
    assert info["version"] == "2026-01-01" and len(live) == 6
    assert read_live(eng, "a", 2)["rank"].tolist() == [1, 2]


def test_republishing_a_day_keeps_the_same_rows(eng):
    for _ in range(3):
        publish(eng, lists(["a", "b"]), ds="2026-01-01", model_version="1", active_users={"a", "b"}, top_n=3)
    with eng.connect() as c:
        assert pd.read_sql("select count(*) n from recommendations", c)["n"][0] == 6
        assert pd.read_sql("select count(*) n from recommendation_versions", c)["n"][0] == 1


@pytest.mark.parametrize(
    "bad,msg",
    [
        (lists(["a"]), "active user"),
        (lists(["a", "b"]).assign(rank=lambda d: d["rank"] + 1), "ranks not 1..n"),
        (lists(["a", "b"]).assign(video_id=5), "repeat a video"),
    ],
)
def test_checks_refuse_bad_versions_and_live_is_unchanged(eng, bad, msg):
    publish(eng, lists(["a", "b"]), ds="2026-01-01", model_version="1", active_users={"a", "b"}, top_n=3)
    with pytest.raises(PublishCheckError, match=msg):
        publish(eng, bad, ds="2026-01-02", model_version="2", active_users={"a", "b"}, top_n=3)
    assert set(read_live(eng)["version"]) == {"2026-01-01"}


def test_row_count_collapse_is_refused(eng):
    publish(
        eng,
        lists([f"u{i}" for i in range(10)]),
        ds="2026-01-01",
        model_version="1",
        active_users=set(),
        top_n=3,
    )
    with pytest.raises(PublishCheckError, match="below"):
        publish(eng, lists(["a"]), ds="2026-01-02", model_version="2", active_users={"a"}, top_n=3)


def test_rollback_and_pruning(eng):
    for d in range(1, 5):
        publish(
            eng,
            lists(["a"], offset=d),
            ds=f"2026-01-0{d}",
            model_version=str(d),
            active_users={"a"},
            top_n=3,
            keep=3,
        )
    with eng.connect() as c:
        kept = pd.read_sql("select version from recommendation_versions order by version", c)[
            "version"
        ].tolist()
    assert kept == ["2026-01-02", "2026-01-03", "2026-01-04"]
    assert rollback(eng) == {"live": "2026-01-03", "was": "2026-01-04"}
    assert read_live(eng)["video_id"].tolist() == [104, 105, 106]
    assert read_for_ds(eng, "2026-01-04")["video_id"].tolist() == [105, 106, 107]
    assert prune(eng, keep=1) != []
    assert set(read_live(eng)["version"]) == {"2026-01-03"}


def test_fallback_rows_are_not_checked_as_users(eng):
    recs = pd.concat([lists(["a"]), lists([FALLBACK_KEY])])
    publish(eng, recs, ds="2026-01-01", model_version="1", active_users={"a"}, top_n=3)
    assert len(read_live(eng, FALLBACK_KEY)) == 3


def test_concurrent_reader_never_sees_a_mixed_partial_or_empty_list_sqlite(eng):
    users = [f"user{i:05d}" for i in range(1000)]
    publish(eng, lists(users, n=10), ds="2026-01-31", model_version="0", active_users=set(users), top_n=10)
    watched = [users[0], users[500], users[-1]]
    problems, seen, reads = reader_sees_consistent_lists(eng, many_publishes(eng, users, 10), watched, 10)
    assert problems == []
    assert reads >= 20 and len(seen) >= 2  # the reader did run across switches
    with eng.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_the_reader_check_catches_a_non_atomic_writer(eng):
    """Negative control: rewriting the live version in place, in several transactions, is caught."""
    import time

    from recsys.serving.publish import recommendations

    users = [f"user{i:03d}" for i in range(200)]
    publish(eng, lists(users, n=10), ds="2026-01-31", model_version="0", active_users=set(users), top_n=10)
    rows = lists(users, n=10).assign(
        version="2026-01-31", model_version="0", generated_at=pd.Timestamp("2026-02-01", tz="UTC")
    )

    def bad():
        for _ in range(4):
            with eng.begin() as c:
                c.execute(recommendations.delete().where(recommendations.c.version == "2026-01-31"))
            time.sleep(0.05)
            for part in (rows.iloc[: len(rows) // 2], rows.iloc[len(rows) // 2 :]):
                with eng.begin() as c:
                    c.execute(recommendations.insert(), part.to_dict("records"))
                time.sleep(0.05)

    problems, _, _ = reader_sees_consistent_lists(eng, bad, [users[0], users[-1]], 10)
    assert problems


def test_publishing_in_pieces_and_batches(eng):
    from publish_checks import publishing_in_pieces_and_batches

    publishing_in_pieces_and_batches(eng)
    import sqlalchemy as sa

    from recsys.serving.publish import recommendations

    # SQLite: the raw executemany stores the time exactly as SQLAlchemy's insert does (same text)
    with eng.begin() as conn:
        at = conn.execute(sa.select(recommendations.c.generated_at).limit(1)).scalar()
        conn.execute(
            recommendations.insert().values(
                version="x", user_key="x", rank=1, video_id=1, score=0.0, model_version="x", generated_at=at
            )
        )
        texts = conn.exec_driver_sql("SELECT DISTINCT CAST(generated_at AS TEXT) FROM recommendations").all()
        conn.exec_driver_sql("DELETE FROM recommendations WHERE version = 'x'")
    assert len(texts) == 1

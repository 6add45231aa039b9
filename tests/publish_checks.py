"""Shared checks for the publish tests (SQLite in tests/unit, PostgreSQL in tests/integration)."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys.serving.publish import publish, rollback


def lists(users, n=3, offset=0):
    return pd.DataFrame(
        [(u, r, 100 + offset + r, 1.0 / r) for u in users for r in range(1, n + 1)],
        columns=["user_key", "rank", "video_id", "score"],
    )


def reader_sees_consistent_lists(engine, publish_all, watched, n, min_reads=20):
    """Run ``publish_all()`` while a thread polls the live view for ``watched`` users with one SELECT per
    read; every read must show one version, ranks 1..n for every watched user, and never nothing."""
    import threading
    import time

    import sqlalchemy as sa

    stop, problems, seen, reads = threading.Event(), [], set(), [0]
    marks = ", ".join(f":u{i}" for i in range(len(watched)))
    q = sa.text(f"SELECT user_key, rank, version FROM live_recommendations WHERE user_key IN ({marks})")
    params = {f"u{i}": u for i, u in enumerate(watched)}

    def poll():
        with engine.connect() as conn:
            while not stop.is_set() or reads[0] < min_reads:
                rows = conn.execute(q, params).all()
                conn.rollback()  # end the read transaction: the next read sees the newest commit
                reads[0] += 1
                versions = {r.version for r in rows}
                seen.update(versions)
                if not rows:
                    problems.append("empty read")
                elif len(versions) != 1:
                    problems.append(f"mixed versions {sorted(versions)}")
                else:
                    for u in watched:
                        ranks = sorted(r.rank for r in rows if r.user_key == u)
                        if ranks != list(range(1, n + 1)):
                            problems.append(f"partial list for {u}: {ranks}")
                if len(problems) > 20:
                    return
                time.sleep(0.001)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        publish_all()
    finally:
        stop.set()
        t.join(timeout=120)
    return problems, seen, reads[0]


def many_publishes(engine, users, n, days=4):
    def run():
        for d in range(1, days + 1):
            publish(
                engine,
                lists(users, n=n, offset=10 * d),
                ds=f"2026-02-0{d}",
                model_version=str(d),
                active_users=set(users),
                top_n=n,
                keep=3,
            )
        publish(
            engine,
            lists(users, n=n, offset=99),
            ds=f"2026-02-0{days}",
            model_version="again",
            active_users=set(users),
            top_n=n,
            keep=3,
        )  # republish a day: replaces its older version
        rollback(engine)
        publish(
            engine,
            lists(users, n=n, offset=7),
            ds="2026-02-09",
            model_version="9",
            active_users=set(users),
            top_n=n,
            keep=3,
        )

    return run


def publishing_in_pieces_and_batches(engine):
    """A version given in pieces (row groups) and inserted in small batches holds exactly the rows of the
    frame (scores bit for bit); a user split across two pieces is checked whole; a check that fails in
    the last piece (or a user whose rows come in two places) refuses the version with nothing written."""
    import numpy as np
    import sqlalchemy as sa

    from recsys.serving.publish import FALLBACK_KEY, PublishCheckError, publish, read_live, recommendations

    users = [f"user-{i:03d}" for i in range(40)]
    frame = lists(users, n=5)
    frame["score"] = np.random.default_rng(7).random(len(frame))  # no short decimal form
    frame = pd.concat([frame, lists([FALLBACK_KEY], n=5)], ignore_index=True)
    pieces = [frame.iloc[a:b] for a, b in ((0, 13), (13, 14), (14, 120), (120, len(frame)))]
    kw = {"ds": "2026-03-01", "model_version": "m1", "active_users": set(users), "top_n": 5}
    info = publish(engine, iter(pieces), batch_rows=7, **kw)
    assert info["rows"] == len(frame) and info["users"] == len(users) + 1
    live = read_live(engine)
    want = frame.sort_values(["user_key", "rank"]).reset_index(drop=True)
    got = live[["user_key", "rank", "video_id", "score"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=True)
    assert set(live["model_version"]) == {"m1"} and set(live["version"]) == {info["version"]}
    with engine.connect() as conn:  # the time is stored as SQLAlchemy's own insert stores it
        stamps = conn.execute(sa.select(recommendations.c.generated_at).distinct()).scalars().all()
    assert len(stamps) == 1 and stamps[0] is not None and stamps[0].year >= 2026

    def refused(version_pieces, match):
        with engine.connect() as conn:
            before = conn.execute(sa.select(sa.func.count()).select_from(recommendations)).scalar()
        with pytest.raises(PublishCheckError, match=match):
            publish(engine, iter(version_pieces), batch_rows=7, **{**kw, "ds": "2026-03-02"})
        with engine.connect() as conn:
            after = conn.execute(sa.select(sa.func.count()).select_from(recommendations)).scalar()
        assert after == before and read_live(engine)["version"].unique().tolist() == [info["version"]]

    late_dup = frame.copy()
    late_dup.loc[late_dup.index[-7], "video_id"] = late_dup["video_id"].iloc[-8]  # user-039, last piece
    refused([late_dup.iloc[:120], late_dup.iloc[120:]], "1 list\\(s\\) repeat a video")
    apart = pd.concat([frame.iloc[:3], frame.iloc[10:], frame.iloc[3:5]], ignore_index=True)  # user-000
    refused([apart], "1 user\\(s\\) with rows in several places")

"""Shared checks for the publish tests (SQLite in tests/unit, PostgreSQL in tests/integration)."""

from __future__ import annotations

import pandas as pd

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

"""The per-(stage, ds) lock on PostgreSQL (``RECSYS_DB_URL`` on PostgreSQL): an advisory lock.

Needs a PostgreSQL server (``RECSYS_TEST_POSTGRES_URL``); skips locally without one, fails under CI=true.
"""

from __future__ import annotations

import os
from datetime import date

import pytest
from services import service_missing

from recsys.data.locks import StageBusyError, advisory_key, advisory_lock, stage_lock

pytestmark = pytest.mark.postgres

URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
DS = date(2026, 1, 1)


@pytest.fixture(scope="module")
def pg_url():
    import sqlalchemy as sa

    engine = sa.create_engine(URL)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # no server: skip locally, fail under CI=true
        service_missing(f"PostgreSQL not reachable at {URL}: {exc}")
    finally:
        engine.dispose()
    return URL


def test_a_second_holder_waits_then_fails_with_a_clear_message(pg_url):
    stage = f"lock-test-{os.getpid()}"
    with advisory_lock(pg_url, stage, DS, 1.0) as key:
        assert key == advisory_key(stage, DS)
        busy = pytest.raises(StageBusyError, match=rf"stage {stage} for ds=2026-01-01 is already running")
        with busy, advisory_lock(pg_url, stage, DS, 0.5):
            pass
        with advisory_lock(pg_url, stage + "-other", DS, 0.5):  # another stage: not blocked
            pass
    with advisory_lock(pg_url, stage, DS, 0.5):  # released with the first holder
        pass


def test_stage_lock_uses_the_advisory_lock_when_the_db_is_postgresql(pg_url, settings):
    from recsys.config import load_settings

    pg = load_settings(db_url=pg_url, lock_timeout_seconds=0.5)
    stage = f"lock-test-stage-{os.getpid()}"
    with advisory_lock(pg_url, stage, DS, 1.0), pytest.raises(StageBusyError), stage_lock(pg, stage, DS):
        pass
    assert not (pg.data_dir / ".locks").exists()  # no file lock was taken

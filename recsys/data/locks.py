"""One run at a time per (stage, day): a lock around every stage, and the clean-up it makes safe.

Why: two runs of the same stage on the same day (an Airflow retry racing a manual ``recsys run``, two
schedulers, a backfill) would read and replace the same partitions at once; before this lock, two
concurrent collects failed one of them 3 times in 5, two validates 1 in 3. With it the second run waits
for the first (up to ``Settings.lock_timeout_seconds``, then fails with a message naming the stage, the
day and the lock) and then redoes the day on the first run's outputs: rerunning a day gives the same
partitions, so both runs succeed and leave the same result.

* Local data dir: a :mod:`filelock` lock file ``<data_dir>/.locks/<stage>-<ds>.lock`` (an OS lock:
  released when the process dies, even by ``kill -9``).
* ``db_url`` on PostgreSQL (workers on several machines): a session-level advisory lock
  (``pg_try_advisory_lock``) keyed by a hash of the stage and day, released when the session ends.

Holding the lock of a (stage, day) also makes it safe to remove the temporary files that dead runs left
in that day's partitions (:func:`recsys.data.lake.clean_orphans`).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from recsys.errors import RecsysError

POLL_SECONDS = 0.2


class StageBusyError(RecsysError, TimeoutError):
    """Another run of the same stage and day holds the lock for longer than the timeout."""


def lock_path(data_dir: Path, stage: str, ds: date) -> Path:
    return Path(data_dir) / ".locks" / f"{stage}-{ds.isoformat()}.lock"


def advisory_key(stage: str, ds: date) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` from the stage and day (stable across processes)."""
    digest = hashlib.blake2b(f"recsys:{stage}:{ds.isoformat()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _busy(stage: str, ds: date, where: str, timeout: float) -> StageBusyError:
    return StageBusyError(
        f"stage {stage} for ds={ds} is already running (lock {where} held for more than {timeout:g}s); "
        "wait for that run to finish, or raise RECSYS_LOCK_TIMEOUT_SECONDS"
    )


@contextlib.contextmanager
def file_lock(data_dir: Path, stage: str, ds: date, timeout: float) -> Iterator[Path]:
    from filelock import FileLock, Timeout

    path = lock_path(data_dir, stage, ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=timeout, is_singleton=False)
    try:
        lock.acquire(poll_interval=POLL_SECONDS)
    except Timeout:
        raise _busy(stage, ds, str(path), timeout) from None
    try:
        yield path
    finally:
        lock.release()


@contextlib.contextmanager
def advisory_lock(db_url: str, stage: str, ds: date, timeout: float) -> Iterator[int]:
    import sqlalchemy as sa

    key = advisory_key(stage, ds)
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + timeout
            while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.rollback()  # no transaction left open while waiting
                if time.monotonic() >= deadline:
                    raise _busy(stage, ds, f"pg_advisory_lock({key})", timeout)
                time.sleep(POLL_SECONDS)
            conn.commit()
            try:
                yield key
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


@contextlib.contextmanager
def stage_lock(settings, stage: str, ds: date) -> Iterator[None]:
    """Hold the (stage, ds) lock for the body, and clean the day's orphan temp files once it is held."""
    from recsys.data.lake import clean_orphans

    timeout = float(settings.lock_timeout_seconds)
    url = settings.db_url or ""
    if url.startswith(("postgresql", "postgres://")):
        lock = advisory_lock(url, stage, ds, timeout)
    else:
        lock = file_lock(settings.data_dir, stage, ds, timeout)
    with lock:
        clean_orphans(settings.data_dir, ds)
        yield

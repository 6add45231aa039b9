"""Issue 15 (Dask for the data plane): with a Dask scheduler the anonymize stage minimizes its chunks on
the cluster's worker processes; the clean partition is the one a single process writes."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from hostile import DS, event, jsonl, land

from recsys.privacy.anonymize import anonymize_day
from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym


@pytest.fixture(scope="module")
def client():
    """2 worker processes, 1 thread each (the LocalCluster dask_client starts by default)."""
    from recsys.config import Settings
    from recsys.scale import dask_client

    with dask_client(Settings(dask_scheduler=None), processes=True, n_workers=2) as c:
        yield c


def _prepared(settings):
    from recsys import stages

    rows = [event(i, region=["EU-DE-BE", None, "US-CA-SF"][i % 3]) for i in range(60)]
    land(settings.data_dir, jsonl(rows))
    stages.collect(DS, settings)
    stages.validate(DS, settings)
    return stages.open_lake(settings), load_pseudonym_key(settings)


def _clean(lake) -> dict[str, pd.DataFrame]:
    return {d: lake.read_frame("clean", d, DS) for d in ("interactions", "users", "videos")}


def test_anonymize_on_two_dask_workers_writes_the_one_process_partition(settings, client):
    from distributed import get_task_stream

    from recsys.scale import map_in_order

    lake, key = _prepared(settings)
    erased = {pseudonym("u0001", key, domain="user")}
    one = anonymize_day(lake, DS, key, erased, chunk_rows=7)
    expected = _clean(lake)
    with get_task_stream(client) as stream:
        on_dask = anonymize_day(
            lake, DS, key, erased, chunk_rows=7, map_chunks=lambda fn, xs: map_in_order(client, fn, xs)
        )
    assert on_dask == one
    for name, frame in _clean(lake).items():
        pd.testing.assert_frame_equal(frame, expected[name], check_exact=True)
    assert 0 < len(expected["interactions"]) < 60  # the erased user's rows left out, on the workers too
    ran = [t for t in stream.data if t["key"].startswith("minimized")]
    assert len(ran) == -(-60 // 7)  # every chunk was a task on the cluster (9 chunks of 7 rows)
    assert {t["worker"] for t in ran} <= set(client.scheduler_info()["workers"])


def test_the_stage_uses_the_configured_scheduler(settings, client):
    from distributed import get_task_stream

    from recsys import stages

    lake, _ = _prepared(settings)
    stages.anonymize(DS, settings)  # no scheduler: one process
    expected = _clean(lake)
    on_cluster = settings.model_copy(update={"dask_scheduler": client.scheduler.address})
    with get_task_stream(client) as stream:
        stages.anonymize(DS, on_cluster)
    for name, frame in _clean(lake).items():
        pd.testing.assert_frame_equal(frame, expected[name], check_exact=True)
    assert [t for t in stream.data if t["key"].startswith("minimized")]  # it ran on that scheduler


def _slow_square(x):
    time.sleep(0.3 if x == 0 else 0.0)  # the first item finishes last
    return x * x


def _fail_on_three(x):
    if x == 3:
        raise ValueError("chunk 3 is bad")
    return x


def test_map_in_order_keeps_the_items_order_and_raises_a_worker_error(client):
    from recsys.scale import map_in_order

    assert list(map_in_order(client, _slow_square, iter(range(6)), in_flight=3)) == [0, 1, 4, 9, 16, 25]
    got = []
    with pytest.raises(ValueError, match="chunk 3 is bad"):
        for x in map_in_order(client, _fail_on_three, iter(range(8)), in_flight=2):
            got.append(x)
    assert got == [0, 1, 2]

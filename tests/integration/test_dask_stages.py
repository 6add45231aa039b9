"""Issue 15 (Dask for the data plane): with a Dask scheduler the collect stage parses its chunks and the
anonymize stage minimizes its chunks on the cluster's worker processes; the raw and clean partitions are
the ones a single process writes."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from hostile import DS, event, hostile_day, jsonl, land

from recsys.privacy.anonymize import anonymize_day
from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym


@pytest.fixture(scope="module")
def security():
    """Temporary TLS certificates (in memory): anonymize sends raw rows only over tls://."""
    from distributed.security import Security

    return Security.temporary()


@pytest.fixture(scope="module")
def client(security):
    """A TLS LocalCluster of 2 worker processes, 1 thread each, no spilling (as dask_client's)."""
    import dask
    from distributed import Client, LocalCluster

    no_spill = {"distributed.worker.memory.spill": False, "distributed.worker.memory.target": False}
    with dask.config.set(no_spill):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, security=security
        )
    with cluster, Client(cluster) as c:
        assert c.scheduler.address.startswith("tls://")
        yield c


@pytest.fixture
def tls_config(security):
    """What a stage's own Client needs to reach the TLS scheduler (the distributed.comm.tls settings)."""
    import dask

    with dask.config.set(
        {
            "distributed.comm.require-encryption": True,
            "distributed.comm.tls.ca-file": security.tls_ca_file,
            "distributed.comm.tls.client.cert": security.tls_client_cert,
            "distributed.comm.tls.client.key": security.tls_client_key,
        }
    ):
        yield


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
    ran = [t for t in stream.data if t["key"].startswith("minimized_chunk")]
    assert len(ran) == -(-60 // 7)  # every chunk was a task on the cluster (9 chunks of 7 rows)
    assert {t["worker"] for t in ran} <= set(client.scheduler_info()["workers"])


def test_the_stage_uses_the_configured_scheduler(settings, client, tls_config):
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
    assert [t for t in stream.data if t["key"].startswith("minimized_chunk")]  # it ran on that scheduler


def test_a_plain_tcp_scheduler_never_gets_raw_rows(settings, caplog):
    from distributed import Client, LocalCluster, get_task_stream

    from recsys import stages

    lake, _ = _prepared(settings)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as plain,
        Client(plain) as c,
        get_task_stream(c) as stream,
    ):
        assert plain.scheduler_address.startswith(("tcp://", "inproc://"))
        stages.anonymize(DS, settings.model_copy(update={"dask_scheduler": plain.scheduler_address}))
    assert not stream.data  # nothing was sent to it: the stage ran in its own process
    assert "is not tls://" in caplog.text
    assert len(lake.read_frame("clean", "interactions", DS)) == 60


def test_a_chunk_failing_on_a_worker_leaves_no_raw_value_in_the_error_or_the_worker_logs(settings, client):
    from recsys.privacy.anonymize import ChunkError
    from recsys.scale import map_in_order

    lake, _ = _prepared(settings)
    with pytest.raises(ChunkError, match="message withheld"):  # no key: the HMAC fails on the worker
        anonymize_day(lake, DS, None, frozenset(), 7, map_chunks=lambda fn, xs: map_in_order(client, fn, xs))
    logs = str(client.get_worker_logs()) + str(client.get_scheduler_logs())
    assert "RawChunk" in logs or "minimized_chunk" in logs  # the failure was logged, ...
    assert "@example.org" not in logs and "10.0.0.1" not in logs  # ... without a raw value


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


def test_map_in_order_refuses_a_scheduler_without_workers():
    from distributed import Client, LocalCluster

    from recsys.scale import map_in_order

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as empty,
        Client(empty) as c,
        pytest.raises(RuntimeError, match="has no workers"),
    ):
        next(map_in_order(c, _slow_square, iter(range(3))))


# ------------------------------------------------------------------------------------------------ collect
RAW = ("events", "events_malformed", "videos", "users")


def _collected(settings, data: bytes, map_chunks=None) -> tuple[dict, dict[str, pd.DataFrame]]:
    from recsys import stages
    from recsys.data import collect

    land(settings.data_dir, data)
    lake = stages.open_lake(settings)
    kw = {} if map_chunks is None else {"map_chunks": map_chunks}
    summary = collect.collect_day(lake, DS, 7, **kw)
    return summary, {d: lake.read_frame("raw", d, DS) for d in RAW}


def test_collect_on_two_dask_workers_writes_the_one_process_partition(settings, client):
    """The hostile day (malformed lines of every rule, a key first seen late: a second pass) parsed in
    chunks of 7 lines on the workers gives the frames one process gives, and every chunk ran there."""
    from distributed import get_task_stream

    from recsys.scale import map_in_order

    data = hostile_day()
    one_summary, one = _collected(settings, data)
    with get_task_stream(client) as stream:
        summary, frames = _collected(settings, data, lambda fn, xs: map_in_order(client, fn, xs))
    assert summary == one_summary and summary["malformed_rows"] > 3
    for name, frame in one.items():
        pd.testing.assert_frame_equal(frames[name], frame, check_exact=True)
    assert "late_key" in frames["events"].columns  # the second pass (a late key) ran on the workers too
    ran = [t for t in stream.data if t["key"].startswith("parsed_chunk")]
    lines = len([line for line in data.split(b"\n") if line.strip()])
    assert len(ran) > 2 * (lines // 7)  # both passes, every chunk a task on the cluster
    assert {t["worker"] for t in ran} <= set(client.scheduler_info()["workers"])


def test_the_collect_stage_uses_the_configured_tls_scheduler(settings, client, tls_config):
    from distributed import get_task_stream

    from recsys import stages

    rows = [event(i) for i in range(40)]
    land(settings.data_dir, jsonl(rows))
    stages.collect(DS, settings)  # no scheduler: one process
    lake = stages.open_lake(settings)
    expected = {d: lake.read_frame("raw", d, DS) for d in RAW}
    land(settings.data_dir, jsonl(rows))
    with get_task_stream(client) as stream:
        stages.collect(DS, settings.model_copy(update={"dask_scheduler": client.scheduler.address}))
    assert [t for t in stream.data if t["key"].startswith("parsed_chunk")]  # it ran on that scheduler
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(lake.read_frame("raw", name, DS), frame, check_exact=True)


def test_a_plain_tcp_scheduler_never_gets_raw_lines(settings, caplog):
    from distributed import Client, LocalCluster, get_task_stream

    from recsys import stages

    rows = [event(i) for i in range(40)]
    land(settings.data_dir, jsonl(rows))
    stages.collect(DS, settings)  # no scheduler: one process
    lake = stages.open_lake(settings)
    expected = lake.read_frame("raw", "events", DS)
    land(settings.data_dir, jsonl(rows))
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as plain,
        Client(plain) as c,
        get_task_stream(c) as plain_stream,
    ):
        stages.collect(DS, settings.model_copy(update={"dask_scheduler": plain.scheduler_address}))
    assert not plain_stream.data  # raw lines never go to a plain tcp scheduler
    assert "collect runs in this process" in caplog.text
    pd.testing.assert_frame_equal(lake.read_frame("raw", "events", DS), expected, check_exact=True)


def test_a_collect_chunk_failing_on_a_worker_leaves_no_raw_value_in_the_error_or_the_logs(client):
    from recsys.data.collect import ChunkError, LineChunk, parsed_chunk

    secret = "who@example.org"
    bad = LineChunk([(1, secret)], "part-0.jsonl")  # text, not bytes: parsing fails on the worker
    assert secret not in repr(bad)
    with pytest.raises(ChunkError, match="message withheld") as err:
        client.submit(parsed_chunk, bad, pure=False).result()
    assert secret not in str(err.value)
    logs = str(client.get_worker_logs()) + str(client.get_scheduler_logs())
    assert secret not in logs

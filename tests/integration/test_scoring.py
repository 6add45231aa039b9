"""Scoring paths agree: real time vs batch, one process vs Dask shards, and the fast encoder vs the transform.

An untrained, seeded multi-task model of the default size on a transform fitted to a small synthetic world
(no MLflow: the ranker is built in the test, or saved to a folder that Dask workers load once each).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.serving.rank import PairInputs, encode_frame, predict_tasks, rank_candidates, scoring_frame
from recsys.serving.synthetic import AT, candidates_for, make_ranker, make_world, save_ranker

DS = date(2026, 1, 1)  # serving_time(DS) == synthetic.AT


@pytest.fixture(scope="module")
def world():
    return make_world(n_users=120, n_videos=250, n_examples=4000, seed=3)


@pytest.fixture(scope="module")
def ranker(world):
    return make_ranker(world, seed=5)


def test_pair_encoder_gives_the_transform_s_arrays(world, ranker):
    keys = world.users["user_key"].tolist() + ["stranger"]  # an unknown user too
    cands = candidates_for(world, keys, 60)
    cands["stranger"] = cands["stranger"] + [99_999]  # an unknown video
    frame = scoring_frame(keys, cands, world.users, world.videos, AT)
    direct = encode_frame(ranker.transform, frame)
    fast = PairInputs.from_frame(ranker.transform, frame).full()
    assert set(direct) == set(fast)
    for k in direct:
        assert direct[k].dtype == fast[k].dtype and np.array_equal(direct[k], fast[k]), k


def test_batch_scores_equal_the_registry_ranker_s(world, ranker):
    keys = world.users["user_key"].tolist()[:40]
    frame = scoring_frame(keys, candidates_for(world, keys, 50), world.users, world.videos, AT)
    fast = predict_tasks(ranker, frame, batch_size=333)
    ref = ranker.predict_tasks(frame)  # Ranker.predict_tasks: transform.apply + model.predict
    for task in ref:
        np.testing.assert_allclose(fast[task], ref[task], rtol=1e-5, atol=1e-6)


def write_day(settings, world, user_ids):
    """A lake with the world's users (pseudonymized), videos and one day of clicks."""
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.stages import open_lake

    key = load_pseudonym_key(settings)
    to_key = {f"u{i:06d}": pseudonym(u, key) for i, u in enumerate(user_ids)}
    users = world.users.assign(user_key=world.users["user_key"].map(to_key))
    rng = np.random.default_rng(0)
    vids = world.videos["video_id"].to_numpy()
    inter = pd.DataFrame(
        {
            "user_key": np.repeat(users["user_key"].to_numpy(), 3),
            "session_key": np.repeat([f"s{i}" for i in range(len(users))], 3),
            "video_id": rng.choice(vids, 3 * len(users)).astype("int64"),
            "clicked": rng.integers(0, 2, 3 * len(users)),
        }
    )
    inter["ts"] = pd.Timestamp(DS, tz="UTC") + pd.Timedelta(hours=9)
    lake = open_lake(settings)
    lake.write_frame("clean", "users", DS, users)
    lake.write_frame("clean", "videos", DS, world.videos)
    lake.write_frame("clean", "interactions", DS, inter)
    return lake, users, to_key


def test_real_time_scores_equal_the_batch_path(settings, world, ranker, monkeypatch):
    import recsys.serving as serving

    ids = [f"person-{i}" for i in range(len(world.users))]
    lake, users, to_key = write_day(settings, world, ids)
    monkeypatch.setattr(serving, "_champion", lambda s: ranker)
    keys = users["user_key"].tolist()
    cands = candidates_for(world, keys, 80, seed=9)
    batch = rank_candidates(
        ranker,
        scoring_frame(keys, cands, users, world.videos, AT),
        n=80,
        max_per_author=80,
        max_per_category=None,
    )
    for i in (0, 17, len(ids) - 1):
        key = to_key[f"u{i:06d}"]
        rt = serving.recommend_videos(ids[i], cands[key], n=80, ds=DS, settings=settings)
        mine = batch[batch["user_key"] == key]
        assert rt["video_id"].tolist() == mine["video_id"].tolist()
        assert rt["rank"].tolist() == list(range(1, 81))
        np.testing.assert_allclose(rt["score"].to_numpy(), mine["score"].to_numpy(), rtol=1e-6, atol=1e-7)
    # an unknown user is scored too (unknown-user embedding), for the candidates given
    rt = serving.recommend_videos("never-seen", [1, 2, 3], n=2, ds=DS, settings=settings)
    assert len(rt) == 2 and set(rt["video_id"]) <= {1, 2, 3}


@pytest.fixture(scope="module")
def ranker_dir(ranker, tmp_path_factory):
    return save_ranker(ranker, tmp_path_factory.mktemp("ranker"))


@pytest.fixture(scope="module")
def client():
    """2 worker processes, 1 thread each (the LocalCluster dask_client starts by default)."""
    from recsys.config import Settings
    from recsys.scale import dask_client

    with dask_client(Settings(dask_scheduler=None), processes=True, n_workers=2) as c:
        yield c


@pytest.mark.slow
def test_dask_shards_equal_one_process(world, ranker_dir, client):
    import recsys.scale as scale
    from recsys.registry import load_ranker_dir

    keys = world.users["user_key"].tolist()
    cands = candidates_for(world, keys, 100, seed=4)
    frame = scoring_frame(keys, cands, world.users, world.videos, AT)
    one = rank_candidates(load_ranker_dir(ranker_dir), frame, 10, 3, 4)
    ref = scale.RankerRef.from_dir(ranker_dir)
    sharded = scale.rank_on_dask(
        client, ref, keys, cands, world.users, world.videos, AT, 10, 3, 4, users_per_shard=17
    )  # 8 shards over 2 workers
    assert sharded[["user_key", "rank", "video_id"]].equals(one[["user_key", "rank", "video_id"]])
    np.testing.assert_allclose(sharded["score"].to_numpy(), one["score"].to_numpy(), rtol=1e-6, atol=1e-7)
    loads = client.run(lambda: len(__import__("recsys.scale", fromlist=["LOADS"]).LOADS))
    assert sorted(loads.values()) == [1, 1] or max(loads.values()) == 1  # each worker loaded it once


@pytest.mark.slow
def test_parallel_batch_recommendations_equal_single_process(
    settings, world, ranker, ranker_dir, client, monkeypatch
):
    import recsys.registry as registry
    import recsys.scale as scale
    from recsys.serving import batch_recommendations, parallel_recommendations

    ids = [f"person-{i}" for i in range(len(world.users))]
    lake, users, to_key = write_day(settings, world, ids)
    monkeypatch.setattr(registry, "load_ranker", lambda s, alias="champion": ranker)
    monkeypatch.setattr(
        scale.RankerRef, "from_registry", classmethod(lambda cls, s, v: cls.from_dir(ranker_dir, version=v))
    )
    serving_settings = settings.serving.model_copy(update={"users_per_shard": 25})
    settings = settings.model_copy(update={"serving": serving_settings})
    one, info1 = batch_recommendations(lake, DS, settings, parallel=False)
    many, info2 = batch_recommendations(lake, DS, settings, parallel=True, client=client)
    assert info2["parallel"] and not info1["parallel"] and info1["users"] == len(ids)
    cols = ["user_key", "rank", "video_id", "model_version"]
    assert many[cols].equals(one[cols])
    np.testing.assert_allclose(many["score"].to_numpy(), one["score"].to_numpy(), rtol=1e-6, atol=1e-7)
    got = parallel_recommendations(ids[:5], settings, client=client, ds=DS)
    wanted = {to_key[f"u{i:06d}"] for i in range(5)}
    assert wanted <= set(got["user_key"])
    sub = one[one["user_key"].isin(wanted)].reset_index(drop=True)
    assert got[got["user_key"].isin(wanted)].reset_index(drop=True)[cols].equals(sub[cols])


def test_dask_client_uses_the_configured_scheduler():
    from distributed import LocalCluster

    from recsys.config import Settings
    from recsys.scale import dask_client, shards

    assert shards(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        dask_client(Settings(dask_scheduler=cluster.scheduler_address)) as c,
    ):
        assert c.scheduler.address == cluster.scheduler_address
        assert c.submit(sum, [1, 2]).result() == 3


def test_rank_pairs_equals_rank_candidates_over_the_scoring_frame(world, ranker):
    from recsys.serving.rank import rank_pairs

    keys = world.users["user_key"].tolist()[::-1] + ["stranger"]  # not sorted, and an unknown user
    cands = candidates_for(world, keys, 70, seed=11)
    cands["stranger"] = cands["stranger"] + [99_999]  # an unknown video
    cands[keys[3]] = []  # a user without candidates
    frame = scoring_frame(keys, cands, world.users, world.videos, AT)
    for caps in ((10, 2, 3), (10, 3, None), (70, 70, None)):
        a = rank_candidates(ranker, frame, *caps)
        b = rank_pairs(ranker, keys, cands, world.users, world.videos, AT, *caps, batch_size=999)
        assert a[["user_key", "rank", "video_id"]].equals(b[["user_key", "rank", "video_id"]])
        np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), rtol=1e-6, atol=1e-7)
    assert rank_pairs(ranker, [], {}, world.users, world.videos, AT, 10, 3).empty


@pytest.mark.parametrize("lake_at", ["folder", "url"])
def test_recommend_in_user_shards_gives_the_same_partition(settings, world, ranker, monkeypatch, lake_at):
    """Lists computed a shard of users at a time (1, 7 or all users per shard; with the champion and with
    the candidate-order fallback) are the same rows; the recommend stage writes them shard by shard as one
    partition (on the local lake and on a lake at a URL), publish loads exactly those rows by row groups,
    and a shard that fails leaves the previous partition whole and nothing staged."""
    import recsys.registry as registry
    import recsys.serving as serving
    from recsys import stages
    from recsys.serving import batch_recommendations
    from recsys.serving.publish import engine_for, read_live

    if lake_at == "url":
        settings = settings.model_copy(update={"lake_url": (settings.data_dir / "objects").as_uri()})
    ids = [f"person-{i}" for i in range(len(world.users))]
    lake, _, _ = write_day(settings, world, ids)
    monkeypatch.setattr(registry, "load_ranker", lambda s, alias="champion": ranker)
    whole, info = batch_recommendations(lake, DS, settings, users_per_shard=len(ids))
    assert info["users"] == len(ids) and len(whole) > len(ids)
    for size in (1, 7):
        got, got_info = batch_recommendations(lake, DS, settings, users_per_shard=size)
        pd.testing.assert_frame_equal(got, whole, check_exact=True)
        assert got_info == info

    small = settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"users_per_shard": 7})}
    )
    out = stages.recommend(DS, small)
    assert out["recs_rows"] == len(whole) and out["users"] == len(ids)
    pd.testing.assert_frame_equal(lake.read_frame("recs", "lists", DS), whole, check_exact=True)
    pub = stages.publish(DS, small)
    live = read_live(engine_for(small.resolved_db_url))
    assert pub["rows"] == len(whole) and pub["users"] == len(ids) + 1
    want = whole.sort_values(["user_key", "rank"]).reset_index(drop=True)
    cols = ["user_key", "rank", "video_id", "score", "model_version"]
    pd.testing.assert_frame_equal(live[cols], want[cols], check_dtype=False, check_exact=True)

    real, calls = serving.rank_pairs, []

    def fails_on_the_third_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("lost the shard")
        return real(*args, **kwargs)

    monkeypatch.setattr(serving, "rank_pairs", fails_on_the_third_shard)
    with pytest.raises(RuntimeError, match="lost the shard"):
        stages.recommend(DS, small)
    pd.testing.assert_frame_equal(lake.read_frame("recs", "lists", DS), whole, check_exact=True)
    if lake_at == "folder":
        assert [p.name for p in lake.partition("recs", "lists", DS).iterdir()] == ["part-0.parquet"]
    staged = [p for p in settings.data_dir.rglob("*") if ".tmp-" in p.name]
    assert staged == []

    def no_champion(s, alias="champion"):
        raise registry.NoChampionError("none yet")

    monkeypatch.setattr(registry, "load_ranker", no_champion)
    order, _ = batch_recommendations(lake, DS, settings, users_per_shard=len(ids))
    assert (order["model_version"] == serving.BASELINE_VERSION).all()
    pd.testing.assert_frame_equal(
        batch_recommendations(lake, DS, settings, users_per_shard=7)[0], order, check_exact=True
    )

"""Serving: candidates, ranking, publishing, and reading recommendations.

Public entry points (the seed's names): :func:`recommend_videos` scores given candidates for one user in
real time; :func:`parallel_recommendations` computes lists for many users on Dask;
:func:`get_recommendations` reads a user's published list (what an app does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta

import numpy as np
import pandas as pd

from recsys.config import Settings, load_settings
from recsys.serving.rank import rank_candidates, rank_pairs, scoring_frame, serving_time, top_n

log = logging.getLogger(__name__)
BASELINE_VERSION = "baseline-popularity"

__all__ = [
    "batch_recommendations",
    "get_recommendations",
    "parallel_recommendations",
    "recommend_videos",
    "recommendation_shards",
    "score_for_user",
]

HISTORY_DAYS = 7
CLICK_COLUMNS = ["user_key", "session_key", "video_id", "clicked", "ts"]  # what the candidate pools read
READ_CHUNK_ROWS = 200_000  # rows of a day's interactions read at a time
SHARDS_PER_DASK_BLOCK = 8  # Dask: shards of users_per_shard scored concurrently per block of users


def _context(lake, ds: date, settings: Settings):
    """(the clicked rows of the history window, videos, users). The rule pools, the two-tower pool and
    the fallback read only clicks, so each day is cut to its clicked rows as it is read."""
    start = ds - timedelta(days=HISTORY_DAYS - 1)
    frames = []
    for d in lake.list_ds("clean", "interactions"):
        if start <= d <= ds and lake.has_frame("clean", "interactions", d):
            # a chunk of rows at a time: the clicks are a few percent of a day's impressions (10M a day)
            with lake.open_frame("clean", "interactions", d) as reader:
                for f in reader.frame_batches(READ_CHUNK_ROWS, columns=CLICK_COLUMNS):
                    frames.append(f[f["clicked"] == 1])
                reader.verify()
    if not frames:
        raise FileNotFoundError(f"no clean/interactions partitions between {start} and {ds}")
    history = pd.concat(frames, ignore_index=True)
    videos = lake.read_frame("clean", "videos", ds)
    users = lake.read_frame("clean", "users", ds)
    return history, videos, users


def batch_recommendations(
    lake,
    ds: date,
    settings: Settings,
    user_keys: list[str] | None = None,
    *,
    parallel: bool | None = None,
    client=None,
    ranker=None,
    users_per_shard: int | None = None,
):
    """Top-N lists for every user active on ``ds`` (plus a fallback list for unknown users), in one frame:
    the shards of :func:`recommendation_shards` concatenated. Returns (frame, info)."""
    info: dict = {}
    parts = list(
        recommendation_shards(
            lake,
            ds,
            settings,
            user_keys,
            parallel=parallel,
            client=client,
            ranker=ranker,
            info=info,
            users_per_shard=users_per_shard,
        )
    )
    return pd.concat(parts, ignore_index=True), info


def recommendation_shards(
    lake,
    ds: date,
    settings: Settings,
    user_keys: list[str] | None = None,
    *,
    parallel: bool | None = None,
    client=None,
    ranker=None,
    info: dict | None = None,
    users_per_shard: int | None = None,
) -> Iterator[pd.DataFrame]:
    """The top-N lists of ``ds``, a shard of users at a time: frames of (user_key, rank, video_id, score,
    model_version) in user-key order, the fallback list (``__fallback__``) last.

    Users are ``user_keys`` (default: every user engaged in the active window, and the day's actives),
    sorted and distinct. What all users share is built once (the recent clicks, the catalog's pools, the
    co-visitation table, the model); candidates, the two-tower search, scoring and the diversity rule run
    per shard of ``settings.serving.users_per_shard`` (or ``users_per_shard``) users, so memory follows
    the shard, not the day. A user's list does not depend on the shard it is in (a test checks it).

    ``parallel`` (default ``settings.serving.parallel_scoring``) scores blocks of shards on Dask: on
    ``client`` if given, else on :func:`recsys.scale.dask_client` (the configured scheduler or a
    LocalCluster). ``ranker``: rank with this model instead of the champion (in process only; a
    counterfactual replay). ``info`` (a dict) receives the run's summary once the last frame is out.
    """
    from recsys.registry import NoChampionError, load_ranker
    from recsys.retrieval.pipeline import paired_retrieval, shard_pool
    from recsys.serving.candidates import CandidateGenerator
    from recsys.serving.publish import FALLBACK_KEY

    sv = settings.serving
    parallel = (sv.parallel_scoring if parallel is None else parallel) and ranker is None
    try:
        ranker = ranker or load_ranker(settings)
    except NoChampionError:  # nothing blessed yet: serve the candidate generator's order (popularity-led)
        log.warning("no champion model yet; publishing candidate-order (popularity) lists")
        ranker = None
    history, videos, users = _context(lake, ds, settings)
    if user_keys is None:  # every user engaged in the active window, and the day's actives
        from recsys.serving.active import active_user_keys

        user_keys = active_user_keys(lake, ds, sv.active_window_days)
    user_keys = sorted(set(user_keys))
    at = serving_time(ds)
    version = ranker.version if ranker is not None else BASELINE_VERSION
    gen = CandidateGenerator(
        history,
        videos,
        ds,
        sv.n_candidates,
        fresh_quota=settings.retrieval.fresh_quota,
        users=user_keys,
    )
    fallback = _fallback(history, videos, sv.top_n)
    del history  # the generator keeps the clicks it needs, sorted by user
    # the retrieval paired with the ranker, loaded once; searched per shard with the day's longest history
    bundle = paired_retrieval(settings, getattr(ranker, "version", None))
    seen_max = gen.clicks_max(user_keys) if bundle is not None else None
    size = max(1, int(users_per_shard or sv.users_per_shard))
    dask = None
    if ranker is not None and parallel:
        from recsys.scale import RankerRef, dask_client

        ref = RankerRef.from_registry(settings, ranker.version)
        if client is None:
            cm = dask_client(settings)
            client = cm.__enter__()
            dask = cm
        size *= SHARDS_PER_DASK_BLOCK
    n_cands, tt_users = 0, 0
    try:
        for lo in range(0, len(user_keys), size):
            keys = user_keys[lo : lo + size]
            pool = None
            if bundle is not None:
                pool = shard_pool(
                    bundle, settings, version, keys, gen.user_clicks(keys), videos, users, at, seen_max
                )
            cands = gen.for_users(keys, retrieved=pool)
            n_cands += int(cands.sizes().sum())
            tt_users += 0 if pool is None else len(pool.user_keys)
            if ranker is not None and parallel:
                from recsys.scale import rank_on_dask

                recs = rank_on_dask(
                    client,
                    ref,
                    keys,
                    cands,
                    users,
                    videos,
                    at,
                    sv.top_n,
                    sv.max_per_author,
                    sv.max_per_category,
                    sv.users_per_shard if users_per_shard is None else users_per_shard,
                )
            elif ranker is not None:
                recs = rank_pairs(
                    ranker, keys, cands, users, videos, at, sv.top_n, sv.max_per_author, sv.max_per_category
                )
            else:
                frame = scoring_frame(keys, cands, users, videos, at)
                order = -frame.groupby("user_key").cumcount().to_numpy(float)
                recs = top_n(frame, order, sv.top_n, sv.max_per_author, sv.max_per_category)
            yield _with_version(recs, version)
    finally:
        if dask is not None:
            dask.__exit__(None, None, None)
    yield _with_version(fallback.assign(user_key=FALLBACK_KEY), version)
    if info is not None:
        info.update(
            {
                "model_version": version,
                "users": len(user_keys),
                "mean_candidates": float(n_cands / len(user_keys)) if user_keys else 0.0,
                "parallel": bool(parallel and ranker is not None),
                "two_tower_users": tt_users,
            }
        )


def _with_version(recs: pd.DataFrame, version: str) -> pd.DataFrame:
    """A shard's rows in the recs zone's columns and dtypes (the same for every shard and the fallback)."""
    return pd.DataFrame(
        {
            "user_key": recs["user_key"].astype(str).to_numpy(object),
            "rank": recs["rank"].to_numpy(np.int64),
            "video_id": recs["video_id"].to_numpy(np.int64),
            "score": recs["score"].to_numpy(np.float64),
            "model_version": np.full(len(recs), version, dtype=object),
        }
    ).astype({"user_key": "str", "model_version": "str"})


def _fallback(history: pd.DataFrame, videos: pd.DataFrame, n: int) -> pd.DataFrame:
    """Most clicked visible videos of the recent window: what a cold or unknown user gets."""
    vis = set(videos.loc[videos["visible"].astype(bool), "video_id"].astype(int))
    clicks = history[history["clicked"] == 1]
    counts = clicks.groupby(clicks["video_id"].astype(int)).size()
    counts = counts[counts.index.isin(vis)].sort_values(ascending=False, kind="stable")
    clicked = set(counts.index)
    top = list(counts.index[:n]) + [v for v in sorted(vis) if v not in clicked][: max(0, n - len(counts))]
    return pd.DataFrame(
        {"rank": range(1, len(top) + 1), "video_id": top, "score": [float(counts.get(v, 0)) for v in top]}
    )


_CHAMPIONS: dict = {}
_CHAMPION_LOCK = threading.Lock()
CHAMPION_TTL_SECONDS = 60.0


def _champion(settings: Settings):
    """The champion ranker, loaded once per process and reloaded when the alias has moved (checked at most
    every ``CHAMPION_TTL_SECONDS``)."""
    from recsys.registry import champion_version
    from recsys.scale import RankerRef, worker_ranker

    key = (settings.resolved_tracking_uri, settings.model_name)
    now = time.monotonic()
    with _CHAMPION_LOCK:
        hit = _CHAMPIONS.get(key)
        if hit is not None and now - hit[0] < CHAMPION_TTL_SECONDS:
            return hit[1]
    version = champion_version(settings)
    if version is None:
        from recsys.registry import NoChampionError

        raise NoChampionError(f"no model {settings.model_name!r} with alias 'champion'")
    ranker = worker_ranker(RankerRef.from_registry(settings, version))
    with _CHAMPION_LOCK:
        _CHAMPIONS[key] = (now, ranker)
    return ranker


def score_for_user(
    ranker,
    user_key: str,
    candidate_videos: list[int],
    users: pd.DataFrame,
    videos: pd.DataFrame,
    at: pd.Timestamp,
    n: int = 10,
) -> pd.DataFrame:
    """Real-time scoring core: ``candidate_videos`` of one (pseudonymized) user, encoded row by row with
    the ranker's transform and scored in one model call; the top ``n`` by score (no diversity rule)."""
    frame = scoring_frame([user_key], {user_key: [int(v) for v in candidate_videos]}, users, videos, at)
    recs = rank_candidates(ranker, frame, n, max_per_author=n, max_per_category=None, encoding="frame")
    return recs[["video_id", "score", "rank"]]


def recommend_videos(
    user_id: str,
    candidate_videos: list[int],
    n: int = 10,
    *,
    ds: date | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Real-time scoring: rank ``candidate_videos`` for ``user_id`` with the champion in one batch.

    Uses the saved transform of the champion, so the scores equal the batch path's for the same inputs.
    ``user_id`` is the raw id (an int or a str): it is pseudonymized here with the pipeline's key.

    Args:
        n: how many to return (default 10).
        ds: the day whose user and video attributes are used (default: the latest day of the clean zone).
        settings: default the configured settings (lake, registry, key).

    Returns:
        DataFrame ``video_id``, ``score``, ``rank``: the top ``n`` candidates, best first.
    """
    from recsys.catalog import Catalog
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym

    settings = settings or load_settings()
    lake = Catalog.from_settings(settings).lake
    ds = ds or lake.list_ds("clean", "users")[-1]
    key = pseudonym(str(user_id), load_pseudonym_key(settings))
    users, videos = lake.read_frame("clean", "users", ds), lake.read_frame("clean", "videos", ds)
    return score_for_user(_champion(settings), key, candidate_videos, users, videos, serving_time(ds), n)


def get_recommendations(user_id: str, n: int = 10, settings: Settings | None = None) -> pd.DataFrame:
    """The live list for ``user_id`` (the fallback list for an unknown or cold user)."""
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.serving.publish import FALLBACK_KEY, engine_for, read_live

    settings = settings or load_settings()
    eng = engine_for(settings.resolved_db_url)
    recs = read_live(eng, pseudonym(str(user_id), load_pseudonym_key(settings)), n)
    return recs if not recs.empty else read_live(eng, FALLBACK_KEY, n)


def parallel_recommendations(
    user_ids: list[str], settings: Settings | None = None, *, client=None, ds: date | None = None
) -> pd.DataFrame:
    """Lists for many users at once, scored in user shards on Dask: the publish path's code.

    ``user_ids`` are raw ids (ints or strs), pseudonymized here with the pipeline's key.

    Args:
        settings: default the configured settings (lake, registry, key, Dask scheduler).
        client: a ``distributed.Client``; default :func:`recsys.scale.dask_client` (the configured
            scheduler, or a LocalCluster for the call).
        ds: the day whose history and candidates are used (default: the latest day of the clean zone).

    Returns:
        DataFrame ``user_key``, ``rank``, ``video_id``, ``score``, ``model_version`` (the rows of
        :func:`batch_recommendations`), with the fallback list under ``user_key == "__fallback__"``.
    """
    from recsys.catalog import Catalog
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym

    settings = settings or load_settings()
    lake = Catalog.from_settings(settings).lake
    ds = ds or lake.list_ds("clean", "users")[-1]
    key = load_pseudonym_key(settings)
    recs, _ = batch_recommendations(
        lake, ds, settings, [pseudonym(str(u), key) for u in user_ids], parallel=True, client=client
    )
    return recs

"""Serving: candidates, ranking, publishing, and reading recommendations.

Public entry points (the seed's names): :func:`recommend_videos` scores given candidates for one user in
real time; :func:`parallel_recommendations` computes lists for many users on Dask;
:func:`get_recommendations` reads a user's published list (what an app does).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, timedelta

import pandas as pd

from recsys.config import Settings, load_settings
from recsys.serving.candidates import generate_candidates
from recsys.serving.rank import rank_candidates, rank_pairs, scoring_frame, serving_time, top_n

log = logging.getLogger(__name__)
BASELINE_VERSION = "baseline-popularity"

__all__ = [
    "batch_recommendations",
    "get_recommendations",
    "parallel_recommendations",
    "recommend_videos",
    "score_for_user",
]

HISTORY_DAYS = 7


def _context(lake, ds: date, settings: Settings):
    start = ds - timedelta(days=HISTORY_DAYS - 1)
    history = lake.read_window("clean", "interactions", start, ds)
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
):
    """Top-N lists for every user active on ``ds`` (plus a fallback list for unknown users).

    ``parallel`` (default ``settings.serving.parallel_scoring``) scores user shards on Dask: on ``client``
    if given, else on :func:`recsys.scale.dask_client` (the configured scheduler or a LocalCluster).
    ``ranker``: rank with this model instead of the champion (in process only; a counterfactual replay).
    """
    from recsys.registry import NoChampionError, load_ranker
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
    at = serving_time(ds)
    from recsys.retrieval.pipeline import two_tower_pool  # the pool of the retrieval paired with the ranker

    pool = two_tower_pool(settings, getattr(ranker, "version", None), user_keys, history, videos, users, at)
    cands = generate_candidates(
        history,
        videos,
        user_keys,
        ds,
        sv.n_candidates,
        retrieved=pool,
        fresh_quota=settings.retrieval.fresh_quota,
    )
    if ranker is not None and parallel:
        from recsys.scale import RankerRef, dask_client, rank_on_dask

        ref = RankerRef.from_registry(settings, ranker.version)
        args = (
            ref,
            user_keys,
            cands,
            users,
            videos,
            at,
            sv.top_n,
            sv.max_per_author,
            sv.max_per_category,
            sv.users_per_shard,
        )
        if client is not None:
            recs = rank_on_dask(client, *args)
        else:
            with dask_client(settings) as c:
                recs = rank_on_dask(c, *args)
    elif ranker is not None:
        recs = rank_pairs(
            ranker, user_keys, cands, users, videos, at, sv.top_n, sv.max_per_author, sv.max_per_category
        )
    else:
        frame = scoring_frame(user_keys, cands, users, videos, at)
        order = -frame.groupby("user_key").cumcount().to_numpy(float)
        recs = top_n(frame, order, sv.top_n, sv.max_per_author, sv.max_per_category)
    fallback = _fallback(history, videos, sv.top_n)
    recs = pd.concat([recs, fallback.assign(user_key=FALLBACK_KEY)], ignore_index=True)
    version = ranker.version if ranker is not None else BASELINE_VERSION
    recs["model_version"] = version
    sizes = [len(cands.get(u, [])) for u in user_keys]
    return recs, {
        "model_version": version,
        "users": len(user_keys),
        "mean_candidates": float(sum(sizes) / len(sizes)) if sizes else 0.0,
        "parallel": bool(parallel and ranker is not None),
        "two_tower_users": 0 if pool is None else len(pool.user_keys),
    }


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

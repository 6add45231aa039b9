"""Scale-out: scoring in user shards on Dask.

:func:`dask_client` connects to ``settings.dask_scheduler`` when one is set (a distributed cluster) and
otherwise starts a :class:`~distributed.LocalCluster` on this machine (``settings.serving.dask_workers``
worker processes, one thread each) - the same code runs in both; only settings change.

Workers never receive the model: they receive a :class:`RankerRef` (a registry version, or a folder) and
load the ranker once per worker process (:func:`worker_ranker` caches it by reference), then score the
shards they are given. The driver resolves the champion alias *once* to a version number, so every
worker scores with the same model even if the alias moves meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys.config import Settings

log = logging.getLogger(__name__)

_RANKERS: dict = {}
_RANKERS_LOCK = threading.Lock()
LOADS: list = []  # references loaded in this process (one entry per load; tests read it on each worker)


@dataclass(frozen=True)
class RankerRef:
    """Where a worker gets the ranker: ``models:/<name>/<version>`` in a registry, or a local folder."""

    version: str
    model_name: str | None = None
    tracking_uri: str | None = None
    path: str | None = None

    @classmethod
    def from_dir(cls, path: Path | str, version: str = "local") -> RankerRef:
        return cls(version=version, path=str(Path(path).resolve()))

    @classmethod
    def from_registry(cls, settings: Settings, version: str) -> RankerRef:
        return cls(
            version=str(version), model_name=settings.model_name, tracking_uri=settings.resolved_tracking_uri
        )

    def load(self):
        from recsys.registry import load_ranker_dir

        if self.path is not None:
            return load_ranker_dir(Path(self.path), version=self.version)
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        uri = f"models:/{self.model_name}/{self.version}"
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        return load_ranker_dir(local / "artifacts", version=self.version)


def worker_ranker(ref: RankerRef):
    """The ranker behind ``ref``, loaded once per process (a Dask worker, or this process)."""
    with _RANKERS_LOCK:
        ranker = _RANKERS.get(ref)
        if ranker is None:
            ranker = _RANKERS[ref] = ref.load()
            LOADS.append(ref)
            log.info("loaded ranker %s in this worker", ref.version)
        return ranker


@contextlib.contextmanager
def dask_client(settings: Settings, *, processes: bool = True, n_workers: int | None = None) -> Iterator:
    """A ``distributed.Client``: to ``settings.dask_scheduler`` if set, else to a new LocalCluster
    (``n_workers`` or ``settings.serving.dask_workers`` workers, one thread each, processes by default),
    closed on exit."""
    from distributed import Client, LocalCluster

    if settings.dask_scheduler:
        client = Client(settings.dask_scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # raw chunks (the anonymize stage's input) must never be spilled to a worker's disk in the clear
    no_spill = {"distributed.worker.memory.spill": False, "distributed.worker.memory.target": False}
    with dask.config.set(no_spill):
        cluster = LocalCluster(
            n_workers=n_workers or settings.serving.dask_workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def map_in_order(client, fn: Callable, items: Iterable, *, in_flight: int | None = None) -> Iterator:
    """``fn`` over ``items`` on ``client``'s workers, the results yielded in the items' order (so what is
    written from them does not depend on which worker finished first). At most ``in_flight`` items
    (default twice the workers) are submitted and not yet consumed: memory follows the chunk, not the
    day, when ``items`` is a stream of chunks. A failure raises here and cancels what is still pending."""
    from collections import deque

    workers = client.scheduler_info().get("workers", {})
    if not workers:  # submitted tasks would wait forever
        raise RuntimeError(f"the Dask scheduler {client.scheduler.address} has no workers")
    in_flight = in_flight or 2 * len(workers)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(client.submit(fn, item, pure=False))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        if pending:
            client.cancel(list(pending))


def shards(user_keys: list[str], size: int) -> list[list[str]]:
    """``user_keys`` in consecutive shards of at most ``size`` users."""
    size = max(1, int(size))
    return [list(user_keys[i : i + size]) for i in range(0, len(user_keys), size)]


def score_shard(
    ref: RankerRef,
    user_keys: list[str],
    candidates: dict[str, list[int]],
    users: pd.DataFrame,
    videos: pd.DataFrame,
    at: pd.Timestamp,
    n: int,
    max_per_author: int,
    max_per_category: int | None,
) -> pd.DataFrame:
    """The top-N lists of one shard of users (runs on a worker)."""
    from recsys.serving.rank import rank_pairs

    return rank_pairs(
        worker_ranker(ref), user_keys, candidates, users, videos, at, n, max_per_author, max_per_category
    )


def rank_on_dask(
    client,
    ref: RankerRef,
    user_keys: list[str],
    candidates: dict[str, list[int]],
    users: pd.DataFrame,
    videos: pd.DataFrame,
    at: pd.Timestamp,
    n: int,
    max_per_author: int,
    max_per_category: int | None,
    users_per_shard: int = 2000,
) -> pd.DataFrame:
    """Score ``user_keys`` in shards on ``client``'s workers; the same lists as one-process
    :func:`recsys.serving.rank.rank_pairs` (or ``rank_candidates`` over the whole scoring frame), ordered
    by user and rank."""
    from recsys.serving.rank import USER_COLUMNS, VIDEO_COLUMNS

    user_keys = sorted(set(user_keys))
    wanted = {int(v) for u in user_keys for v in candidates.get(u, [])}
    videos = videos[videos["video_id"].astype("int64").isin(wanted)][list(VIDEO_COLUMNS)]
    users = users[users["user_key"].isin(set(user_keys))][list(USER_COLUMNS)]
    users_f, videos_f = client.scatter([users, videos], broadcast=True)
    futures = [
        client.submit(
            score_shard,
            ref,
            shard,
            {u: candidates.get(u, []) for u in shard},
            users_f,
            videos_f,
            at,
            n,
            max_per_author,
            max_per_category,
            pure=False,
        )
        for shard in shards(user_keys, users_per_shard)
    ]
    parts = client.gather(futures)
    if not parts:
        return pd.DataFrame(columns=["user_key", "rank", "video_id", "score"])
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["user_key", "rank"], kind="stable").reset_index(drop=True)

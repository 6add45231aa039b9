"""The pipeline's stages: wiring only, one function per Airflow task, each for the partition of ``ds``.

Each stage reads through the catalog (:mod:`recsys.catalog`), calls the function of its package that does
the work, and writes through the catalog. :func:`recsys.runner.stage` gives every stage the public
signature ``(ds, settings=None, **kwargs) -> dict`` the DAGs call, times it, exports its health and
records the summary it returns as the day's run record (``catalog.runs``). Stages are idempotent for
their day: each replaces its own outputs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import date
from functools import partial

from recsys.catalog import Catalog
from recsys.config import Settings
from recsys.data.lake import Lake
from recsys.runner import catalog_for, stage

log = logging.getLogger(__name__)


def open_lake(settings: Settings) -> Lake:
    """The lake of ``settings`` (raw-identifier zones encrypted with the configured keys)."""
    return Catalog.from_settings(settings).lake


def features_dir(settings: Settings, ds: date):
    return Catalog.from_settings(settings).features_dir(ds)


# --------------------------------------------------------------------------------- ingestion
@stage("simulate")
def simulate(ds: date, cat: Catalog) -> dict:
    """Simulated platform traffic for ``ds`` into landing (the demo's upstream)."""
    if cat.world is None:
        raise ValueError(f"source {cat.settings.source!r} has no simulated world")
    return cat.world.land(ds, cat.lake, cat.db_url)


@stage("land")
def land(ds: date, cat: Catalog) -> dict:
    """Bring the day's raw events into landing: simulate them, import them, or check they were delivered."""
    from recsys.data import importers, ingest

    if cat.world is not None:
        return cat.world.land(ds, cat.lake, cat.db_url)
    if cat.settings.source == "landing":
        return ingest.check_delivered(cat.plain_lake, ds)
    return importers.land(ds, cat.settings, cat.plain_lake)


@contextlib.contextmanager
def raw_chunks_on_dask(settings: Settings, stage_name: str) -> Iterator[Callable | None]:
    """``map_chunks`` for a stage that sends raw values to its chunks (collect, anonymize): the configured
    Dask scheduler's workers when it is ``tls://``, else None (this process). Over a plain ``tcp://``
    scheduler raw rows (and the pseudonym key) would cross the wire in the clear (docs/scaling.md)."""
    scheduler = settings.dask_scheduler
    if not scheduler:
        yield None
        return
    if not scheduler.startswith("tls://"):
        log.warning("%s runs in this process: the Dask scheduler %s is not tls://", stage_name, scheduler)
        yield None
        return
    from recsys.scale import dask_client, map_in_order

    with dask_client(settings) as client:
        yield partial(map_in_order, client)


@stage("collect")
def collect(ds: date, cat: Catalog) -> dict:
    """Landing -> raw zone (encrypted Parquet); the landing files are then encrypted in place."""
    from recsys.data.ingest import collect_day

    with raw_chunks_on_dask(cat.settings, "collect") as map_chunks:  # the chunks parsed there, if set
        return collect_day(cat.lake, ds, cat.settings.collect.chunk_rows, map_chunks)


@stage("validate")
def validate(ds: date, cat: Catalog) -> dict:
    """Great Expectations on the raw day: bad rows to quarantine (with the rule), bad batches fail."""
    from recsys.data.ingest import validate_day
    from recsys.features.partition import HISTORY_SOURCES

    week = [r for d, r in cat.runs.history("validate", ds) if (ds - d).days <= 7]
    volumes = [int(r["input_rows"]) for r in reversed(week)]  # newest first
    if cat.settings.source in HISTORY_SOURCES:
        # a recorded history's daily volume is what its users did that day (MovieLens: 5 to 800 ratings),
        # not a feed's health: no volume-collapse check against it
        volumes = []
    s = cat.settings
    return validate_day(cat.lake, ds, volumes, cat.validation_reports, s.validation, s.features.window_days)


@stage("anonymize")
def anonymize(ds: date, cat: Catalog) -> dict:
    """Valid raw rows -> clean zone: keyed pseudonyms, e-mail and IP dropped, region coarsened."""
    from recsys.privacy.anonymize import anonymize_day
    from recsys.privacy.erasure import erased_keys
    from recsys.privacy.pseudonymize import load_pseudonym_key

    # users who asked to be erased never come back through a new day
    args = (cat.lake, ds, load_pseudonym_key(cat.settings), erased_keys(cat.settings))
    with raw_chunks_on_dask(cat.settings, "anonymize") as map_chunks:  # the chunks minimized there, if set
        return anonymize_day(*args) if map_chunks is None else anonymize_day(*args, map_chunks=map_chunks)


# --------------------------------------------------------------------------------- modelling
@stage("features")
def features(ds: date, cat: Catalog) -> dict:
    """Examples over the trailing window, split by time, transform fitted on the train split only."""
    from recsys.features.partition import build_feature_partition, training_window_days

    s = cat.settings
    return build_feature_partition(cat.lake, ds, s.features, s.seed, training_window_days(s, ds, cat.lake))


@stage("should_train")
def should_train(ds: date, cat: Catalog, force: bool = False) -> dict:
    """Train when forced, when there is no champion yet, or when the training schedule says so."""
    from recsys import train
    from recsys.registry import champion_version

    has_champion = force or champion_version(cat.settings) is not None
    last = cat.runs.last_day("train", before=ds)
    every = cat.settings.train.train_every_days
    return train.should_train(ds, force=force, has_champion=has_champion, last_trained=last, every_days=every)


@stage("train")
def train(ds: date, cat: Catalog, trigger: str = "schedule") -> dict:
    from recsys.train import train_day

    return train_day(cat.settings, ds, cat.features_dir(ds), cat.checkpoints(ds), trigger)


@stage("evaluate")
def evaluate(ds: date, cat: Catalog, run_id: str, model_uri: str | None = None) -> dict:
    """Candidate vs champion vs baselines on the held-out day; the gate's decision with reasons.

    Metrics, tags (ds, trigger, data window, variant, gate.*) and ``evaluation/report.html`` go to the
    candidate's MLflow run; the task log says which threshold failed and by how much.
    """
    from recsys.challenge import challenge

    return challenge(cat.settings, ds, cat.features_dir(ds), run_id, model_uri, world=cat.world)


@stage("register")
def register(ds: date, cat: Catalog, run_id: str, blessed: bool, model_uri: str | None = None) -> dict:
    from recsys.registry import register as reg
    from recsys.retrieval.registry import pairing_tags  # the retrieval champion this ranker goes out with

    return reg(
        cat.settings,
        model_uri or f"runs:/{run_id}/ranker",
        promote=blessed,
        tags={"ds": str(ds), "blessed": str(blessed).lower(), "run_id": run_id, **pairing_tags(cat.settings)},
    )


@stage("train_retrieval")
def train_retrieval(ds: date, cat: Catalog, trigger: str = "schedule") -> dict:
    """Two-tower candidate model: fit on the training split, recall gate, own registry entry."""
    from recsys.retrieval.pipeline import train_retrieval as run

    return run(ds, cat.settings, trigger=trigger)


# --------------------------------------------------------------------------------- serving
@stage("recommend")
def recommend(ds: date, cat: Catalog) -> dict:
    """Candidates for every user active on ``ds``, ranked by the champion, top N -> recs zone.

    Shard by shard of users (``serving.users_per_shard``): each shard's lists are appended as row groups
    to a staged file, committed whole once the last shard (and the fallback list) is written; a failed
    or killed run leaves the previous partition as it was.
    """
    from recsys.serving import recommendation_shards

    info: dict = {}
    with cat.lake.frame_writer("recs", "lists", ds) as out:
        for recs in recommendation_shards(cat.lake, ds, cat.settings, info=info):
            out.write(recs)
    return {"recs_rows": out.rows, **info}


@stage("publish")
def publish(ds: date, cat: Catalog) -> dict:
    """Load the day's lists into the recommendations DB as a new version and switch to it atomically.

    The partition is read a few row groups at a time and inserted in batches in the version's one
    transaction (:func:`recsys.serving.publish.publish`): memory does not grow with the day."""
    from recsys.data.lake import Lake
    from recsys.privacy.access import ensure_app_role
    from recsys.serving.publish import engine_for, publish_day, read_partition

    lake = cat.lake
    if not lake.has_frame("recs", "lists", ds):
        raise FileNotFoundError(f"no recs/lists partition for ds={ds}: run recommend first")
    path = lake.local_dir("recs", "lists", ds) / Lake.frame_file("recs")  # a local copy for a lake at a URL
    active = set(lake.read_frame("clean", "interactions", ds, columns=["user_key"])["user_key"].astype(str))
    engine = engine_for(cat.db_url)
    info = publish_day(engine, read_partition(path), ds, active, cat.settings.serving)
    if engine.dialect.name == "postgresql":  # apps get SELECT on the live view, nothing else
        ensure_app_role(engine, role="recsys_app")
    return info


# --------------------------------------------------------------------------------- monitoring
@stage("monitor")
def monitor(ds: date, cat: Catalog) -> dict:
    """Online metrics of ``ds`` (what users did with the published lists), drift, and the retrain decision."""
    from recsys.monitoring import assess
    from recsys.monitoring.exporter import write_quality_snapshot
    from recsys.monitoring.observe import observe_day
    from recsys.registry import champion_trained_on, champion_version

    day = observe_day(cat, ds)
    history = [r["metrics"] | {"ds": str(d)} for d, r in cat.runs.history("monitor", ds)]
    last, trained = cat.retrain_log.last_before(ds), champion_trained_on(cat.settings)
    a = assess.assess_day(
        day, history, cat.settings.monitoring, ds, last_retrain=last, model_trained_at=trained
    )
    model_version = champion_version(cat.settings) or "none"
    write_quality_snapshot(cat.quality_snapshot, assess.quality_snapshot(ds, model_version, day, a))
    assess.log_assessment(ds, model_version, day, a)
    if a.retrain:
        cat.retrain_log.record(ds, a.reasons, a.window_days)
    return assess.record(day, a, model_version)


__all__ = [
    "anonymize",
    "catalog_for",
    "collect",
    "evaluate",
    "features",
    "features_dir",
    "land",
    "monitor",
    "open_lake",
    "publish",
    "recommend",
    "register",
    "should_train",
    "simulate",
    "train",
    "validate",
]

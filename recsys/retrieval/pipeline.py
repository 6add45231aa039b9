"""The ``train_retrieval`` task: fit the two-tower model on the day's training split, gate it, register it.

Reads what the features stage wrote for ``ds`` (the train/valid/test examples and the fitted transform)
and the day's catalog; trains on the engagements of the training split only; measures candidate
Recall@K (K = 100, 200, 500 and the gate's ``eval_k``) of the test day's engagements for the new model
and for the retrieval champion on the same day; records everything in an MLflow run of its own; registers
the model and promotes it to the retrieval ``champion`` only if recall did not regress.

Also the serving side's entry: :func:`two_tower_pool` gives the candidate generator the pool of the
retrieval version paired with the ranker being served.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pandas as pd

from recsys.config import Settings

log = logging.getLogger(__name__)
RECALL_KS = (100, 200, 500)
COLUMNS = ["event_id", "user_key", "video_id", "author_id", "category", "device", "ts", "title"]
COLUMNS += ["upload_ts", "duration_seconds", "region", "age_band", "activity", "click"]


def _clicks(frame: pd.DataFrame) -> pd.DataFrame:
    c = frame[frame["click"] > 0]
    return c.assign(clicked=1, session_key=c["user_key"].astype(str) + c["ts"].astype(str).str[:13])


def candidate_recall(bundle, history: pd.DataFrame, test: pd.DataFrame, videos, users, ds: date, ks) -> dict:
    """Recall@K of the test day's new engagements by the two-tower pool alone (seen videos removed)."""
    from recsys.retrieval.train import held_out_engagements, recall_at_k, retrieve
    from recsys.serving.candidates import generate_candidates

    hist, held = _clicks(history), held_out_engagements(_clicks(history), _clicks(test))
    keys = sorted(held["user_key"].astype(str).unique())
    at = pd.Timestamp(ds, tz="UTC")
    out = {}
    for k in ks:
        pool = retrieve(bundle, keys, hist, videos, users, at, k)
        cands = generate_candidates(
            hist, videos, keys, ds - timedelta(days=1), k, retrieved=pool, pools=("two_tower",)
        )
        out[f"recall_{k}"] = recall_at_k(cands, held)
    out["held_out_engagements"] = len(held)
    return out


def train_retrieval(ds: date, settings: Settings, trigger: str = "schedule") -> dict:
    """Fit, evaluate against the retrieval champion, log to MLflow, register (promote if the gate passes)."""
    import mlflow

    from recsys.catalog import Catalog
    from recsys.features.transform import Transform
    from recsys.retrieval.registry import (
        load_retrieval,
        log_retrieval,
        register_retrieval,
        retrieval_version,
    )
    from recsys.retrieval.train import fit_retrieval, gate
    from recsys.tracking import configure

    rs = settings.retrieval
    cat = Catalog.from_settings(settings)
    fdir = cat.features_dir(ds)
    train, valid, test = (
        pd.read_parquet(fdir / f"{p}.parquet", columns=COLUMNS) for p in ("train", "valid", "test")
    )
    lake = cat.lake
    videos, users = lake.read_frame("clean", "videos", ds), lake.read_frame("clean", "users", ds)
    transform = Transform.load(fdir / "transform.json")
    index_at = pd.Timestamp(ds, tz="UTC") + pd.Timedelta(days=1)  # the catalog at the end of the day
    bundle, history = fit_retrieval(
        train, videos, transform, rs, seed=settings.seed, index_at=index_at, valid=valid
    )
    ks = sorted({*RECALL_KS, rs.eval_k})
    before_test = pd.concat([train, valid], ignore_index=True)
    metrics = candidate_recall(bundle, before_test, test, videos, users, ds, ks)
    champ_v = retrieval_version(settings)
    champion = None
    if champ_v is not None:
        champion = candidate_recall(
            load_retrieval(settings, champ_v), before_test, test, videos, users, ds, ks
        )
    decision = gate(metrics[f"recall_{rs.eval_k}"], champion and champion[f"recall_{rs.eval_k}"], rs)
    level = logging.INFO if decision["passed"] else logging.WARNING
    log.log(level, "retrieval gate: %s", decision["reason"])

    configure(settings)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name=f"retrieval-{ds}-{trigger}") as run:
        mlflow.set_tags(
            {"ds": str(ds), "trigger": trigger, "model": "retrieval", "gate.passed": decision["passed"]}
        )
        mlflow.log_params({f"retrieval.{k}": v for k, v in rs.model_dump().items()})
        for epoch, loss in enumerate(history.get("loss", [])):
            mlflow.log_metric("train_loss", loss, step=epoch)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        if champion:
            mlflow.log_metrics({f"champion_{k}": float(v) for k, v in champion.items()})
        mlflow.log_metrics(
            {"index_items": len(bundle.index), "train_engagements": int((train["click"] > 0).sum())}
        )
        mlflow.log_param("retrieval.popularity_prior_used", bundle.prior)
        mlflow.log_metrics(  # how the validation days chose it (RECSYS_RETRIEVAL__POPULARITY_PRIOR=auto)
            {f"valid_recall_{rs.eval_k}_prior_{p}": r for p, r in history.get("prior_recall", {}).items()}
        )
        mlflow.set_tag("gate.reason", decision["reason"])
        uri = log_retrieval(bundle, settings)
        run_id = run.info.run_id
    reg = register_retrieval(
        settings, uri, promote=decision["passed"], tags={"ds": str(ds), "run_id": run_id, "trigger": trigger}
    )
    return {
        "run_id": run_id,
        "model_uri": uri,
        **reg,
        "gate": decision,
        "metrics": metrics,
        "champion_metrics": champion,
        "index_items": len(bundle.index),
        "index_backend": bundle.index.backend,
        "popularity_prior": bundle.prior,
    }


def two_tower_pool(settings: Settings, ranker_version: str | None, user_keys, history, videos, users, at):
    """The pool of the retrieval version paired with ``ranker_version``; None (the rule pools serve alone)
    when retrieval is disabled, nothing is paired, or it cannot be loaded. Never raises for a missing
    or empty index: a list is always served."""
    bundle = paired_retrieval(settings, ranker_version)
    if bundle is None:
        return None
    h = history[(history["clicked"] == 1) & history["video_id"].notna()]
    return shard_pool(bundle, settings, ranker_version, user_keys, h, videos, users, at)


def paired_retrieval(settings: Settings, ranker_version: str | None):
    """The retrieval bundle paired with ``ranker_version`` (loaded once for a day's shards), or None when
    retrieval is disabled, nothing is paired, or it cannot be loaded (the rule pools then serve alone)."""
    from recsys.retrieval.registry import paired_retrieval_version

    if not settings.retrieval.enabled or ranker_version is None:
        return None
    try:
        version = paired_retrieval_version(settings, ranker_version)
        if version is None:
            return None
        from recsys.retrieval.registry import load_retrieval

        return load_retrieval(settings, version)
    except Exception as exc:  # candidates must still be served from the rule pools
        log.warning("two-tower pool unavailable (ranker %s): %s; serving the rule pools", ranker_version, exc)
        return None


def shard_pool(
    bundle, settings: Settings, ranker_version, user_keys, clicks, videos, users, at, seen_max=None
):
    """The two-tower pool of ``user_keys`` from their ``clicks`` (clicked rows with a video) with a loaded
    ``bundle``; None if it fails (never raises: the rule pools serve). ``seen_max``: see
    :func:`recsys.retrieval.train.retrieve`."""
    from recsys.retrieval.train import retrieve

    try:
        return retrieve(bundle, user_keys, clicks, videos, users, at, settings.retrieval.k, seen_max=seen_max)
    except Exception as exc:
        log.warning("two-tower pool unavailable (ranker %s): %s; serving the rule pools", ranker_version, exc)
        return None

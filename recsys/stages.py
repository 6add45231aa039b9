"""The pipeline's stages: one function per Airflow task, each reading and writing the partition of ``ds``.

Each stage is idempotent for its day (it replaces its own outputs), returns a small JSON-able summary
(paths, counts, run ids: what XCom carries), and records that summary under
``reports/runs/ds=D/<stage>.json`` so ``recsys summary`` and the demo can report on a run.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import Settings, load_settings
from recsys.data.lake import Lake, as_date, atomic_write_bytes
from recsys.data.locks import stage_lock

log = logging.getLogger(__name__)


def features_dir(settings: Settings, ds: date):
    return Lake(settings.data_dir).partition("features", "examples", ds)


def open_lake(settings: Settings) -> Lake:
    from recsys.privacy.crypto import Cipher

    return Lake(settings.data_dir, Cipher.from_settings(settings))


def stage(name: str):
    """Time the stage, record its summary, and export its health metrics (when a Pushgateway is set)."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(ds: str | date, settings: Settings | None = None, **kwargs) -> dict[str, Any]:
            settings = settings or load_settings()
            ds = as_date(ds)
            t0 = time.monotonic()
            ok = False
            result: dict[str, Any] = {}
            try:
                with stage_lock(settings, name, ds):  # one run per (stage, ds); cleans dead runs' temps
                    result = _json_safe(fn(ds, settings, **kwargs) or {})
                ok = True
                return result
            finally:
                elapsed = time.monotonic() - t0
                _export(name, ds, settings, ok, elapsed, result)
                if ok:
                    result["seconds"] = round(elapsed, 3)
                    path = settings.data_dir / "reports" / "runs" / f"ds={ds}" / f"{name}.json"
                    atomic_write_bytes(path, json.dumps(result, indent=2, default=str).encode())
                    log.info(
                        "stage %s ds=%s done in %.1fs: %s",
                        name,
                        ds,
                        elapsed,
                        result,
                        extra={
                            "ds": str(ds),
                            "stage": name,
                            "run_id": result.get("run_id"),
                            "model_version": result.get("model_version"),
                        },
                    )
                else:
                    log.error(
                        "stage %s ds=%s failed after %.1fs",
                        name,
                        ds,
                        elapsed,
                        extra={"ds": str(ds), "stage": name},
                    )

        run.stage_name = name
        return run

    return wrap


def _json_safe(obj):
    """NaN/inf -> None (an undefined metric, e.g. AUC on one-class labels): XCom and JSON refuse them."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _export(name: str, ds: date, settings: Settings, ok: bool, seconds: float, result: dict) -> None:
    if not settings.monitoring.pushgateway_url:
        return
    try:
        from recsys.monitoring.metrics import push_stage_metrics

        rows = {k: int(v) for k, v in result.items() if k.endswith("rows") and isinstance(v, int | float)}
        push_stage_metrics(
            name,
            str(ds),
            success=ok,
            duration_seconds=seconds,
            rows=rows,
            pushgateway_url=settings.monitoring.pushgateway_url,
        )
    except Exception as exc:  # monitoring must never fail the pipeline
        log.warning("could not push metrics for %s: %s", name, exc)


# --------------------------------------------------------------------------------- ingestion
@stage("simulate")
def simulate(ds: date, settings: Settings) -> dict:
    """Simulated platform traffic for ``ds`` into landing (the demo's upstream)."""
    from recsys.data import simulate as sim
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.serving.publish import engine_for, read_for_ds

    lake = open_lake(settings)
    world = sim.build_world(settings.simulator, settings.seed)
    # users on day D see the lists published at the end of day D-1 (if that version is still kept)
    live = read_for_ds(engine_for(settings.resolved_db_url), str(ds - timedelta(days=1)))
    slates, version = None, None
    if not live.empty:
        key = load_pseudonym_key(settings)
        by_key = live.groupby("user_key")["video_id"].apply(list).to_dict()
        slates = {u: by_key[k] for u in world.users["user_id"] if (k := pseudonym(u, key)) in by_key}
        version = str(live["version"].iloc[0])
    events = sim.simulate_day(world, ds, slates, version)
    for dataset, frame in (("events", events), ("videos", sim.catalog_on(world, ds)), ("users", world.users)):
        path = lake.partition("landing", dataset, ds) / "part-0.jsonl"
        path.with_name(path.name + ".enc").unlink(missing_ok=True)
        if dataset == "events":
            sim.write_landing(frame, path)
        else:
            atomic_write_bytes(path, sim.to_jsonl(frame))
    return {"events_rows": len(events), "rec_version": version}


@stage("land")
def land(ds: date, settings: Settings) -> dict:
    """Bring the day's raw events into landing: simulate them, or check an upstream delivered them."""
    if settings.source == "simulator":
        return simulate.__wrapped__(ds, settings)
    if settings.source == "landing":
        from recsys.data.sources import landing_file

        lake = Lake(settings.data_dir)
        for dataset in ("events", "videos", "users"):
            p = landing_file(lake, dataset, ds)
            if not p.exists() and not p.with_name(p.name + ".enc").exists():
                raise FileNotFoundError(f"upstream has not delivered {dataset} for ds={ds} (expected {p})")
        return {"source": "landing"}
    from recsys.data import importers

    return importers.land(ds, settings)


@stage("collect")
def collect(ds: date, settings: Settings) -> dict:
    """Landing -> raw zone (encrypted Parquet); the landing files are then encrypted in place."""
    from recsys.data import sources

    return sources.collect_day(open_lake(settings), ds)


def _trailing_volumes(settings: Settings, ds: date, days: int = 7) -> list[int]:
    out = []
    for i in range(1, days + 1):
        p = settings.data_dir / "reports" / "runs" / f"ds={ds - timedelta(days=i)}" / "validate.json"
        if p.exists():
            out.append(int(json.loads(p.read_text())["input_rows"]))
    return out


@stage("validate")
def validate(ds: date, settings: Settings) -> dict:
    """Great Expectations on the raw day: bad rows to quarantine (with the rule), bad batches fail."""
    from recsys.data.validate import (
        accepted_event_ids,
        quarantine_frame,
        validate_events,
        validate_users,
        validate_videos,
    )

    lake = open_lake(settings)
    events = lake.read_frame("raw", "events", ds)
    malformed = lake.read_frame("raw", "events_malformed", ds)
    videos = lake.read_frame("raw", "videos", ds)
    users = lake.read_frame("raw", "users", ds)
    validate_videos(videos, ds=ds)  # reference tables: any failure stops the run
    validate_users(users, ds=ds)
    durations = dict(
        zip(videos["video_id"].astype(int), videos["duration_seconds"].astype(float), strict=True)
    )
    reports = settings.data_dir / "reports" / "validation" / f"ds={ds}"
    res = validate_events(
        events,
        ds,
        set(durations),
        _trailing_volumes(settings, ds),
        reports,
        durations=durations,
        n_malformed=len(malformed),
        seen_event_ids=accepted_event_ids(lake, ds, settings.features.window_days),
    )
    quarantine = quarantine_frame(res.quarantined, malformed)
    lake.write_frame("quarantine", "events", ds, quarantine)
    lake.write_frame("raw", "valid_events", ds, res.accepted)
    if res.data_docs_path:
        log.info("validation Data Docs: %s", res.data_docs_path)
    assert len(res.accepted) + len(res.quarantined) == len(events)
    return {
        "input_rows": len(events) + len(malformed),
        "accepted_rows": len(res.accepted),
        "quarantined_rows": len(quarantine),
        "data_docs": str(res.data_docs_path or ""),
        "rules": {k: v for k, v in res.report.get("rule_counts", {}).items() if v},
    }


@stage("anonymize")
def anonymize(ds: date, settings: Settings) -> dict:
    """Valid raw rows -> clean zone: keyed pseudonyms, e-mail and IP dropped, region coarsened."""
    from recsys.privacy.anonymize import anonymize_data, anonymize_users
    from recsys.privacy.erasure import erased_keys
    from recsys.privacy.pseudonymize import load_pseudonym_key

    lake = open_lake(settings)
    key = load_pseudonym_key(settings)
    events = anonymize_data(lake.read_frame("raw", "valid_events", ds), key)
    users = anonymize_users(lake.read_frame("raw", "users", ds), key)
    gone = erased_keys(settings)  # users who asked to be erased never come back through a new day
    if gone:
        events = events[~events["user_key"].isin(gone)].reset_index(drop=True)
        users = users[~users["user_key"].isin(gone)].reset_index(drop=True)
    lake.write_frame("clean", "interactions", ds, events)
    lake.write_frame("clean", "users", ds, users)
    lake.write_frame("clean", "videos", ds, lake.read_frame("raw", "videos", ds))
    return {"interactions_rows": len(events), "users_rows": len(users)}


# --------------------------------------------------------------------------------- modelling
@stage("features")
def features(ds: date, settings: Settings) -> dict:
    """Examples over the trailing window, split by time, transform fitted on the train split only."""
    from recsys.features import feature_engineering

    lake = open_lake(settings)
    return feature_engineering(lake, ds, settings.features)


@stage("should_train")
def should_train(ds: date, settings: Settings, force: bool = False) -> dict:
    """Train when forced, when there is no champion yet, or when the training schedule says so."""
    from recsys.registry import champion_version

    if force:
        return {"train": True, "why": "forced by trigger"}
    if champion_version(settings) is None:
        return {"train": True, "why": "no champion yet"}
    last = sorted((settings.data_dir / "reports" / "runs").glob("ds=*/train.json"))
    last_ds = max(
        (date.fromisoformat(p.parent.name[3:]) for p in last if date.fromisoformat(p.parent.name[3:]) < ds),
        default=None,
    )
    due = last_ds is None or (ds - last_ds).days >= settings.train.train_every_days
    return {"train": due, "why": f"last trained {last_ds}, every {settings.train.train_every_days} day(s)"}


@stage("train")
def train(ds: date, settings: Settings, trigger: str = "schedule") -> dict:
    from recsys.train import train_model

    fdir = features_dir(settings, ds)
    res = train_model(
        fdir,
        settings,
        run_name=f"{settings.model.variant}-{ds}",
        work_dir=settings.data_dir / "checkpoints" / f"ds={ds}",
        tags={
            "ds": str(ds),
            "trigger": trigger,
            "variant": settings.model.variant,
            "window_days": str(settings.features.window_days),
        },
    )
    return {
        "run_id": res.run_id,
        "model_uri": res.model_uri,
        "epochs": res.epochs_run,
        "best_val_loss": res.best_val_loss,
    }


@stage("evaluate")
def evaluate(ds: date, settings: Settings, run_id: str, model_uri: str | None = None) -> dict:
    """Candidate vs champion vs baselines on the held-out day; the gate's decision with reasons.

    Metrics, tags (ds, trigger, data window, variant, gate.*) and ``evaluation/report.html`` go to the
    candidate's MLflow run; the task log says which threshold failed and by how much.
    """
    import mlflow

    from recsys.evaluate import evaluate_run, log_evaluation
    from recsys.features.build import window_start
    from recsys.registry import NoChampionError, load_ranker, load_ranker_dir
    from recsys.tracking import configure

    configure(settings)
    local = mlflow.artifacts.download_artifacts(model_uri or f"runs:/{run_id}/ranker")
    candidate = load_ranker_dir(Path(local) / "artifacts")
    try:
        champion = load_ranker(settings)
    except NoChampionError:
        champion = None
    result = evaluate_run(
        candidate, champion, features_dir(settings, ds), settings.evaluate, settings=settings, ds=ds
    )
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    trigger = run.data.tags.get("trigger", "unknown")
    variant = run.data.tags.get("variant", settings.model.variant)
    tags = log_evaluation(
        run_id,
        result,
        {
            "ds": str(ds),
            "trigger": trigger,
            "variant": variant,
            "model_variant": variant,
            "window_days": str(settings.features.window_days),
            "data_window": f"{window_start(ds, settings.features.window_days)}..{ds}",
            "source": settings.source,
        },
    )
    if run.info.run_name == f"{variant}-{ds}":  # the default name: make runs distinguishable in compare view
        client.update_run(run_id, name=f"{variant}-{ds}-{trigger}")
    dec = result["decision"]
    level = logging.INFO if dec["blessed"] else logging.WARNING
    head = "BLESSED: " if dec["blessed"] else "NOT BLESSED: "
    log.log(level, "gate: %s", head + "; ".join(dec["reasons"]))
    for c in dec["checks"]:
        log.log(
            logging.INFO if c["passed"] else logging.WARNING,
            "gate check %s: %s (value %.4f, threshold %.4f%s)",
            c["check"],
            "passed" if c["passed"] else "FAILED",
            c["value"],
            c["threshold"],
            "" if c["passed"] else f", short by {c['shortfall']:.4f}",
        )
    k = settings.evaluate.k
    headline = {
        n: {m: v.get(m) for m in (f"ndcg_{k}", f"true_ndcg_{k}", "click_auc") if m in v}
        for n, v in {
            "candidate": result["candidate"],
            "champion": result["champion"] or {},
            **{f"baseline_{b}": m for b, m in result["baselines"].items()},
        }.items()
    }
    log.info("evaluation (ds=%s): %s", ds, json.dumps(headline, default=float))
    return {
        "run_id": run_id,
        "model_uri": model_uri,
        "blessed": dec["blessed"],
        "reasons": dec["reasons"],
        "failed_checks": tags["gate.failed_checks"],
        "report": "evaluation/report.html",
        "metrics": {k_: v for k_, v in result["candidate"].items() if not k_.endswith("_rows")},
    }


@stage("register")
def register(ds: date, settings: Settings, run_id: str, blessed: bool, model_uri: str | None = None) -> dict:
    from recsys.registry import register as reg

    return reg(
        settings,
        model_uri or f"runs:/{run_id}/ranker",
        promote=blessed,
        tags={"ds": str(ds), "blessed": str(blessed).lower(), "run_id": run_id},
    )


# --------------------------------------------------------------------------------- serving
@stage("recommend")
def recommend(ds: date, settings: Settings) -> dict:
    """Candidates for every user active on ``ds``, ranked by the champion, top N -> recs zone."""
    from recsys.serving import batch_recommendations

    lake = open_lake(settings)
    recs, info = batch_recommendations(lake, ds, settings)
    lake.write_frame("recs", "lists", ds, recs)
    return {"recs_rows": len(recs), **info}


@stage("publish")
def publish(ds: date, settings: Settings) -> dict:
    """Load the day's lists into the recommendations DB as a new version and switch to it atomically."""
    from recsys.serving import publish as pub

    lake = open_lake(settings)
    recs = lake.read_frame("recs", "lists", ds)
    active = set(lake.read_frame("clean", "interactions", ds)["user_key"].astype(str))
    model_version = str(recs["model_version"].iloc[0])
    eng = pub.engine_for(settings.resolved_db_url)
    info = pub.publish(
        eng,
        recs[["user_key", "rank", "video_id", "score"]],
        ds=str(ds),
        model_version=model_version,
        active_users=active,
        top_n=settings.serving.top_n,
        keep=settings.serving.keep_versions,
        min_row_ratio=settings.serving.min_row_ratio,
    )
    if eng.dialect.name == "postgresql":  # apps get SELECT on the live view, nothing else
        from recsys.privacy.access import ensure_app_role

        ensure_app_role(eng, role="recsys_app")
    return info


# --------------------------------------------------------------------------------- monitoring
def _history(settings: Settings, before: date, name: str = "monitor") -> list[dict]:
    base = settings.data_dir / "reports" / "runs"
    out = []
    for p in sorted(base.glob(f"ds=*/{name}.json")):
        d = date.fromisoformat(p.parent.name[3:])
        if d < before:
            out.append(json.loads(p.read_text())["metrics"] | {"ds": str(d)})
    return out


def _last_retrain(settings: Settings, before: date) -> date | None:
    log_path = settings.data_dir / "reports" / "monitoring" / "retrains.jsonl"
    if not log_path.exists():
        return None
    days = [date.fromisoformat(json.loads(line)["ds"]) for line in log_path.read_text().splitlines() if line]
    days = [d for d in days if d < before]
    return max(days) if days else None


def online_model_figures(
    lake: Lake, settings: Settings, ds: date, events: pd.DataFrame, version: str, ranker=None
) -> dict:
    """How the registered model ``version`` (or a loaded ``ranker``) did on the events of ``ds``, scored as
    at serving (position unknown); {} when it cannot tell.

    - ``predicted_ctr`` and ``pred_obs_ratio``: mean predicted click probability of the day's recommended
      impressions, and its ratio to their observed CTR. Compare with the offline ``click_pred_obs_ratio``
      of that model's test day: a ratio that moves away from it says the world moved away from what the
      model learned. The lists hold the model's top picks, so the ratio sits above 1 (its errors are
      selected upwards), the more so the noisier the model: read it as a trend of one model.
    - ``exploration_click_auc`` and ``exploration_click_gauc``: the model's click AUC on the exploration
      impressions (videos it did not choose), pooled and per user (weighted by impressions, users with
      clicks and non-clicks). That slice is free of the model's own selection, so these are the online
      counterparts of the offline ``click_auc``/``click_gauc`` and compare two models on the same rows.
      The per-user figure is the one about ranking a user's list; the pooled one also credits telling
      active users from idle ones.
    """
    from recsys.evaluate import auc, gauc
    from recsys.features.build import build_examples
    from recsys.registry import load_ranker
    from recsys.serving.rank import predict_tasks

    frame = events.drop(columns=["category", "hour"], errors="ignore")
    if not frame["rec_version"].notna().any():
        return {}
    try:
        ranker = ranker or load_ranker(settings, version=version)
        examples = build_examples(
            frame, lake.read_frame("clean", "videos", ds), lake.read_frame("clean", "users", ds)
        )
        p_click = predict_tasks(ranker, examples, encoding="frame")["click"]
    except Exception as exc:  # a figure, not a reason to fail the monitor
        log.warning("monitor ds=%s: no predicted click rate with model %s: %s", ds, version, exc)
        return {}
    # build_examples reorders the rows: align the slice on the event id
    from_list = dict(zip(frame["event_id"], frame["rec_version"].notna(), strict=True))
    recommended = examples["event_id"].map(from_list).fillna(False).to_numpy(bool)
    clicked = examples["click"].to_numpy(float)
    predicted, observed = float(p_click[recommended].mean()), float(clicked[recommended].mean())
    out = {"predicted_ctr": predicted, "pred_obs_ratio": predicted / observed if observed > 0 else None}
    explored = ~recommended
    if explored.any():
        y, p, users = clicked[explored], p_click[explored], examples["user_key"].to_numpy()[explored]
        figures = {"exploration_click_auc": auc(y, p), "exploration_click_gauc": gauc(y, p, users)}
        out |= {k: v for k, v in figures.items() if np.isfinite(v)}
    return out


def _simulated_regret(settings: Settings, ds: date) -> dict:
    """On simulated data: the served lists' shortfall against the oracle's on ``ds`` (see
    :func:`recsys.data.simulate.regret_against_oracle`); {} when there were no lists or it cannot tell."""
    from recsys.data import simulate as sim
    from recsys.privacy.pseudonymize import load_pseudonym_key, pseudonym
    from recsys.serving.publish import engine_for, read_for_ds

    try:
        live = read_for_ds(engine_for(settings.resolved_db_url), str(ds - timedelta(days=1)))
        if live.empty:
            return {}
        world = sim.build_world(settings.simulator, settings.seed)
        key = load_pseudonym_key(settings)
        uidx = {pseudonym(u, key): i for i, u in enumerate(world.users["user_id"])}
        vidx = world.video_index()
        lists = {
            uidx[k]: [vidx.get(int(v), -1) for v in g.sort_values("rank")["video_id"]]
            for k, g in live.groupby("user_key")
            if k in uidx
        }
        return sim.regret_against_oracle(world, ds, lists)
    except Exception as exc:  # a figure for the simulator only: never fail the monitor over it
        log.warning("monitor ds=%s: no regret against the oracle: %s", ds, exc)
        return {}


@stage("monitor")
def monitor(ds: date, settings: Settings) -> dict:
    """Online metrics of ``ds`` (what users did with the published lists), drift, and the retrain decision."""
    from recsys.monitoring import (
        check_retraining_needed,
        compute_metrics,
        ctr_baseline_rows,
        degraded_streak_days,
        feature_psi,
        write_quality_snapshot,
    )
    from recsys.registry import champion_version

    lake = open_lake(settings)
    events = lake.read_frame("clean", "interactions", ds)
    videos = lake.read_frame("clean", "videos", ds)
    start = ds - timedelta(days=settings.features.window_days)
    try:
        past = lake.read_window("clean", "interactions", start, ds - timedelta(days=1))
    except FileNotFoundError:
        past = events.iloc[:0]
    known = set(past["user_key"].dropna().astype(str))
    day = compute_metrics(
        events,
        catalog_size=int(videos["visible"].astype(bool).sum()),
        known_users=known if len(past) else None,
    )
    cat = dict(zip(videos["video_id"].astype("Int64"), videos["category"], strict=True))
    for f in (events, past):
        f["category"] = f["video_id"].map(cat)
        f["hour"] = pd.to_datetime(f["ts"], utc=True).dt.hour
    # drift of the population, measured on impressions not from a published list (exploration and users
    # without a list): what the model chose to show would otherwise read as drift whenever it changes
    probe_past, probe_now = past[past["rec_version"].isna()], events[events["rec_version"].isna()]
    if not len(probe_past) or not len(probe_now):
        probe_past, probe_now = past, events
    psi = feature_psi(probe_past, probe_now, ["device", "category", "hour"]) if len(past) else {}
    # the model whose lists users saw today (the list versions in the events -> recommendation_versions)
    served_model = None
    rec_versions = sorted(set(events["rec_version"].dropna().astype(str)))
    if rec_versions:
        import sqlalchemy as sa

        from recsys.serving.publish import engine_for
        from recsys.serving.publish import versions as versions_table

        try:
            with engine_for(settings.resolved_db_url).connect() as conn:
                models = {
                    str(m)
                    for (m,) in conn.execute(
                        sa.select(versions_table.c.model_version).where(
                            versions_table.c.version.in_(rec_versions)
                        )
                    )
                }
        except Exception as exc:  # the figures still count without the model's name
            log.warning("monitor ds=%s: cannot read the list versions' models: %s", ds, exc)
            models = set()
        served_model = models.pop() if len(models) == 1 else None
    day = {k: v for k, v in day.items() if k != "by_rec_version"} | {"psi": psi, "served_model": served_model}
    if served_model is not None and served_model != "baseline-popularity":
        day |= online_model_figures(lake, settings, ds, events, served_model)
    if settings.source == "simulator":
        day |= _simulated_regret(settings, ds)
    last = _last_retrain(settings, ds)
    # CTR baseline: earlier days whose lists came from a model (the popularity fallback's CTR says
    # nothing about a model), since the last monitor-triggered retrain (that retrain was the answer to a
    # degradation: the days before it are not the level to return to). Scheduled retrains stay in the
    # baseline, so a daily-trained model that gets worse is caught like a stale one.
    history = ctr_baseline_rows(_history(settings, ds), last_retrain=last)
    champ_ds = _champion_ds(settings)
    rows = history + [day | {"ds": str(ds)}]
    decision = check_retraining_needed(
        rows, settings.monitoring, today=ds, last_retrain=last, model_trained_at=champ_ds
    )
    # the retrain's fresh window: the degraded days after a CTR drop (else the configured window)
    window_days = degraded_streak_days(rows, settings.monitoring, today=ds) or None
    model_version = champion_version(settings) or "none"
    ctx = {"ds": str(ds), "stage": "monitor", "model_version": model_version}

    def _fmt(x) -> str:
        return "-" if x is None else f"{x:.4f}"

    write_quality_snapshot(
        settings.monitoring.quality_snapshot_path or settings.data_dir / "monitoring" / "quality.json",
        {
            "ds": str(ds),
            "model_version": model_version,
            "online": day,
            "psi": psi,
            "retrain_recommended": bool(decision.retrain),
        },
    )
    log.info(
        "monitor ds=%s model=%s: ctr recommended %s (%d impressions), exploration %s (%d)",
        ds,
        model_version,
        _fmt(day.get("ctr")),
        day.get("recommended_impressions", 0),
        _fmt(day.get("ctr_exploration")),
        day.get("exploration_impressions", 0),
        extra=ctx,
    )
    if decision.retrain:
        path = settings.data_dir / "reports" / "monitoring" / "retrains.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            ln
            for ln in (path.read_text().splitlines() if path.exists() else [])
            if json.loads(ln)["ds"] != str(ds)
        ]
        lines.append(json.dumps({"ds": str(ds), "reasons": decision.reasons, "window_days": window_days}))
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
        log.warning(
            "monitor ds=%s: RETRAIN (window %s day(s)): %s",
            ds,
            window_days or "default",
            "; ".join(decision.reasons),
            extra=ctx,
        )
    elif decision.reasons:
        log.info("monitor ds=%s: no retrain: %s", ds, "; ".join(decision.reasons), extra=ctx)
    return {
        "metrics": day,
        "retrain": bool(decision.retrain),
        "reasons": decision.reasons,
        "window_days": window_days if decision.retrain else None,
        "model_version": model_version,
    }


def _champion_ds(settings: Settings) -> date | None:
    from recsys.registry import champion_tags

    ds = champion_tags(settings).get("ds")
    return date.fromisoformat(ds) if ds else None

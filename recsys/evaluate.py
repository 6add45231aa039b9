"""Offline evaluation on the held-out day and the champion/challenger gate.

The candidate, the current champion and simple baselines are scored on the same test split; per-task
metrics go to the candidate's MLflow run, and the gate decides (with reasons and numbers) whether the
candidate may become champion, the way TFX's Evaluator blesses a model against a baseline.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from recsys import tasks as task_spec
from recsys.baselines import fit_baselines, popularity_scores  # noqa: F401  (re-exported)
from recsys.config import EvaluateSettings
from recsys.gate import GateDecision, gate  # noqa: F401  (re-exported)
from recsys.rank_metrics import (  # noqa: F401  (re-exported)
    average_precision_at_k,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- metrics
def auc(y: np.ndarray, p: np.ndarray) -> float:
    m = np.isfinite(y)
    y, p = y[m], p[m]
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def gauc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    """Per-user AUC weighted by the user's impressions; users with one label class are excluded.

    Vectorized Mann-Whitney form of each group's AUC (average ranks for ties, as ``roc_auc_score``).
    """
    codes = pd.factorize(np.asarray(groups))[0]
    df = pd.DataFrame({"y": np.asarray(y, float), "p": np.asarray(p, float), "g": codes})
    df = df[np.isfinite(df["y"])]
    if df.empty:
        return float("nan")
    df["r"] = df.groupby("g", sort=False)["p"].rank(method="average")
    df["pos"] = df["y"] > 0
    df["rpos"] = df["r"] * df["pos"]
    g = df.groupby("g", sort=False).agg(n=("y", "size"), npos=("pos", "sum"), rsum=("rpos", "sum"))
    g = g[(g["npos"] > 0) & (g["npos"] < g["n"])]
    if g.empty:
        return float("nan")
    aucs = (g["rsum"] - g["npos"] * (g["npos"] + 1) / 2) / (g["npos"] * (g["n"] - g["npos"]))
    return float((aucs * g["n"]).sum() / g["n"].sum())


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    m = np.isfinite(y)
    y, p = y[m], p[m]
    if len(y) == 0:
        return float("nan")
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            err += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(err)


_NAN = float("nan")
# Offline metrics a task of the spec may name: (labels, predictions, labelled mask, users) -> value.
OFFLINE_METRICS = {
    "auc": lambda y, p, m, u: auc(y, p),
    "gauc": lambda y, p, m, u: gauc(y, p, u),
    "logloss": lambda y, p, m, u: float(log_loss(y[m], p[m], labels=[0, 1])) if m.any() else _NAN,
    "ece": lambda y, p, m, u: expected_calibration_error(y, p),
    "pred_obs_ratio": lambda y, p, m, u: float(p[m].mean() / max(y[m].mean(), 1e-9)) if m.any() else _NAN,
    "rows": lambda y, p, m, u: float(m.sum()),
    "rmse": lambda y, p, m, u: float(np.sqrt(np.mean((y[m] - p[m]) ** 2))) if m.any() else _NAN,
}


def task_metrics(
    labels: dict[str, np.ndarray], preds: dict[str, np.ndarray], users: np.ndarray, tasks=None
) -> dict:
    """Per-task offline metrics ``{task}_{metric}``, each task's ``offline_metrics`` from the spec
    (``tasks``, default :data:`recsys.tasks.TASKS`): AUC, GAUC, log loss, ECE, predicted/observed and
    labelled rows for the binary tasks (probabilities clipped to [1e-7, 1 - 1e-7]), then RMSE for the
    regression ones (watch). A task the scorer has no prediction for is left out."""
    out: dict[str, float] = {}
    for t in (*task_spec.binary(tasks), *task_spec.regression(tasks)):
        if t.name not in preds:
            continue
        y, p = labels[t.name], preds[t.name]
        if t.binary:
            p = np.clip(p, 1e-7, 1 - 1e-7)
        m = np.isfinite(y)
        for name in t.offline_metrics:
            out[f"{t.name}_{name}"] = OFFLINE_METRICS[name](y, p, m, users)
    return out


# ---------------------------------------------------------------------------------------- slices
def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    """Reliability-diagram bins: mean prediction, observed rate and count per equal-width bin."""
    m = np.isfinite(y) & np.isfinite(p)
    y, p = y[m], p[m]
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return [
        {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "n": int((idx == b).sum()),
            "mean_pred": float(p[idx == b].mean()),
            "observed": float(y[idx == b].mean()),
        }
        for b in range(bins)
        if (idx == b).any()
    ]


def _segment_rows(
    test: pd.DataFrame, column: str, preds: dict[str, dict], users: np.ndarray, with_gauc: bool = True
) -> list[dict]:
    """Click metrics per value of ``column``: rows, CTR, and per scorer mean predicted click, AUC (, GAUC)."""
    out = []
    y = test["click"].to_numpy(float)
    col = test[column]
    values = col.dropna().unique().tolist()
    try:
        values = sorted(values)  # positions in numeric order
    except TypeError:
        values = sorted(values, key=str)
    for value in values:
        sel = (col == value).to_numpy()
        if not isinstance(value, str):
            value = int(value) if float(value).is_integer() else float(value)
        row = {column: value, "rows": int(sel.sum()), "ctr": float(np.nanmean(y[sel]))}
        for name, p in preds.items():
            row[f"{name}_pred"] = float(np.mean(p["click"][sel]))
            row[f"{name}_auc"] = auc(y[sel], p["click"][sel])
            if with_gauc:
                row[f"{name}_gauc"] = gauc(y[sel], p["click"][sel], users[sel])
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------- the run
def _scored(model, rows: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(per-task predictions, ranking score) of a ranker or a baseline on ``rows``."""
    if hasattr(model, "predict_tasks") and hasattr(model, "score"):  # a baseline
        return model.predict_tasks(rows), model.score(rows)
    if hasattr(model, "transform") and hasattr(model, "score_weights"):  # a Ranker
        # the serving path's traced model call: the same predictions as ``Ranker.predict`` (same
        # transform, position unknown), without Keras' per-call predict loop (3-4x faster per chunk)
        from recsys.features.negatives import ranking_scores
        from recsys.serving.rank import predict_tasks

        p = predict_tasks(model, rows, encoding="frame")
        score = ranking_scores(model, p, rows["video_id"])
        return {t: np.asarray(p[t], dtype=float) for t in task_spec.names() if t in p}, np.asarray(
            score, float
        )
    out = model.predict(rows)
    return {t: out[t].to_numpy(float) for t in task_spec.names() if t in out}, out["score"].to_numpy(float)


def _test_day(test: pd.DataFrame, features_dir: Path) -> date:
    name = Path(features_dir).name
    if name.startswith("ds="):
        return date.fromisoformat(name[3:])
    return pd.to_datetime(test["ts"], utc=True).max().date()


def _sorted_codes(values) -> np.ndarray:
    """Integer codes of ``values`` in the sort order of the values themselves: grouping and ordering by
    them is grouping and ordering by the keys, without a Python string per row."""
    return pd.factorize(np.asarray(values) if not isinstance(values, pd.Series) else values, sort=True)[0]


def _scorer_metrics(name: str, model, labels: dict, p: dict, score, users, items, k: int) -> dict:
    m = task_metrics(labels, p, users)
    if not getattr(model, "calibrated", True):  # rank scores: only the ranking-type metrics mean anything
        m = {key: v for key, v in m.items() if key.endswith(("_auc", "_gauc", "_rows"))}
    if name.startswith("baseline_"):  # a baseline predicts no regression target
        for t in task_spec.regression():
            for metric in t.offline_metrics:
                m.pop(f"{t.name}_{metric}", None)
    m.update(ranking_metrics(users, items, labels["click"], score, k))
    return m


def evaluate_run(
    ranker,
    champion,
    features_dir: Path,
    cfg: EvaluateSettings,
    *,
    world=None,
    ds: date | None = None,
    seed: int = 0,
) -> dict:
    """Score candidate, champion and baselines on the same test split; metrics, slices and the gate.

    Per scorer: the per-task classification metrics of the test impressions, and ranking metrics of the
    lists they produce (each test user's impressions of the day ordered by the scorer, against clicks). With
    a simulated ``world`` (the catalog's world adapter), also the true-utility NDCG of each scorer's top k
    over the visible catalog, against the simulator's oracle. Baselines are fitted on train + valid only.

    Memory is bounded by ``cfg.chunk_rows`` (:mod:`recsys.eval_data`): the scorers see the test split's
    example rows that many at a time, the training window is summarized in chunks of as many rows, and
    only per-row labels, keys, predictions and scores are kept whole; the figures do not depend on it.
    """
    from recsys.catalog_eval import holdout_users, pipeline_ranking_of_run
    from recsys.eval_data import HistorySummary, read_test, scored_in_chunks

    features_dir = Path(features_dir)
    test_path = features_dir / "test.parquet"
    test = read_test(test_path)  # narrow: labels, keys, time, context
    ds = ds or _test_day(test, features_dir)
    k = cfg.k
    labels = {t: test[t].to_numpy(float) for t in task_spec.names()}
    users = _sorted_codes(test["user_key"].astype(str))
    items = _sorted_codes(test["video_id"].astype(str))
    # one pass over the training window: the baselines' and the catalog ranking's figures of it
    wanted = holdout_users(test, cfg.ranking_users) if (features_dir / "catalog.parquet").exists() else []
    parts = [features_dir / f"{part}.parquet" for part in ("train", "valid")]
    history = HistorySummary.read(parts, wanted, cfg.chunk_rows)

    scorers: dict[str, object] = {"candidate": ranker}
    if champion is not None:
        scorers["champion"] = champion
    baselines = fit_baselines(history)
    scorers.update({f"baseline_{n}": b for n, b in baselines.items()})

    metrics: dict[str, dict] = {}
    preds: dict[str, dict] = {}  # what the slices show: binary tasks of the models, popularity's click
    for name, model in scorers.items():
        p, score = scored_in_chunks(lambda rows, m=model: _scored(m, rows), test_path, cfg.chunk_rows)
        metrics[name] = _scorer_metrics(name, model, labels, p, score, users, items, k)
        if name in ("candidate", "champion"):
            preds[name] = {t.name: p[t.name] for t in task_spec.binary() if t.name in p}
        elif name == "baseline_popularity":
            preds[name] = {"click": p["click"]}
        del p, score

    shown = {n: p for n, p in preds.items() if n in ("candidate", "champion", "baseline_popularity")}
    slices = {
        "calibration": {
            name: {
                t.name: reliability(labels[t.name], np.clip(p[t.name], 0, 1))
                for t in task_spec.binary()
                if t.name in p
            }
            for name, p in preds.items()
            if name in ("candidate", "champion")
        },
        "by_position": _segment_rows(test, "position", shown, users, False) if "position" in test else [],
        "by_activity": _segment_rows(test, "activity", shown, users) if "activity" in test else [],
    }
    test_users = int(len(np.unique(users)))
    del preds, shown, labels, users, items  # what follows needs none of them

    truth = None
    if world is not None and cfg.truth_users > 0:
        # the columns it reads: it sorts the rows by time (a copy of every column it is given)
        who = test[[c for c in ("user_key", "ts", "device", "region", "age_band", "activity") if c in test]]
        truth = world.truth_sample(ds, who, k, cfg.truth_users, cfg.truth_candidates)
        if truth is not None:
            for name, model in scorers.items():
                _, score = _scored(model, truth.rows)
                metrics[name].update(truth.ndcg(score, k))

    ranking, logged = pipeline_ranking_of_run(ranker, champion, features_dir, test, cfg, seed, history)
    del history
    if not logged:  # AUCs on sampled negatives: kept, but named for what they are
        metrics = {
            n: {(f"sampled_{m}" if "_auc" in m or "_gauc" in m else m): v for m, v in x.items()}
            for n, x in metrics.items()
        }
    pop = metrics["baseline_popularity"]
    decision = gate(
        metrics["candidate"], metrics.get("champion"), pop, cfg, (ranking or {}).get("check"), logged
    )
    return {
        "ds": str(ds),
        "k": k,
        "test_rows": len(test),
        "test_users": test_users,
        "candidate": metrics["candidate"],
        "champion": metrics.get("champion"),
        "champion_version": getattr(champion, "version", None) if champion is not None else None,
        "baselines": {n: metrics[f"baseline_{n}"] for n in baselines},
        "popularity": pop,
        "truth": None if truth is None else {"users": len(truth.ideal_dcg), "catalog": truth.catalog_size},
        "decision": asdict(decision),
        "slices": slices,
        "logged_exposures": logged,
        "ranking": ranking,
    }


def evaluation_tags(result: dict, extra: dict[str, str] | None = None) -> dict[str, str]:
    """MLflow tags of an evaluated run: the gate's decision, each failed check and by how much, context."""
    dec = result["decision"]
    tags = {
        "gate.blessed": str(dec["blessed"]).lower(),
        "gate.reasons": "; ".join(dec["reasons"])[:4900],
        "gate.failed_checks": ",".join(c["check"] for c in dec["checks"] if not c["passed"]) or "none",
        "eval.ds": str(result.get("ds")),
        "eval.test_rows": str(result.get("test_rows")),
        "eval.champion_version": str(result.get("champion_version") or "none"),
    }
    for c in dec["checks"]:
        state = "passed" if c["passed"] else f"FAILED by {c['shortfall']:.4f}"
        tags[f"gate.check.{c['check']}"] = f"{state}: {c['detail']}"[:4900]
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def flat_metrics(result: dict) -> dict[str, float]:
    """The run's metrics: ``test_*`` (candidate), ``champion_test_*``, ``baseline_<name>_*`` (finite only)."""

    def finite(prefix: str, d: dict | None) -> dict:
        return {
            f"{prefix}{k}": float(v)
            for k, v in (d or {}).items()
            if isinstance(v, int | float) and np.isfinite(v)
        }

    out = {**finite("test_", result["candidate"]), **finite("champion_test_", result["champion"])}
    for name, m in (result.get("baselines") or {"popularity": result["popularity"]}).items():
        out.update(finite(f"baseline_{name}_", m))
    from recsys.catalog_report import ranking_metrics

    out.update(ranking_metrics(result.get("ranking")))
    return out


def log_evaluation(run_id: str, result: dict, tags: dict[str, str] | None = None) -> dict[str, str]:
    """Write metrics, tags, ``evaluation/evaluation.json`` and ``evaluation/report.html`` into the run."""
    import mlflow
    from mlflow.entities import Metric, RunTag

    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    all_tags = evaluation_tags(result, tags)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in flat_metrics(result).items()],
        tags=[RunTag(k, v) for k, v in all_tags.items()],
    )
    client.log_text(run_id, json.dumps(result, indent=2, default=float), "evaluation/evaluation.json")
    try:
        from recsys.report import render_report

        client.log_text(run_id, render_report(result, all_tags), "evaluation/report.html")
    except Exception:  # the report is for people; a plotting failure must not lose the decision
        log.exception("could not render the evaluation report")
    return all_tags

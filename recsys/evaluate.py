"""Offline evaluation on the held-out day and the champion/challenger gate.

The candidate, the current champion and simple baselines are scored on the same test split; per-task
metrics go to the candidate's MLflow run, and the gate decides (with reasons and numbers) whether the
candidate may become champion, the way TFX's Evaluator blesses a model against a baseline.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from recsys.config import EvaluateSettings
from recsys.features.spec import LABELS

log = logging.getLogger(__name__)
BINARY_TASKS = ("click", "like", "share")


# ---------------------------------------------------------------------------------------- metrics
def auc(y: np.ndarray, p: np.ndarray) -> float:
    m = np.isfinite(y)
    y, p = y[m], p[m]
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def gauc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    """Per-user AUC weighted by the user's impressions; users with one label class are excluded."""
    df = pd.DataFrame({"y": y, "p": p, "g": groups})
    df = df[np.isfinite(df["y"])]
    num = den = 0.0
    for _, g in df.groupby("g", sort=False):
        if g["y"].nunique() == 2:
            num += roc_auc_score(g["y"], g["p"]) * len(g)
            den += len(g)
    return float(num / den) if den else float("nan")


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


def task_metrics(labels: dict[str, np.ndarray], preds: dict[str, np.ndarray], users: np.ndarray) -> dict:
    """Per-task offline metrics: AUC, GAUC, log loss, ECE, predicted/observed for binary tasks; RMSE for watch."""
    out: dict[str, float] = {}
    for t in BINARY_TASKS:
        y, p = labels[t], np.clip(preds[t], 1e-7, 1 - 1e-7)
        m = np.isfinite(y)
        out[f"{t}_auc"] = auc(y, p)
        out[f"{t}_gauc"] = gauc(y, p, users)
        out[f"{t}_logloss"] = float(log_loss(y[m], p[m], labels=[0, 1])) if m.any() else float("nan")
        out[f"{t}_ece"] = expected_calibration_error(y, p)
        out[f"{t}_pred_obs_ratio"] = float(p[m].mean() / max(y[m].mean(), 1e-9)) if m.any() else float("nan")
        out[f"{t}_rows"] = float(m.sum())
    y, p = labels["watch"], preds["watch"]
    m = np.isfinite(y)
    out["watch_rmse"] = float(np.sqrt(np.mean((y[m] - p[m]) ** 2))) if m.any() else float("nan")
    return out


# ---------------------------------------------------------------------------------------- baselines
def popularity_scores(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, np.ndarray]:
    """Global popularity baseline: each video's smoothed click rate in the training split."""
    g = train.groupby(train["video_id"].astype(str))["click"].agg(["sum", "count"])
    prior = float(train["click"].mean()) if len(train) else 0.0
    rate = (g["sum"] + 10 * prior) / (g["count"] + 10)
    p = test["video_id"].astype(str).map(rate).fillna(prior).to_numpy(float)
    return {"click": p, "like": p, "share": p, "watch": np.full(len(test), np.nan)}


# ---------------------------------------------------------------------------------------- the gate
@dataclass
class GateDecision:
    blessed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        head = "BLESSED" if self.blessed else "NOT BLESSED"
        return f"{head}: " + "; ".join(self.reasons)


def gate(candidate: dict, champion: dict | None, popularity: dict, cfg: EvaluateSettings) -> GateDecision:
    """Bless the candidate only if every configured threshold holds; say which failed and by how much."""
    d = GateDecision(blessed=True)

    def check(name: str, ok: bool, detail: str) -> None:
        d.checks.append({"check": name, "passed": bool(ok), "detail": detail})
        if not ok:
            d.blessed = False
            d.reasons.append(f"{name} failed: {detail}")

    for task, floor in cfg.floor_auc.items():
        v = candidate.get(f"{task}_auc", float("nan"))
        check(f"floor_{task}_auc", np.isfinite(v) and v >= floor, f"{task} AUC {v:.4f} vs floor {floor:.4f}")
    for task, margin in cfg.max_regression.items():
        if champion is None:
            continue
        c, ch = candidate.get(f"{task}_auc", float("nan")), champion.get(f"{task}_auc", float("nan"))
        if np.isfinite(ch):
            check(f"regression_{task}_auc", np.isfinite(c) and c >= ch - margin,
                  f"{task} AUC {c:.4f} vs champion {ch:.4f} (allowed regression {margin:.4f}, delta {c - ch:+.4f})")
    pop = popularity.get("click_auc", float("nan"))
    c = candidate.get("click_auc", float("nan"))
    if np.isfinite(pop):
        need = pop + cfg.min_margin_over_popularity
        check("margin_over_popularity", np.isfinite(c) and c >= need,
              f"click AUC {c:.4f} vs popularity {pop:.4f} + margin {cfg.min_margin_over_popularity:.4f}")
    if d.blessed:
        d.reasons.append("all checks passed" + ("" if champion else " (no champion yet)"))
    return d


def evaluate_run(ranker, champion, features_dir: Path, cfg: EvaluateSettings) -> dict:
    """Score candidate, champion and baselines on the test split; returns metrics and the gate decision."""
    test = pd.read_parquet(features_dir / "test.parquet")
    train = pd.read_parquet(features_dir / "train.parquet", columns=["video_id", "click"])
    labels = {t: test[t].to_numpy(float) for t in LABELS}
    users = test["user_key"].astype(str).to_numpy()
    cand = task_metrics(labels, ranker.predict_tasks(test), users)
    champ = task_metrics(labels, champion.predict_tasks(test), users) if champion is not None else None
    pop = task_metrics(labels, popularity_scores(train, test), users)
    decision = gate(cand, champ, pop, cfg)
    return {"candidate": cand, "champion": champ, "popularity": pop, "decision": asdict(decision),
            "test_rows": len(test)}


def log_evaluation(run_id: str, result: dict) -> None:
    """Write metrics (candidate, champion_*, baseline_*) and the decision into the candidate's run."""
    import mlflow

    client = mlflow.MlflowClient()

    def finite(prefix: str, d: dict | None) -> dict:
        return {f"{prefix}{k}": float(v) for k, v in (d or {}).items() if np.isfinite(v)}

    metrics = {**finite("test_", result["candidate"]), **finite("champion_test_", result["champion"]),
               **finite("baseline_popularity_", result["popularity"])}
    for k, v in metrics.items():
        client.log_metric(run_id, k, v)
    dec = result["decision"]
    client.set_tag(run_id, "gate.blessed", str(dec["blessed"]).lower())
    client.set_tag(run_id, "gate.reasons", "; ".join(dec["reasons"])[:4900])
    client.log_text(run_id, json.dumps(result, indent=2, default=float), "evaluation/evaluation.json")

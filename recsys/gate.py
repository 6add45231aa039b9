"""The evaluation gate: may the candidate become champion? A decision with reasons and numbers.

The candidate must clear an AUC floor, not regress against the champion beyond a margin, and beat the
popularity baseline (or, when the champion itself has fallen below popularity, beat the champion by a
gain): all thresholds are ``settings.evaluate``. Each check keeps its value, threshold and shortfall,
so the task log, the MLflow tags and the report all say by how much a check failed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from recsys.config import EvaluateSettings

log = logging.getLogger(__name__)


@dataclass
class GateDecision:
    blessed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        head = "BLESSED" if self.blessed else "NOT BLESSED"
        return f"{head}: " + "; ".join(self.reasons)


def gate(
    candidate: dict,
    champion: dict | None,
    popularity: dict,
    cfg: EvaluateSettings,
    ranking: dict | None = None,
    logged_exposures: bool = True,
) -> GateDecision:
    """Bless the candidate only if every configured threshold holds; say which failed and by how much.

    ``ranking``: the catalog ranking check (:func:`recsys.catalog_eval.ranking_check`), added as is.
    ``logged_exposures`` False (a positive-only source): the AUC checks are skipped, an AUC on sampled
    negatives being no evidence of ranking quality; the ranking check decides.

    Each check records its value, the threshold it had to reach and the shortfall (threshold - value, > 0
    when it failed), so the task log, the MLflow tags and the report can all say "by how much".
    """
    d = GateDecision(blessed=True)

    def check(name: str, value: float, threshold: float, detail: str) -> None:
        ok = bool(np.isfinite(value) and value >= threshold)
        d.checks.append(
            {
                "check": name,
                "passed": ok,
                "value": float(value),
                "threshold": float(threshold),
                "shortfall": float(threshold - value) if np.isfinite(value) else float("inf"),
                "detail": detail,
            }
        )
        if not ok:
            d.blessed = False
            d.reasons.append(f"{name} failed: {detail}")

    if ranking is not None:
        blocks = not logged_exposures or cfg.ranking_check_blocks_with_logged_exposures
        d.checks.append({**ranking, "advisory": not blocks})
        if not ranking["passed"] and blocks:
            d.blessed = False
            d.reasons.append(f"{ranking['check']} failed: {ranking['detail']}")
    for task, floor in cfg.floor_auc.items() if logged_exposures else ():
        v = candidate.get(f"{task}_auc", float("nan"))
        check(
            f"floor_{task}_auc", v, floor, f"{task} AUC {v:.4f} vs floor {floor:.4f} (delta {v - floor:+.4f})"
        )
    for task, margin in cfg.max_regression.items() if logged_exposures else ():
        if champion is None:
            continue
        c, ch = candidate.get(f"{task}_auc", float("nan")), champion.get(f"{task}_auc", float("nan"))
        if np.isfinite(ch):
            check(
                f"regression_{task}_auc",
                c,
                ch - margin,
                f"{task} AUC {c:.4f} vs champion {ch:.4f} "
                f"(allowed regression {margin:.4f}, delta {c - ch:+.4f})",
            )
    pop = popularity.get("click_auc", float("nan"))
    c = candidate.get("click_auc", float("nan"))
    if np.isfinite(pop) and logged_exposures:
        need = pop + cfg.min_margin_over_popularity
        ch = champion.get("click_auc", float("nan")) if champion else float("nan")
        gain = cfg.min_gain_over_weak_champion
        if gain is not None and np.isfinite(ch) and ch < need and np.isfinite(c) and c < need:
            # both below popularity: the question is whether the candidate improves on what is served
            check(
                "margin_over_popularity",
                c,
                ch + gain,
                f"click AUC {c:.4f} below popularity {pop:.4f} + margin {cfg.min_margin_over_popularity:.4f},"
                f" but the champion is further below ({ch:.4f}): the candidate must beat it by {gain:.4f}"
                f" (delta {c - ch - gain:+.4f})",
            )
        else:
            check(
                "margin_over_popularity",
                c,
                need,
                f"click AUC {c:.4f} vs popularity {pop:.4f} + margin {cfg.min_margin_over_popularity:.4f}"
                f" (delta {c - need:+.4f})",
            )
    if d.blessed:
        d.reasons.append("all checks passed" + ("" if champion else " (no champion yet)"))
    return d


def log_decision(decision: dict, result: dict, k: int, ds) -> None:
    """The gate's decision and each check in the task log, then the headline figures of every scorer."""
    level = logging.INFO if decision["blessed"] else logging.WARNING
    head = "BLESSED: " if decision["blessed"] else "NOT BLESSED: "
    log.log(level, "gate: %s", head + "; ".join(decision["reasons"]))
    for c in decision["checks"]:
        log.log(
            logging.INFO if c["passed"] else logging.WARNING,
            "gate check %s: %s (value %.4f, threshold %.4f%s)",
            c["check"],
            "passed" if c["passed"] else "FAILED",
            c["value"],
            c["threshold"],
            "" if c["passed"] else f", short by {c['shortfall']:.4f}",
        )
    headline = {
        n: {m: v.get(m) for m in (f"ndcg_{k}", f"true_ndcg_{k}", "click_auc") if m in v}
        for n, v in {
            "candidate": result["candidate"],
            "champion": result["champion"] or {},
            **{f"baseline_{b}": m for b, m in result["baselines"].items()},
        }.items()
    }
    log.info("evaluation (ds=%s): %s", ds, json.dumps(headline, default=float))

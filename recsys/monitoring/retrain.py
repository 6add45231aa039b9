"""The retrain hand-off: what the monitor puts in ``recsys_retrain``'s conf, and how the retrain reads it.

The conf is plain JSON (the DAG passes it to ``TriggerDagRunOperator`` as an XCom value, not a rendered
template, so ``reasons`` arrives as a list)::

    {"ds": "2026-01-05", "trigger": "monitor",
     "reasons": ["ctr dropped 35% vs trailing 3-day mean 0.160 -> 0.104 (threshold 20%)"],
     "window_days": 1}

``window_days`` is the retrain's "fresh window": after a CTR drop it is the number of degraded days, so
the challenger learns the world as it is now instead of the one before the drift (with 1, the features
stage splits the degraded day itself by time). Without it the configured window is used. Nothing here
imports pandas, TensorFlow or MLflow at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

MAX_TAG_CHARS = 4900  # MLflow caps tag values (5000 in older servers)


def retrain_conf(decision: Mapping[str, Any], ds: str) -> dict[str, Any]:
    """The conf for ``recsys_retrain`` from the monitor's decision (``{}`` when no retrain is needed)."""
    if not decision.get("retrain"):
        return {}
    conf: dict[str, Any] = {
        "ds": str(ds),
        "trigger": "monitor",
        "reasons": [str(r) for r in decision.get("reasons", [])],
    }
    if decision.get("window_days"):
        conf["window_days"] = int(decision["window_days"])
    return conf


def conf_reasons(conf: Mapping[str, Any] | None) -> list[str]:
    """``reasons`` from a run conf as a list (a hand-written conf may give one string)."""
    reasons = (conf or {}).get("reasons") or []
    if isinstance(reasons, str):
        return [reasons]
    return [str(r) for r in reasons]


def retrain_settings(conf: Mapping[str, Any] | None, settings=None):
    """Settings for a retrain run: the configured ones with the conf's ``window_days`` applied, and a full
    training whatever ``train.mode`` says: a retrain answers a drift, and a warm start from the champion
    would carry over what the drift made wrong."""
    from recsys.config import load_settings

    settings = settings or load_settings()
    if settings.train.mode != "full":
        settings = settings.model_copy(update={"train": settings.train.model_copy(update={"mode": "full"})})
    window = (conf or {}).get("window_days")
    if window:
        window = max(1, int(window))
        settings = settings.model_copy(
            update={"features": settings.features.model_copy(update={"window_days": window})}
        )
    return settings


def trigger_label(conf: Mapping[str, Any] | None) -> str:
    return str((conf or {}).get("trigger") or "manual")


def tag_retrain_run(run_id: str, conf: Mapping[str, Any] | None, settings) -> dict[str, str]:
    """Record why a retrain ran as tags of its MLflow run (``trigger``, ``trigger.reasons``, ...)."""
    tags = {
        "trigger": trigger_label(conf),
        "trigger.reasons": "; ".join(conf_reasons(conf))[:MAX_TAG_CHARS],
        "trigger.ds": str((conf or {}).get("ds", "")),
        "trigger.window_days": str(settings.features.window_days),
    }
    try:
        import mlflow

        from recsys.tracking import configure

        configure(settings)
        client = mlflow.MlflowClient()
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    except Exception as exc:  # the tags are documentation: never fail the retrain over them
        log.warning("could not tag MLflow run %s with the retrain reasons: %s", run_id, exc)
    return tags

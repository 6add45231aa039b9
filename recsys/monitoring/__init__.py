"""Monitoring: Prometheus metrics for batch health and quality, online metrics, drift, retrain rules.

``metrics`` pushes stage health to the Pushgateway and serves the latest quality figures;
``online`` computes what users did with the published lists, ``drift`` the PSI of the day's traffic,
``rules`` whether to retrain, ``assess`` strings them into the monitor's day; ``relay``
turns Alertmanager's retrain webhook into ``recsys_retrain`` runs. The seed's names are re-exported
here. Imports are lazy, so ``import recsys.monitoring.metrics`` (e.g. from the Airflow plugin) never
pulls in pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "log_user_interaction": "interactions",
    "read_interaction_log": "interactions",
    "interaction_log_path": "interactions",
    "compute_metrics": "online",
    "check_retraining_needed": "rules",
    "population_stability_index": "drift",
    "feature_psi": "drift",
    "RetrainDecision": "rules",
    "degraded_streak_days": "rules",
    "ctr_baseline_rows": "rules",
    "assess_day": "assess",
    "online_model_figures": "model_figures",
    "retrain_settings": "retrain",
    "tag_retrain_run": "retrain",
    "retrain_conf": "retrain",
    "push_stage_metrics": "metrics",
    "write_quality_snapshot": "exporter",
    "read_quality_snapshot": "exporter",
    "serve_metrics": "exporter",
    "MetricsServer": "exporter",
    "RelayConfig": "relay",
    "serve_relay": "relay_app",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

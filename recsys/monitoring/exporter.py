"""The quality exporter: the latest quality figures as Prometheus gauges (``recsys metrics serve``, :8000).

The monitor stage writes its figures (online metrics, drift, and its retrain decision) to a small JSON
snapshot with :func:`write_quality_snapshot`. :func:`serve_metrics` re-reads that file on every scrape,
so new figures appear without a restart and a scrape never sees a half-written file (writes are
atomic). :func:`snapshot_families` lists the metric names; it exports only what the snapshot holds
(:data:`SNAPSHOT_KEYS`), so no gauge waits for a figure nothing writes. Labels carry feature, source and
model version names only, never a user id.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recsys.monitoring.metrics import logical_date_seconds

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    """numpy scalars, dates and NaN made JSON-safe (NaN -> null)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_quality_snapshot(path: str | Path) -> dict[str, Any]:
    """The snapshot at ``path``; ``{}`` if none was written yet.

    Raises:
        ValueError: the file is not a JSON object.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    snapshot = json.loads(text)
    if not isinstance(snapshot, dict):
        raise ValueError(f"{path}: quality snapshot is not a JSON object")
    return snapshot


def write_quality_snapshot(path: str | Path, figures: Mapping[str, Any], *, merge: bool = True) -> Path:
    """Write the latest quality figures to ``path`` atomically (temporary file + rename).

    ``figures`` uses the keys :func:`snapshot_families` understands (:data:`SNAPSHOT_KEYS`), as the
    monitor writes them::

        {"ds": "2024-03-01", "model_version": "7",
         "online": compute_metrics(events) | online_model_figures(...),   # recsys.monitoring.online
         "psi": {"device": 0.25, "category": 0.03, "hour": 0.01},
         "retrain_recommended": False}

    With ``merge`` (the default) top-level keys replace those of the existing snapshot and the rest
    are kept, so a writer of some keys does not erase the others.
    ``written_at`` (unix seconds) is set on every write.
    """
    path = Path(path)
    snapshot = read_quality_snapshot(path) if merge else {}
    snapshot.update(_jsonable(dict(figures)))
    snapshot["written_at"] = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(snapshot, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


# What the snapshot holds, and so all the exporter can export: nothing reads any other key (a gauge for a
# figure no stage writes would feed a Grafana panel that never shows data).
SNAPSHOT_KEYS = ("written_at", "ds", "model_version", "online", "psi", "retrain_recommended")

# compute_metrics key -> (metric name, help); rates over recommended impressions unless said otherwise.
_ONLINE_GAUGES: dict[str, tuple[str, str]] = {
    "watch_seconds_per_impression": (
        "recsys_online_watch_time_per_impression_seconds",
        "Watch time per recommended impression.",
    ),
    "like_rate": ("recsys_online_like_ratio", "Likes per recommended impression."),
    "share_rate": ("recsys_online_share_ratio", "Shares per recommended impression."),
    "coverage": ("recsys_online_catalog_coverage_ratio", "Distinct recommended videos / catalog size."),
    "cold_start_share": ("recsys_online_cold_start_user_ratio", "Share of active users with no history."),
    "users": ("recsys_online_active_users", "Distinct users with an impression in the day."),
    "predicted_ctr": (
        "recsys_online_predicted_click_through_ratio",
        "Mean predicted click probability of the recommended impressions (the serving model).",
    ),
    "pred_obs_ratio": (
        "recsys_online_predicted_observed_click_ratio",
        "Predicted / observed click rate of the recommended impressions (1 = calibrated).",
    ),
    "exploration_click_auc": (
        "recsys_online_exploration_click_auc",
        "Click AUC of the serving model on the exploration impressions (videos it did not choose).",
    ),
    "exploration_click_gauc": (
        "recsys_online_exploration_click_gauc",
        "Per-user click AUC of the serving model on the exploration impressions, weighted by impressions.",
    ),
    "regret_ratio": (
        "recsys_online_oracle_regret_ratio",
        "Simulator only: share of the oracle lists' expected clicks that the served lists miss.",
    ),
    "expected_ctr": (
        "recsys_online_expected_click_through_ratio",
        "Simulator only: expected clicks per impression of the served lists under the true click model.",
    ),
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def snapshot_families(snapshot: Mapping[str, Any]) -> list[Metric]:
    """Gauges for a quality snapshot (pure). Missing or null figures are left out.

    ==========================================================  ====================================
    metric                                                      from
    ==========================================================  ====================================
    ``recsys_quality_snapshot_timestamp_seconds``               ``written_at``
    ``recsys_quality_logical_date_timestamp_seconds``           ``ds``
    ``recsys_model_info{model_version}`` (always 1)             ``model_version``
    ``recsys_online_click_through_ratio{source}``               ``online.ctr`` / ``ctr_exploration``
    ``recsys_online_impressions{source}``                       ``online.*_impressions``
    ``recsys_online_watch_time_per_impression_seconds`` etc.    the other ``online`` figures
    ``recsys_feature_psi{feature}``                             ``psi``
    ``recsys_retrain_recommended``                              ``retrain_recommended`` (the monitor's
                                                                decision: 1 = its rules ask for a retrain)
    ==========================================================  ====================================

    Offline figures (AUC per task, ...) live with each run in MLflow, not here.
    """
    out: list[Metric] = []

    def scalar(name: str, doc: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            out.append(GaugeMetricFamily(name, doc, value=number))

    def labelled(name: str, doc: str, label: str, values: Iterable[tuple[str, Any]]) -> None:
        gauge = GaugeMetricFamily(name, doc, labels=[label])
        for key, value in values:
            number = _number(value)
            if number is not None:
                gauge.add_metric([str(key)], number)
        if gauge.samples:
            out.append(gauge)

    scalar(
        "recsys_quality_snapshot_timestamp_seconds",
        "When the quality snapshot was written.",
        snapshot.get("written_at"),
    )
    if snapshot.get("ds"):
        scalar(
            "recsys_quality_logical_date_timestamp_seconds",
            "Logical date (ds) the quality figures describe, as midnight UTC.",
            logical_date_seconds(snapshot["ds"]),
        )
    if snapshot.get("model_version") is not None:
        labelled(
            "recsys_model_info",
            "The model version the quality figures describe (value 1).",
            "model_version",
            [(str(snapshot["model_version"]), 1)],
        )

    online = snapshot.get("online") or {}
    labelled(
        "recsys_online_click_through_ratio",
        "Clicks per impression, by impression source.",
        "source",
        [("recommended", online.get("ctr")), ("exploration", online.get("ctr_exploration"))],
    )
    labelled(
        "recsys_online_impressions",
        "Impressions in the day, by impression source.",
        "source",
        [
            ("recommended", online.get("recommended_impressions")),
            ("exploration", online.get("exploration_impressions")),
        ],
    )
    for key, (name, doc) in _ONLINE_GAUGES.items():
        scalar(name, doc, online.get(key))

    labelled(
        "recsys_feature_psi",
        "Population stability index of a feature vs the training window.",
        "feature",
        sorted((snapshot.get("psi") or {}).items()),
    )
    if "retrain_recommended" in snapshot:
        scalar(
            "recsys_retrain_recommended",
            "The monitor's retrain decision for its last day: 1 if its rules asked for a retrain, else 0.",
            bool(snapshot["retrain_recommended"]),
        )
    return out


class QualitySnapshotCollector(Collector):
    """Re-reads the snapshot file on every scrape, so new figures appear without a restart."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def describe(self) -> list[Metric]:
        return []  # dynamic: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot, loaded = read_quality_snapshot(self.path), True
        except (OSError, ValueError) as exc:
            log.warning("cannot read quality snapshot %s: %s", self.path, exc)
            snapshot, loaded = {}, False
        yield GaugeMetricFamily(
            "recsys_quality_snapshot_loaded",
            "1 if the quality snapshot could be read, else 0.",
            value=1.0 if loaded and snapshot else 0.0,
        )
        yield from snapshot_families(snapshot)


@dataclass
class MetricsServer:
    """A running exporter; :meth:`close` (or leaving a ``with`` block) stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(snapshot_path: str | Path, port: int = 8000, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve the snapshot's gauges on ``http://addr:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (read it from ``.port``). A command that should block calls
    ``serve_metrics(...).thread.join()``.
    """
    registry = CollectorRegistry()
    registry.register(QualitySnapshotCollector(snapshot_path))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread)

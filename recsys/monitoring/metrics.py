"""Prometheus metrics of the batch stages, pushed to the Pushgateway.

A stage ends with :func:`push_stage_metrics`, which pushes to job ``recsys_batch`` with grouping key
``{stage=...}``: the stage is a label of every series, never part of a metric name.

==================================================  =======  ======================================
metric (all labelled ``stage``)                     type     meaning
==================================================  =======  ======================================
``recsys_stage_duration_seconds``                   gauge    wall time of the last run
``recsys_stage_rows{kind}``                         gauge    rows the last run processed, per kind
``recsys_stage_last_run_timestamp_seconds``         gauge    when the last run ended
``recsys_stage_last_run_success``                   gauge    1 if the last run succeeded, else 0
``recsys_stage_logical_date_timestamp_seconds``     gauge    the last run's ``ds`` (midnight UTC)
``recsys_stage_last_success_timestamp_seconds``     gauge    when the stage last succeeded
==================================================  =======  ======================================

Each push builds a fresh registry and uses ``pushadd`` (POST), which replaces only the metric names it
carries: the last-success gauge is pushed on success only, so a failure push leaves the previous one in
place and freshness alerts measure time since the last *success*.

Counting failures is not done here: the Pushgateway cannot add counters up (a counter would have to be
read back and re-pushed, racing with concurrent pushes). Task failures, retries and durations come from
Airflow's own StatsD metrics (``airflow_ti_finish_total{dag_id, task_id, stage, state}`` and friends,
statsd/statsd_mapping.yml), which count every attempt of every task.

Quality figures (online CTR, drift, the monitor's retrain decision) take the other road: a JSON snapshot
served by :mod:`recsys.monitoring.exporter`. Labels carry stage and kind names only, never a user id.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime

from prometheus_client import CollectorRegistry, pushadd_to_gateway
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

JOB = "recsys_batch"
PUSH_TIMEOUT_SECONDS = 5.0
_INVALID = re.compile(r"[^a-z0-9_]+")


def metric_name_part(text: str) -> str:
    """``text`` as a fragment of a Prometheus metric name: lower case, ``[a-z0-9_]``, no leading digit."""
    part = _INVALID.sub("_", str(text).strip().lower()).strip("_")
    if not part:
        raise ValueError(f"{text!r} gives an empty metric name fragment")
    return f"_{part}" if part[0].isdigit() else part


def logical_date_seconds(ds: str | date) -> float:
    """A logical date (``YYYY-MM-DD...`` or a date) as unix seconds of its midnight UTC."""
    day = ds if isinstance(ds, date) else date.fromisoformat(str(ds)[:10])
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


class _Families(Collector):
    """A collector that yields a fixed list of metric families (one push's worth)."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families

    def describe(self) -> list[Metric]:
        return []


# --------------------------------------------------------------------------------------------------
# Batch stages → Pushgateway
# --------------------------------------------------------------------------------------------------


def build_stage_registry(
    stage: str,
    ds: str | date,
    *,
    success: bool,
    duration_seconds: float,
    rows: Mapping[str, int] | None = None,
    now: float | None = None,
) -> CollectorRegistry:
    """The registry one stage run pushes (pure: no I/O). See the module docstring for the names.

    The ``stage`` label itself comes from the push's grouping key.

    Args:
        now: the run's end as unix seconds (default: the current time).
    """
    now = time.time() if now is None else now
    families: list[Metric] = [
        GaugeMetricFamily(
            "recsys_stage_duration_seconds", "Wall time of the stage's last run.", value=duration_seconds
        ),
        GaugeMetricFamily(
            "recsys_stage_last_run_timestamp_seconds", "When the stage's last run ended.", value=now
        ),
        GaugeMetricFamily(
            "recsys_stage_last_run_success",
            "1 if the stage's last run succeeded, else 0.",
            value=1.0 if success else 0.0,
        ),
        GaugeMetricFamily(
            "recsys_stage_logical_date_timestamp_seconds",
            "Logical date (ds) of the stage's last run, as midnight UTC.",
            value=logical_date_seconds(ds),
        ),
    ]
    if rows:
        gauge = GaugeMetricFamily(
            "recsys_stage_rows", "Rows processed by the stage's last run, by kind.", labels=["kind"]
        )
        for kind, count in sorted(rows.items()):
            gauge.add_metric([metric_name_part(kind)], float(count))
        families.append(gauge)
    if success:
        families.append(
            GaugeMetricFamily(
                "recsys_stage_last_success_timestamp_seconds", "When the stage last succeeded.", value=now
            )
        )
    registry = CollectorRegistry()
    registry.register(_Families(families))
    return registry


def push_stage_metrics(
    stage: str,
    ds: str | date,
    *,
    success: bool,
    duration_seconds: float,
    rows: Mapping[str, int] | None = None,
    pushgateway_url: str | None = None,
    timeout: float = PUSH_TIMEOUT_SECONDS,
) -> bool:
    """Push one stage run's health to the Pushgateway (job ``recsys_batch``, grouping key ``stage``).

    Monitoring never fails the pipeline: with no URL this is a no-op, and an unreachable gateway is
    logged as a warning.

    Returns:
        True if the metrics were pushed; False if no URL is configured or the push failed.
    """
    if not pushgateway_url:
        return False
    stage_label = metric_name_part(stage)
    try:
        registry = build_stage_registry(
            stage_label, ds, success=success, duration_seconds=duration_seconds, rows=rows
        )
        pushadd_to_gateway(
            pushgateway_url, job=JOB, registry=registry, grouping_key={"stage": stage_label}, timeout=timeout
        )
    except (OSError, ValueError) as exc:
        log.warning("could not push %s metrics to %s: %s", stage_label, pushgateway_url, exc)
        return False
    return True

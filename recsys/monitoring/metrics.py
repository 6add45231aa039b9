"""Prometheus metrics of the batch stages, pushed to the Pushgateway.

A stage ends with :func:`push_stage_metrics`, which pushes to job ``recsys_batch`` with grouping key
``{stage=...}``:

==================================================  =======  ======================================
metric                                              type     meaning
==================================================  =======  ======================================
``recsys_stage_duration_seconds``                   gauge    wall time of the last run
``recsys_stage_rows{kind}``                         gauge    rows the last run processed, per kind
``recsys_stage_last_run_timestamp_seconds``         gauge    when the last run ended
``recsys_stage_last_run_success``                   gauge    1 if the last run succeeded, else 0
``recsys_stage_logical_date_timestamp_seconds``     gauge    the last run's ``ds`` (midnight UTC)
``recsys_stage_failures_total``                     counter  failed runs, ever
``recsys_<stage>_last_success_timestamp_seconds``   gauge    when the stage last succeeded
``recsys_<stage>_<extra>``                          gauge    stage-specific figures (``extra``)
==================================================  =======  ======================================

Each push builds a fresh registry and uses ``pushadd`` (POST), which replaces only the metric names it
carries: the last-success gauge is pushed on success only, so a failure push leaves the previous one in
place and freshness alerts measure time since the last *success*. The Pushgateway does not add
counters up, so the failure counter is read back from the gateway and pushed incremented (two
concurrent failures of one stage may count once, harmless for an ``increase() > 0`` alert).

Quality figures (AUC, online CTR, drift) take the other road: a JSON snapshot served by
:mod:`recsys.monitoring.exporter`. Labels carry stage and kind names only, never a user id.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from urllib.request import urlopen

from prometheus_client import CollectorRegistry, pushadd_to_gateway
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
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
    extra: Mapping[str, float] | None = None,
    failures_before: float = 0.0,
    now: float | None = None,
) -> CollectorRegistry:
    """The registry one stage run pushes (pure: no I/O). See the module docstring for the names.

    Args:
        failures_before: the stage's failure count already on the gateway; pushed unchanged on
            success, plus one on failure.
        now: the run's end as unix seconds (default: the current time).
    """
    name = metric_name_part(stage)
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
        CounterMetricFamily(
            "recsys_stage_failures",
            "Failed runs of the stage.",
            value=failures_before + (0.0 if success else 1.0),
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
                f"recsys_{name}_last_success_timestamp_seconds",
                f"When the {name} stage last succeeded.",
                value=now,
            )
        )
    for key, value in sorted((extra or {}).items()):
        if value is not None:
            families.append(
                GaugeMetricFamily(
                    f"recsys_{name}_{metric_name_part(key)}", f"{name} stage: {key}.", value=float(value)
                )
            )
    registry = CollectorRegistry()
    registry.register(_Families(families))
    return registry


def _gateway_base(url: str) -> str:
    url = url.rstrip("/")
    return url if "://" in url else f"http://{url}"


def read_pushed_failures(pushgateway_url: str, stage: str, *, timeout: float = PUSH_TIMEOUT_SECONDS) -> float:
    """The stage's ``recsys_stage_failures_total`` currently on the gateway (0 if never pushed).

    Raises:
        OSError: the gateway cannot be reached.
    """
    with urlopen(f"{_gateway_base(pushgateway_url)}/metrics", timeout=timeout) as resp:
        text = resp.read().decode("utf-8")
    stage_label = metric_name_part(stage)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "recsys_stage_failures_total"
                and sample.labels.get("job") == JOB
                and sample.labels.get("stage") == stage_label
            ):
                return float(sample.value)
    return 0.0


def push_stage_metrics(
    stage: str,
    ds: str | date,
    *,
    success: bool,
    duration_seconds: float,
    rows: dict[str, int] | None = None,
    pushgateway_url: str | None = None,
    extra: dict[str, float] | None = None,
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
        failures_before = read_pushed_failures(pushgateway_url, stage_label, timeout=timeout)
        registry = build_stage_registry(
            stage_label,
            ds,
            success=success,
            duration_seconds=duration_seconds,
            rows=rows,
            extra=extra,
            failures_before=failures_before,
        )
        pushadd_to_gateway(
            pushgateway_url, job=JOB, registry=registry, grouping_key={"stage": stage_label}, timeout=timeout
        )
    except (OSError, ValueError) as exc:
        log.warning("could not push %s metrics to %s: %s", stage_label, pushgateway_url, exc)
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Airflow task instances → Pushgateway (the Airflow plugin's listener)
# --------------------------------------------------------------------------------------------------

TASK_JOB = "recsys_airflow"


def build_task_registry(
    dag_id: str,
    task_id: str,
    *,
    success: bool,
    duration_seconds: float | None,
    failures_before: float = 0.0,
    now: float | None = None,
) -> CollectorRegistry:
    """The registry one Airflow task instance pushes (pure). Labels come from the grouping key.

    ``recsys_airflow_task_duration_seconds``, ``recsys_airflow_task_last_run_success``,
    ``recsys_airflow_task_last_run_timestamp_seconds``, ``recsys_airflow_task_failures_total`` and, on
    success only, ``recsys_airflow_task_last_success_timestamp_seconds``.
    """
    now = time.time() if now is None else now
    families: list[Metric] = [
        GaugeMetricFamily(
            "recsys_airflow_task_last_run_success",
            "1 if the task's last run succeeded, else 0.",
            value=1.0 if success else 0.0,
        ),
        GaugeMetricFamily(
            "recsys_airflow_task_last_run_timestamp_seconds", "When the task's last run ended.", value=now
        ),
        CounterMetricFamily(
            "recsys_airflow_task_failures",
            "Failed runs of the task.",
            value=failures_before + (0.0 if success else 1.0),
        ),
    ]
    if duration_seconds is not None:
        families.append(
            GaugeMetricFamily(
                "recsys_airflow_task_duration_seconds",
                "Wall time of the task's last run.",
                value=float(duration_seconds),
            )
        )
    if success:
        families.append(
            GaugeMetricFamily(
                "recsys_airflow_task_last_success_timestamp_seconds",
                "When the task last succeeded.",
                value=now,
            )
        )
    registry = CollectorRegistry()
    registry.register(_Families(families))
    return registry


def task_grouping_key(dag_id: str, task_id: str) -> dict[str, str]:
    return {"dag_id": str(dag_id), "task_id": str(task_id)}


def read_pushed_task_failures(
    pushgateway_url: str, dag_id: str, task_id: str, *, timeout: float = PUSH_TIMEOUT_SECONDS
) -> float:
    """``recsys_airflow_task_failures_total`` of the task on the gateway (0 if never pushed)."""
    with urlopen(f"{_gateway_base(pushgateway_url)}/metrics", timeout=timeout) as resp:
        text = resp.read().decode("utf-8")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "recsys_airflow_task_failures_total"
                and sample.labels.get("job") == TASK_JOB
                and sample.labels.get("dag_id") == dag_id
                and sample.labels.get("task_id") == task_id
            ):
                return float(sample.value)
    return 0.0


def push_task_metrics(
    dag_id: str,
    task_id: str,
    *,
    success: bool,
    duration_seconds: float | None,
    pushgateway_url: str | None,
    timeout: float = PUSH_TIMEOUT_SECONDS,
) -> bool:
    """Push one task instance's outcome (job ``recsys_airflow``, grouping key ``dag_id``, ``task_id``).

    A no-op without a URL; an unreachable gateway is a warning. Returns True if pushed.
    """
    if not pushgateway_url:
        return False
    try:
        # pushadd replaces the counter family: read it back and push it unchanged (success) or plus one
        failures_before = read_pushed_task_failures(pushgateway_url, dag_id, task_id, timeout=timeout)
        registry = build_task_registry(
            dag_id,
            task_id,
            success=success,
            duration_seconds=duration_seconds,
            failures_before=failures_before,
        )
        pushadd_to_gateway(
            pushgateway_url,
            job=TASK_JOB,
            registry=registry,
            grouping_key=task_grouping_key(dag_id, task_id),
            timeout=timeout,
        )
    except (OSError, ValueError) as exc:
        log.warning("could not push task metrics of %s.%s to %s: %s", dag_id, task_id, pushgateway_url, exc)
        return False
    return True

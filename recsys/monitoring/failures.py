"""A task failure, told once: one log line an on-call engineer can act on, and a Pushgateway gauge.

Airflow calls :func:`record_task_failure` from every recsys task's ``on_failure_callback`` (see
``dags/recsys_common.py``), after the last try has failed. Counting failures is Airflow's job (its StatsD
``ti_failures`` / ``ti.finish`` metrics); this records *when* each task last failed and why, so a
dashboard can show the failing task next to its log. Monitoring never fails the pipeline: a Pushgateway
that cannot be reached is a warning.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

log = logging.getLogger(__name__)

JOB = "recsys_task_failure"
TIMEOUT_SECONDS = 5.0


def failure_line(
    dag_id: str, task_id: str, run_id: str | None, try_number: int | None, error: BaseException | None
) -> str:
    """``recsys_daily.ingest.validate failed (run ..., try 3): BatchValidationError: ...`` on one line."""
    what = f"{type(error).__name__}: {error}" if error is not None else "no exception recorded"
    what = " ".join(what.split())[:500]
    where = ", ".join(
        p for p in (f"run {run_id}" if run_id else "", f"try {try_number}" if try_number else "") if p
    )
    return f"{dag_id}.{task_id} failed" + (f" ({where})" if where else "") + f": {what}"


def failure_registry(dag_id: str, task_id: str, now: float | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge(
        "recsys_task_last_failure_timestamp_seconds",
        "When the task last failed after its retries (Unix time).",
        ["dag_id", "task_id"],
        registry=registry,
    )
    gauge.labels(dag_id=dag_id, task_id=task_id).set(time.time() if now is None else now)
    return registry


def record_task_failure(
    dag_id: str,
    task_id: str,
    run_id: str | None = None,
    try_number: int | None = None,
    error: BaseException | None = None,
    log_url: str | None = None,
    pushgateway_url: str | None = None,
) -> str:
    """Log the failure (with the task log's URL) and push its timestamp when a Pushgateway is configured.

    ``pushgateway_url`` defaults to the configured ``monitoring.pushgateway_url``. Returns the log line.
    """
    line = failure_line(dag_id, task_id, run_id, try_number, error)
    log.error(
        "%s%s", line, f" | log: {log_url}" if log_url else "", extra={"dag_id": dag_id, "task_id": task_id}
    )
    if pushgateway_url is None:
        try:
            from recsys.config import load_settings

            pushgateway_url = load_settings().monitoring.pushgateway_url
        except Exception as exc:  # a broken configuration may be what failed the task
            log.warning("no Pushgateway for the failure record: settings did not load (%s)", exc)
    if pushgateway_url:
        try:
            pushadd_to_gateway(
                pushgateway_url,
                job=JOB,
                registry=failure_registry(dag_id, task_id),
                grouping_key={"dag_id": dag_id, "task_id": task_id},
                timeout=TIMEOUT_SECONDS,
            )
        except (OSError, ValueError) as exc:
            log.warning(
                "could not push the failure of %s.%s to %s: %s", dag_id, task_id, pushgateway_url, exc
            )
    return line

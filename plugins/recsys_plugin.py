"""recsys' Airflow plugin: an "MLflow run" link on task instances, and task metrics for Prometheus.

* ``MLflowRunLink`` (a global operator extra link): on any task instance whose XCom return value carries
  a ``run_id`` (``train`` and ``evaluate`` in ``recsys_daily`` and ``recsys_retrain``), a button that opens
  that MLflow run in the MLflow UI at ``RECSYS_MLFLOW_UI_URL`` (default ``http://localhost:5000``). Other
  task instances get an empty link, which the UI shows disabled.
* ``TaskMetricsListener``: on every task instance success or failure, pushes
  ``recsys_airflow_task_*`` metrics (duration, last outcome, failures) to the Pushgateway named by
  ``RECSYS_MONITORING__PUSHGATEWAY_URL`` (job ``recsys_airflow``, grouping key ``dag_id``/``task_id``; no
  user data). Without a Pushgateway it does nothing. A push never fails a task.

The module imports fast: Airflow's plugin base, the link base and the listener marker only; pandas,
TensorFlow, MLflow and even prometheus_client are imported only when a link or metric is built.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

DEFAULT_MLFLOW_UI_URL = "http://localhost:5000"


# ------------------------------------------------------------------------------------- the MLflow link
def _settings(env: dict[str, str] | None):
    """recsys' settings, from this process's environment or the given one (read at call time)."""
    from recsys.config import load_settings, settings_from_env

    return load_settings() if env is None else settings_from_env(env)


def mlflow_ui_url(env: dict[str, str] | None = None) -> str:
    return (_settings(env).mlflow_ui_url or DEFAULT_MLFLOW_UI_URL).rstrip("/")


def run_id_of(value: Any) -> str | None:
    """The MLflow run id in a task's return value (a dict with ``run_id``), else None."""
    if isinstance(value, dict):
        run_id = value.get("run_id")
        if isinstance(run_id, str) and run_id.strip():
            return run_id.strip()
    return None


def mlflow_run_url(value: Any, base_url: str | None = None, experiment_id: str | None = None) -> str:
    """The MLflow UI URL of the run named by a task's return value; ``""`` when it names none."""
    run_id = run_id_of(value)
    if not run_id:
        return ""
    base = (base_url or mlflow_ui_url()).rstrip("/")
    rid = quote(run_id, safe="")
    if experiment_id:
        return f"{base}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{rid}"
    return f"{base}/#/runs/{rid}"  # the UI redirects to the run's experiment page


def _return_value(ti_key) -> Any:
    """The task instance's XCom ``return_value``, read from the metadata DB (the API server's side)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value",
                run_id=ti_key.run_id,
                dag_ids=ti_key.dag_id,
                task_ids=ti_key.task_id,
                map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).first()
    if not row:
        return None
    value = XComModel.deserialize_value(row)  # JSON text or an already-decoded value
    if isinstance(value, str):
        import json

        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class MLflowRunLink(BaseOperatorLink):
    """Opens the MLflow run of a task instance that returned one."""

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        try:
            return mlflow_run_url(_return_value(ti_key))
        except Exception as exc:  # a link must never break the UI
            log.debug("no MLflow link for %s: %s", ti_key, exc)
            return ""


# ------------------------------------------------------------------------------------ the task metrics
def _seconds_between(start: Any, end: Any) -> float | None:
    if not isinstance(start, datetime):
        return None
    if not isinstance(end, datetime):
        end = datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return max(0.0, (end - start).total_seconds())


def task_outcome(task_instance: Any, success: bool) -> dict[str, Any]:
    """What the listener records about a task instance: ids, outcome and duration (no conf, no data)."""
    duration = getattr(task_instance, "duration", None)
    if not isinstance(duration, int | float):
        duration = _seconds_between(
            getattr(task_instance, "start_date", None), getattr(task_instance, "end_date", None)
        )
    return {
        "dag_id": str(getattr(task_instance, "dag_id", "unknown")),
        "task_id": str(getattr(task_instance, "task_id", "unknown")),
        "success": bool(success),
        "duration_seconds": None if duration is None else round(float(duration), 3),
    }


def pushgateway_url(env: dict[str, str] | None = None) -> str | None:
    return _settings(env).monitoring.pushgateway_url or None


def record_task(
    task_instance: Any, success: bool, env: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """Push the task's outcome when a Pushgateway is configured; returns what was pushed (None: no-op)."""
    url = pushgateway_url(env)
    if not url:
        return None
    outcome = task_outcome(task_instance, success)
    try:
        from recsys.monitoring.metrics import push_task_metrics

        push_task_metrics(
            outcome["dag_id"],
            outcome["task_id"],
            success=success,
            duration_seconds=outcome["duration_seconds"],
            pushgateway_url=url,
        )
    except Exception as exc:  # monitoring never fails a task
        log.warning("recsys plugin: could not push task metrics: %s", exc)
    return outcome


class TaskMetricsListener:
    """Airflow listener (pluggy hooks) recording task outcomes as Prometheus metrics."""

    @hookimpl
    def on_task_instance_success(self, previous_state, task_instance):
        record_task(task_instance, True)

    @hookimpl
    def on_task_instance_failed(self, previous_state, task_instance, error):
        record_task(task_instance, False)


task_metrics_listener = TaskMetricsListener()


class RecsysPlugin(AirflowPlugin):
    name = "recsys"
    global_operator_extra_links = [MLflowRunLink()]
    listeners = [task_metrics_listener]

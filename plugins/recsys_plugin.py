"""recsys' Airflow plugin: an "MLflow run" link on task instances.

``MLflowRunLink`` (a global operator extra link): on any task instance whose XCom return value carries a
``run_id`` (``train`` and ``evaluate`` in ``recsys_daily`` and ``recsys_retrain``), a button that opens
that MLflow run in the MLflow UI at the settings' ``mlflow_ui_url`` (``RECSYS_MLFLOW_UI_URL``, default
``http://localhost:5000``). Other task instances get an empty link, which the UI shows disabled.

Task health (successes, failures, retries, durations per DAG and task) is not exported from here: it
comes from Airflow's own StatsD metrics through statsd-exporter (statsd/statsd_mapping.yml), which see
every attempt, including a task killed before any listener of ours could run.

The module imports fast: Airflow's plugin base and the link base only; MLflow and pandas are never
imported.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- the MLflow link
def mlflow_ui_url() -> str:
    """The MLflow UI's base URL: the settings' ``mlflow_ui_url`` (``RECSYS_MLFLOW_UI_URL``)."""
    from recsys.config import load_settings  # pydantic only: nothing heavy

    return load_settings().mlflow_ui_url.rstrip("/")


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


class RecsysPlugin(AirflowPlugin):
    name = "recsys"
    global_operator_extra_links = [MLflowRunLink()]

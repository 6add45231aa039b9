"""
# recsys_retrain

Retrains on a fresh window, evaluates against the champion, promotes only if better, and republishes.

No schedule: fired by `recsys_monitor` when online metrics degrade (the reasons are in the run's conf), by
hand (`airflow dags trigger recsys_retrain --conf '{"ds": "2026-01-05", "reasons": ["manual"]}'`), or by
an Alertmanager webhook through the Airflow REST API (`POST /api/v2/dags/recsys_retrain/dagRuns`).
Conf `ds` names the day whose data to train on (default: the run's logical date).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

RECOMMENDATIONS = Asset("recsys://recommendations")


def _ds(ds, dag_run):
    return (dag_run.conf or {}).get("ds") or ds


@dag(
    dag_id="recsys_retrain",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "recsys", "retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["recsys", "training"],
    doc_md=__doc__,
)
def recsys_retrain():
    @task(doc_md="Examples and transform over the freshest window.")
    def features(ds: str | None = None, dag_run=None):
        from recsys.stages import features

        return features(_ds(ds, dag_run))

    @task(doc_md="Train a challenger; the trigger's reasons are recorded as run tags.")
    def train(ds: str | None = None, dag_run=None):
        from recsys.stages import train

        return train(_ds(ds, dag_run), trigger=str((dag_run.conf or {}).get("trigger", "manual")))

    @task(doc_md="Challenger vs champion vs baselines; the gate's decision.")
    def evaluate(result: dict, ds: str | None = None, dag_run=None):
        from recsys.stages import evaluate

        return evaluate(_ds(ds, dag_run), run_id=result["run_id"], model_uri=result["model_uri"])

    @task(doc_md="Register; promote to champion only if blessed.")
    def register(decision: dict, ds: str | None = None, dag_run=None):
        from recsys.stages import register

        return register(
            _ds(ds, dag_run), run_id=decision["run_id"], blessed=decision["blessed"], model_uri=decision["model_uri"]
        )

    @task(doc_md="Rank candidates with the (possibly new) champion.")
    def recommend(ds: str | None = None, dag_run=None):
        from recsys.stages import recommend

        return recommend(_ds(ds, dag_run))

    @task(outlets=[RECOMMENDATIONS], doc_md="Republish atomically.")
    def publish(ds: str | None = None, dag_run=None):
        from recsys.stages import publish

        return publish(_ds(ds, dag_run))

    trained = train()
    features() >> trained
    register(evaluate(trained)) >> recommend() >> publish()


recsys_retrain()

"""
# recsys_retrain

Retrains on a fresh window, evaluates against the champion, promotes only if better, and republishes.

No schedule: fired by `recsys_monitor` when online metrics degrade, by hand
(`airflow dags trigger recsys_retrain --conf '{"ds": "2026-01-05", "reasons": ["manual"]}'`), or by an
Alertmanager webhook through the Airflow REST API (`POST /api/v2/dags/recsys_retrain/dagRuns`).

Conf (all optional):

| key | meaning |
| --- | --- |
| `ds` | the day whose data to train on (default: the run's logical date) |
| `trigger` | who asked (`monitor`, `alert`, `manual`); an MLflow tag of the run |
| `reasons` | list of reasons (or one string); MLflow tag `trigger.reasons` |
| `window_days` | the fresh window: days of data to train on (default: the configured window) |

The monitor sets `window_days` to the number of degraded days after a CTR drop, so the challenger learns
the world after the drift. The features of `ds` are rebuilt with that window (replacing the daily run's),
the challenger must pass the same gate as any model, and `recommend`/`publish` republish the day's list
(a new version of the same day), which users see from the next day on.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

RECOMMENDATIONS = Asset("recsys://recommendations")


def _ds(ds, dag_run):
    return (dag_run.conf or {}).get("ds") or ds


def _settings(dag_run):
    from recsys.monitoring.retrain import retrain_settings

    return retrain_settings(dag_run.conf)


@dag(
    dag_id="recsys_retrain",
    schedule=None,
    start_date=pendulum.datetime(1990, 1, 1, tz="UTC"),  # any logical date; datasets go back to the 1990s
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "recsys", "retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["recsys", "training"],
    doc_md=__doc__,
)
def recsys_retrain():
    @task(doc_md="Examples and transform over the fresh window (`window_days` from the conf).")
    def features(ds: str | None = None, dag_run=None):
        from recsys.stages import features

        return features(_ds(ds, dag_run), settings=_settings(dag_run))

    @task(doc_md="Train a challenger; the trigger and its reasons are recorded as MLflow run tags.")
    def train(ds: str | None = None, dag_run=None):
        from recsys.monitoring.retrain import tag_retrain_run, trigger_label
        from recsys.stages import train

        settings = _settings(dag_run)
        result = train(_ds(ds, dag_run), settings=settings, trigger=trigger_label(dag_run.conf))
        tag_retrain_run(result["run_id"], dag_run.conf, settings)
        return result

    @task(
        doc_md="Challenger vs champion vs baselines on the held-out part of the window; the gate's decision."
    )
    def evaluate(result: dict, ds: str | None = None, dag_run=None):
        from recsys.stages import evaluate

        return evaluate(
            _ds(ds, dag_run),
            settings=_settings(dag_run),
            run_id=result["run_id"],
            model_uri=result["model_uri"],
        )

    @task(doc_md="Register; promote to champion only if blessed.")
    def register(decision: dict, ds: str | None = None, dag_run=None):
        from recsys.stages import register

        return register(
            _ds(ds, dag_run),
            settings=_settings(dag_run),
            run_id=decision["run_id"],
            blessed=decision["blessed"],
            model_uri=decision["model_uri"],
        )

    @task(doc_md="Rank candidates with the (possibly new) champion.")
    def recommend(ds: str | None = None, dag_run=None):
        from recsys.stages import recommend

        return recommend(_ds(ds, dag_run))

    @task(outlets=[RECOMMENDATIONS], doc_md="Republish atomically (a new version of the day).")
    def publish(ds: str | None = None, dag_run=None):
        from recsys.stages import publish

        return publish(_ds(ds, dag_run))

    @task(
        doc_md="Two-tower candidate model on the fresh window; recall gate; paired with the ranker on register."
    )
    def train_retrieval(ds: str | None = None, dag_run=None):
        from recsys.monitoring.retrain import trigger_label
        from recsys.stages import train_retrieval

        return train_retrieval(
            _ds(ds, dag_run), settings=_settings(dag_run), trigger=trigger_label(dag_run.conf)
        )

    f = features()
    trained, retrieval = train(), train_retrieval()
    f >> [retrieval, trained]
    retrieval >> register(evaluate(trained)) >> recommend() >> publish()


recsys_retrain()

"""
# recsys_retrain

Retrains on a fresh window, evaluates against the champion, promotes only if better, and republishes.

No schedule: fired by `recsys_monitor` when online metrics degrade, by hand
(`airflow dags trigger recsys_retrain --conf '{"ds": "2026-01-05", "reasons": ["manual"]}'`), or by an
Alertmanager webhook through the Airflow REST API (`POST /api/v2/dags/recsys_retrain/dagRuns`).

**Params** (the trigger form; a conf with these keys is validated against them, all optional):

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
from airflow.sdk import Param, dag, task
from recsys_common import RECOMMENDATIONS, call, default_args


def _ds(ds, params):
    return params.get("ds") or ds


def _settings(params):
    from recsys.monitoring.retrain import retrain_settings

    return retrain_settings(params)


@dag(
    dag_id="recsys_retrain",
    schedule=None,
    start_date=pendulum.datetime(1990, 1, 1, tz="UTC"),  # any logical date; datasets go back to the 1990s
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=1, retry_delay=timedelta(minutes=1)),
    params={
        "ds": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day",
            description="YYYY-MM-DD: the day whose data to train on; empty: the run's logical date.",
        ),
        "trigger": Param(
            "manual",
            type="string",
            enum=["manual", "monitor", "alert"],
            title="Trigger",
            description="Who asked for the retrain (MLflow tag `trigger`).",
        ),
        "reasons": Param(
            [],
            type=["array", "string"],
            items={"type": "string"},
            title="Reasons",
            description="Why (MLflow tag `trigger.reasons`): a list of strings, or one string.",
        ),
        "window_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Window (days)",
            description="Days of data to train on; empty: the configured window.",
        ),
    },
    tags=["recsys", "training"],
    doc_md=__doc__,
)
def recsys_retrain():
    @task(doc_md="Examples and transform over the fresh window (`window_days` from the conf).")
    def features(ds: str | None = None, params=None):
        return call("features", _ds(ds, params), settings=_settings(params))

    @task(
        execution_timeout=timedelta(hours=4),
        doc_md="Train a challenger; the trigger and its reasons are recorded as MLflow run tags.",
    )
    def train(ds: str | None = None, params=None):
        from recsys.monitoring.retrain import tag_retrain_run, trigger_label

        settings = _settings(params)
        result = call("train", _ds(ds, params), settings=settings, trigger=trigger_label(params))
        tag_retrain_run(result["run_id"], params, settings)
        return result

    @task(
        doc_md="Challenger vs champion vs baselines on the held-out part of the window; the gate's decision."
    )
    def evaluate(result: dict, ds: str | None = None, params=None):
        return call(
            "evaluate",
            _ds(ds, params),
            settings=_settings(params),
            run_id=result["run_id"],
            model_uri=result["model_uri"],
        )

    @task(doc_md="Register; promote to champion only if blessed.")
    def register(decision: dict, ds: str | None = None, params=None):
        return call(
            "register",
            _ds(ds, params),
            settings=_settings(params),
            run_id=decision["run_id"],
            blessed=decision["blessed"],
            model_uri=decision["model_uri"],
        )

    @task(doc_md="Rank candidates with the (possibly new) champion.")
    def recommend(ds: str | None = None, params=None):
        return call("recommend", _ds(ds, params))

    @task(outlets=[RECOMMENDATIONS], doc_md="Republish atomically (a new version of the day).")
    def publish(ds: str | None = None, params=None):
        return call("publish", _ds(ds, params))

    @task(
        doc_md="Two-tower candidate model on the fresh window; recall gate; paired with the ranker on register."
    )
    def train_retrieval(ds: str | None = None, params=None):
        from recsys.monitoring.retrain import trigger_label

        return call(
            "train_retrieval", _ds(ds, params), settings=_settings(params), trigger=trigger_label(params)
        )

    f = features()
    trained, retrieval = train(), train_retrieval()
    f >> [retrieval, trained]
    retrieval >> register(evaluate(trained)) >> recommend() >> publish()


recsys_retrain()

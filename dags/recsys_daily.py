"""
# recsys_daily

The daily batch: **ingest** the day's interactions, **model** (features; train, evaluate and register when
due), **serve** (rank candidates for every active user and publish the top-N table atomically).

| phase | task | what it does |
| --- | --- | --- |
| ingest | `land` | brings the day's raw events into landing (the simulator in the demo, or a dataset importer) |
| ingest | `collect` | landing -> encrypted raw zone; landing is then encrypted in place |
| ingest | `validate` | Great Expectations suite; bad rows to quarantine with the rule, bad batches fail the run |
| ingest | `anonymize` | keyed HMAC pseudonyms, e-mail and IP dropped, region coarsened -> clean zone |
| model | `features` | examples over the trailing window, time split, transform fitted on train only |
| model | `train_due` | skips training unless due (schedule), forced (`{"force_train": true}`) or no champion |
| model | `train` / `evaluate` / `register` | MMoE model in MLflow; gate vs champion and baselines; alias `champion` |
| model | `train_retrieval` | two-tower candidate model + item index; recall gate; registered before the ranker it pairs with |
| serve | `recommend` / `publish` | champion scores candidates; a new table version goes live in one transaction |

Every task reads and writes the partition of its own logical date and can be rerun. Each task body is
one call into `recsys`.

**Params** (the trigger form): `force_train` (boolean, default false) trains whatever the schedule says.

**Failures:** a batch that fails its data-quality checks, a failed publish check or a missing key fails
the task at once (no retry would heal it); other errors are retried with backoff. Every task has a time
limit, and a failure is logged in one line and recorded for the dashboards (`recsys.monitoring.failures`).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task, task_group
from recsys_common import CLEAN_INTERACTIONS, RECOMMENDATIONS, call, default_args


@dag(
    dag_id="recsys_daily",
    schedule="@daily",
    start_date=pendulum.datetime(1990, 1, 1, tz="UTC"),  # any logical date; datasets go back to the 1990s
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "force_train": Param(
            False,
            type="boolean",
            title="Force training",
            description="Train, evaluate and register today whatever the training schedule says.",
        )
    },
    tags=["recsys", "daily"],
    doc_md=__doc__,
)
def recsys_daily():
    @task_group(group_id="ingest")
    def ingest():
        @task(doc_md="Raw events of the day into landing (simulator or dataset importer).")
        def land(ds: str | None = None):
            return call("land", ds)

        @task(doc_md="Landing -> encrypted raw zone.")
        def collect(ds: str | None = None):
            return call("collect", ds)

        @task(doc_md="Great Expectations: quarantine bad rows, fail bad batches.")
        def validate(ds: str | None = None):
            return call("validate", ds)

        @task(outlets=[CLEAN_INTERACTIONS], doc_md="Keyed pseudonyms and minimization -> clean zone.")
        def anonymize(ds: str | None = None):
            return call("anonymize", ds)

        land() >> collect() >> validate() >> anonymize()

    @task_group(group_id="model")
    def model():
        @task(doc_md="Examples, time split and fitted transform for the day.")
        def features(ds: str | None = None):
            return call("features", ds)

        @task.short_circuit(ignore_downstream_trigger_rules=False, doc_md="Is training due today?")
        def train_due(ds: str | None = None, params=None):
            return call("should_train", ds, force=bool(params["force_train"]))["train"]

        @task(
            execution_timeout=timedelta(hours=4),
            doc_md="Fit the multi-task model; everything logged to MLflow.",
        )
        def train(ds: str | None = None):
            return call("train", ds, trigger="schedule")

        @task(doc_md="Candidate vs champion vs baselines on the held-out day; the gate's decision.")
        def evaluate(result: dict, ds: str | None = None):
            return call("evaluate", ds, run_id=result["run_id"], model_uri=result["model_uri"])

        @task(doc_md="Register the model; promote to `champion` only if blessed.")
        def register(decision: dict, ds: str | None = None):
            return call(
                "register",
                ds,
                run_id=decision["run_id"],
                blessed=decision["blessed"],
                model_uri=decision["model_uri"],
            )

        @task(
            doc_md="Two-tower candidate model: fit, recall gate, its own registry entry (paired on register)."
        )
        def train_retrieval(ds: str | None = None):
            return call("train_retrieval", ds, trigger="schedule")

        trained, retrieval = train(), train_retrieval()
        features() >> train_due() >> [retrieval, trained]
        retrieval >> register(evaluate(trained))

    @task_group(group_id="serve")
    def serve():
        @task(trigger_rule="none_failed", doc_md="Rank candidates for every active user with the champion.")
        def recommend(ds: str | None = None):
            return call("recommend", ds)

        @task(outlets=[RECOMMENDATIONS], doc_md="Publish a new table version atomically.")
        def publish(ds: str | None = None):
            return call("publish", ds)

        recommend() >> publish()

    ingest() >> model() >> serve()


recsys_daily()

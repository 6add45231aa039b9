"""
# recsys_monitor

Watches what users did with the published recommendations and decides whether the model needs retraining.

Runs whenever `recsys_daily` has anonymized a new day of interactions (Asset `recsys://clean/interactions`).

1. `monitor` computes the day's online metrics (click-through rate of recommended vs exploration
   impressions, watch time per impression, like rate, coverage, cold-start share), drift (population
   stability index of device, category and hour against the training window), writes the quality snapshot
   that `recsys metrics serve` exports to Prometheus, and applies the retrain rules (relative CTR drop vs a
   trailing baseline, drift above threshold, model age) with a cooldown so one degradation fires one retrain.
2. `retrain_needed` stops here unless the rules fired.
3. `trigger_retrain` starts `recsys_retrain` with the reasons in the run's conf.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, dag, task

CLEAN_INTERACTIONS = Asset("recsys://clean/interactions")


@dag(
    dag_id="recsys_monitor",
    schedule=[CLEAN_INTERACTIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "recsys", "retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["recsys", "monitoring"],
    doc_md=__doc__,
)
def recsys_monitor():
    @task(doc_md="Online metrics, drift and the retrain decision for the day.")
    def monitor(ds: str | None = None, dag_run=None):
        from recsys.stages import monitor

        return monitor((dag_run.conf or {}).get("ds", ds))

    @task.short_circuit(doc_md="Continue only if the retrain rules fired.")
    def retrain_needed(decision: dict):
        return decision["retrain"]

    decision = monitor()
    gate = retrain_needed(decision)
    trigger = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="recsys_retrain",
        conf={"reasons": "{{ ti.xcom_pull(task_ids='monitor')['reasons'] }}",
              "ds": "{{ dag_run.conf.get('ds', ds) }}", "trigger": "monitor"},
        wait_for_completion=False,
        doc_md="Start recsys_retrain with the reasons in its conf.",
    )
    gate >> trigger


recsys_monitor()
